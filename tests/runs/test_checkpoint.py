"""Checkpoint / resume: atomic files, bit-identical resume (also after SIGKILL of a subprocess),
detection of corrupt / truncated / foreign checkpoints, and the output-directory guard."""
import dataclasses
import io
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nc_jax.runs import _checkpoint as ck
from nc_jax import _files as nc_files
from nc_jax.runs import (CheckpointError, CheckpointMismatchError, OutDirError, atomic_write_json,
                         atomic_write_text, checkpoint_epoch, load_checkpoint, prepare_out_dir,
                         read_checkpoint, run_sweep, resumable_train_runs,
                         run_identity, save_checkpoint)
from nc_jax.config import ConfigError, OptimConfig
from nc_jax.models import MLP
from nc_jax.training import SweepState, init_states, run_grid
from nc_jax.runs import run_sweep
from tests.helpers import tiny_config, tiny_data, tiny_task

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def resume_config():
    """6 epochs recorded every 2 (so 3 chunks), checkpoint after every chunk; 3 runs."""
    return tiny_config(optim=OptimConfig(lr=0.05, epochs=6, batch_size=32),
                       weight_decays=(1e-4, 5e-3, 1e-2), seeds=(0,), record_every=2,
                       checkpoint_every=2)


def result_arrays(res) -> dict:
    """Every number of a SweepResult that a resume must reproduce, as flat named arrays."""
    out = {"final_loss": res.final_loss, "final_accuracy": res.final_accuracy,
           "diverged": res.diverged, "record_epochs": res.record_epochs}
    out.update({f"history/{k}": v for k, v in res.history.items()})
    out.update({f"records/{k}": v for k, v in res.records.items()})
    for path, leaf in jax.tree_util.tree_flatten_with_path(res.states)[0]:
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out[f"state{jax.tree_util.keystr(path)}"] = np.asarray(leaf)
    return {k: np.asarray(v) for k, v in out.items()}


def assert_bit_identical(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def reference():
    """An uninterrupted, never-checkpointed run of `resume_config` (plain sweep.run_sweep)."""
    cfg = resume_config()
    return result_arrays(run_sweep(cfg, tiny_data(cfg), progress=False))


class _Stop(Exception):
    pass


def test_interrupted_then_resumed_in_process_is_bit_identical(tmp_path, reference):
    cfg = resume_config()
    data = tiny_data(cfg)
    seen = []

    def stop_at_4(epoch, path):
        seen.append(epoch)
        if epoch == 4:
            raise _Stop

    with pytest.raises(_Stop):
        run_sweep(cfg, data, out_dir=tmp_path, progress=False, on_checkpoint=stop_at_4)
    assert seen == [2, 4]
    assert checkpoint_epoch(tmp_path / "checkpoint.npz") == 4
    resumed = run_sweep(cfg, data, out_dir=tmp_path, progress=False, on_checkpoint=stop_at_4)
    assert seen == [2, 4, 6]  # continued after epoch 4, did not retrain from 0
    assert_bit_identical(result_arrays(resumed), reference)
    # re-running a finished sweep restores its final state without training
    again = run_sweep(cfg, data, out_dir=tmp_path, progress=False, on_checkpoint=stop_at_4)
    assert seen == [2, 4, 6]
    assert_bit_identical(result_arrays(again), reference)
    # no temp file of the atomic writes is left behind
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz"]


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    from nc_jax import run_sweep
    from tests.helpers import tiny_data
    from tests.runs.test_checkpoint import resume_config, result_arrays
    out_dir, result = sys.argv[1], sys.argv[2]
    cfg = resume_config()
    def pause(epoch, path):
        if epoch == 2:  # leave the test time to SIGKILL us between two checkpoints
            time.sleep(1.5)
    res = run_sweep(cfg, tiny_data(cfg), out_dir=out_dir, progress=False, on_checkpoint=pause)
    np.savez(result, **result_arrays(res))
""")


def _env():
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)


def test_sigkill_then_same_command_resumes_bit_identically(tmp_path, reference):
    out_dir, result = tmp_path / "run", tmp_path / "result.npz"
    cmd = [sys.executable, "-c", KILL_SCRIPT, str(out_dir), str(result)]
    ckpt = out_dir / "checkpoint.npz"
    proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not ckpt.exists():
            assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not result.exists()
    killed_at = checkpoint_epoch(ckpt)  # the checkpoint the kill left behind is intact
    assert killed_at is not None and killed_at < 6
    done = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(result) as f:
        resumed = {k: f[k] for k in f.files}
    # the reference ran in this (pytest) process: also checks cross-process determinism
    assert_bit_identical(resumed, reference)


# ---------------------------------------------------------------------------------------------
# checkpoint files: format, corruption, mismatch
# ---------------------------------------------------------------------------------------------

def _small_setup(cfg=None):
    cfg = cfg or resume_config()
    data = tiny_data(cfg)
    model = tiny_task(cfg, data)
    tx = model.tx
    wd, sd = run_grid(cfg.weight_decays, cfg.seeds)
    lr = np.full(len(wd), cfg.optim.lr, np.float32)
    ident = run_identity(cfg, data, weight_decays=wd, seeds=sd, learning_rates=lr, chunk_epochs=2)
    return cfg, data, model, tx, wd, sd, lr, ident


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A valid checkpoint of freshly initialised states with a made-up history (no training)."""
    cfg, data, model, tx, wd, sd, lr, ident = _small_setup()
    states = init_states(model, sd, lr, wd, data.sample_shape)
    k = len(wd)
    snap = SweepState(states=states, epoch=2,
                      history={"loss": np.arange(2 * k, dtype=np.float32).reshape(k, 2)},
                      records={"accuracy": np.full((k, 1), 0.5, np.float32)},
                      record_epochs=np.array([2]), runs_per_device=0)
    path = tmp_path_factory.mktemp("ck") / "checkpoint.npz"
    save_checkpoint(path, snap, ident)
    return path, states, snap, ident, (cfg, data, model, tx, wd, sd, lr)


def _copy(src, dst, data: bytes = None):
    dst.write_bytes(src.read_bytes() if data is None else data)
    return dst


def test_save_load_round_trip_restores_every_leaf(saved):
    path, states, snap, ident, _ = saved
    back = load_checkpoint(path, states, ident)
    assert back.epoch == 2
    np.testing.assert_array_equal(back.history["loss"], snap.history["loss"])
    np.testing.assert_array_equal(back.records["accuracy"], snap.records["accuracy"])
    np.testing.assert_array_equal(back.record_epochs, [2])
    assert jax.tree.structure(back.states) == jax.tree.structure(states)
    for a, b in zip(jax.tree.leaves(states), jax.tree.leaves(back.states)):
        assert a.dtype == b.dtype and a.shape == b.shape
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):  # typed keys come back as typed keys
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # optimizer hyperparameters (per-run LR and WD) are part of the state
    np.testing.assert_array_equal(back.states.opt_state.hyperparams["weight_decay"],
                                  np.asarray(states.opt_state.hyperparams["weight_decay"]))
    # the file is a plain, pickle-free .npz
    with np.load(path, allow_pickle=False) as f:
        assert "__sha256__" in f.files and "__meta__" in f.files


def test_truncated_checkpoint_is_detected(saved, tmp_path):
    path = saved[0]
    raw = path.read_bytes()
    for n in (0, 10, len(raw) // 2, len(raw) - 1):
        bad = _copy(path, tmp_path / f"trunc{n}.npz", raw[:n])
        with pytest.raises(CheckpointError, match="corrupt or truncated") as e:
            load_checkpoint(bad, saved[1], saved[3])
        assert str(bad) in str(e.value)


def test_flipped_bytes_are_detected(saved, tmp_path):
    path = saved[0]
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:  # flip a byte inside the first state leaf's data
        info = z.getinfo("state/0000.npy")
    # local header: 30 fixed bytes, the name, then an extra field whose length sits at byte 28
    extra = int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    pos = info.header_offset + 30 + len(info.filename) + extra + info.file_size - 3
    raw[pos] ^= 0xFF
    bad = _copy(path, tmp_path / "flipped.npz", bytes(raw))
    with pytest.raises(CheckpointError, match="flipped.npz"):
        read_checkpoint(bad)


def test_checksum_mismatch_of_a_well_formed_file_is_detected(saved, tmp_path):
    # a re-packed file with valid zip CRCs but one changed number: only the SHA-256 sees it
    with np.load(saved[0], allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["history/loss"] = arrays["history/loss"] + 1
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    bad = _copy(saved[0], tmp_path / "tampered.npz", buf.getvalue())
    with pytest.raises(CheckpointError, match="checksum does not match"):
        read_checkpoint(bad)


def test_foreign_npz_and_missing_file(tmp_path, saved):
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(CheckpointError, match="not an nc-jax checkpoint"):
        read_checkpoint(other)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.npz", saved[1], saved[3])


def test_config_mismatch_names_the_fields(saved):
    path, states, _, ident, (cfg, data, *_rest) = saved
    other_cfg = cfg.replace(optim=OptimConfig(lr=0.05, epochs=8, batch_size=32))
    wd, sd = run_grid(other_cfg.weight_decays, other_cfg.seeds)
    lr = np.full(len(wd), 0.05, np.float32)
    lr[1] = 0.1
    other = run_identity(other_cfg, data, weight_decays=wd, seeds=sd, learning_rates=lr,
                         chunk_epochs=2)
    with pytest.raises(CheckpointMismatchError) as e:
        load_checkpoint(path, states, other)
    msg = str(e.value)
    assert "optim.epochs: checkpoint 6, command 8" in msg
    assert "runs.learning_rate" in msg
    assert str(path) in msg
    assert [d[0] for d in e.value.differences] == ["optim.epochs", "runs.learning_rate"]
    # changing only the checkpoint interval is not a different run
    same = run_identity(cfg.replace(checkpoint_every=4), data, weight_decays=run_grid(
        cfg.weight_decays, cfg.seeds)[0], seeds=run_grid(cfg.weight_decays, cfg.seeds)[1],
        learning_rates=np.full(3, 0.05, np.float32), chunk_epochs=2)
    assert load_checkpoint(path, states, same).epoch == 2


def test_other_data_is_refused(saved):
    path, states, _, ident, (cfg, data, model, tx, wd, sd, lr) = saved
    x = data.x.copy()
    x[0, 0] += 1.0
    other = run_identity(cfg, dataclasses.replace(data, x=x), weight_decays=wd, seeds=sd,
                         learning_rates=lr, chunk_epochs=2)
    with pytest.raises(CheckpointMismatchError, match=r"data_fingerprint\.x\.sha256"):
        load_checkpoint(path, states, other)


def test_template_with_other_shapes_is_refused(saved):
    path, _, _, ident, (cfg, data, model, tx, wd, sd, lr) = saved
    wide = tiny_task(cfg, data, model=MLP(depth=cfg.model.depth, width=cfg.model.width + 1,
                                          num_classes=data.num_classes, bn=cfg.model.bn))
    template = jax.eval_shape(lambda: init_states(wide, sd, lr, wd, data.sample_shape))
    with pytest.raises(CheckpointError, match=r"has shape .*expected"):
        load_checkpoint(path, template, ident)
    deeper = tiny_task(cfg, data, model=MLP(depth=cfg.model.depth + 1, width=cfg.model.width,
                                            num_classes=data.num_classes, bn=cfg.model.bn))
    template = jax.eval_shape(lambda: init_states(deeper, sd, lr, wd, data.sample_shape))
    with pytest.raises(CheckpointError, match="another structure"):
        load_checkpoint(path, template, ident)


def test_checkpoint_every_must_be_a_multiple_of_the_chunk(tmp_path):
    cfg, data, model, *_ = _small_setup()
    with pytest.raises(ConfigError, match=r"checkpoint_every \(3\) must be a multiple .* 2 epoch"):
        resumable_train_runs(model, cfg.replace(checkpoint_every=3), data, tmp_path / "c.npz")
    with pytest.raises(ConfigError, match=r"learning_rates\[1\] must be finite and > 0"):
        resumable_train_runs(model, cfg, data, tmp_path / "c.npz", weight_decays=[0.0, 0.0],
                             seeds=[0, 1], learning_rates=[0.1, float("nan")])
    with pytest.raises(ConfigError, match=r"weight_decays\[0\] must be finite and >= 0"):
        resumable_train_runs(model, cfg, data, tmp_path / "c.npz", weight_decays=[-1.0],
                             seeds=[0], learning_rates=[0.1])
    assert not (tmp_path / "c.npz").exists()


# ---------------------------------------------------------------------------------------------
# atomic files and the output-directory guard
# ---------------------------------------------------------------------------------------------

def test_atomic_write_replaces_whole_file_or_nothing(tmp_path, monkeypatch):
    p = tmp_path / "results.json"
    atomic_write_json(p, {"a": [1, 2.5, None]})
    assert json.loads(p.read_text()) == {"a": [1, 2.5, None]}
    mode = stat.S_IMODE(os.stat(p).st_mode)
    assert mode & 0o044 == 0o044 & ~nc_files._UMASK  # not mkstemp's 0600: readable like open()'s

    def crash(src, dst):  # the process dies between writing the temp file and the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(ck.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(p, "partial")
    monkeypatch.undo()
    assert json.loads(p.read_text()) == {"a": [1, 2.5, None]}  # the old file is untouched
    assert os.listdir(tmp_path) == ["results.json"]  # and the temp file is cleaned up


def test_out_dir_guard(tmp_path, saved):
    fresh = tmp_path / "fresh"
    assert prepare_out_dir(fresh, overwrite=False, resume=True) == "new"
    assert fresh.is_dir()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "results.json").write_text("{}")
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutDirError, match="results of another run.*--overwrite"):
        prepare_out_dir(foreign, overwrite=False, resume=True)
    assert (foreign / "results.json").read_text() == "{}"
    assert prepare_out_dir(foreign, overwrite=True, resume=True) == "overwrite"
    assert sorted(os.listdir(foreign)) == ["notes.txt"]  # run artifacts gone, user files kept

    run = tmp_path / "run"
    run.mkdir()
    _copy(saved[0], run / "checkpoint.npz")
    # temp files never count as results; only provably orphaned ones are deleted (see
    # tests/runs/test_lock.py): an old-style name that records no writer is left alone
    (run / ".checkpoint.npz.abc123.tmp").write_bytes(b"half a file from a killed writer")
    assert prepare_out_dir(run, overwrite=False, resume=True, config_dict=saved[3]) == "resume"
    assert sorted(os.listdir(run)) == [".checkpoint.npz.abc123.tmp", "checkpoint.npz"]
    os.remove(run / ".checkpoint.npz.abc123.tmp")
    with pytest.raises(OutDirError, match="already holds a checkpoint"):
        prepare_out_dir(run, overwrite=False, resume=False)
    bad = dict(saved[3], seeds=[7])
    with pytest.raises(CheckpointMismatchError, match=r"seeds: checkpoint \[0\], command \[7\]"):
        prepare_out_dir(run, overwrite=False, resume=True, config_dict=bad)

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(OutDirError, match="not a directory"):
        prepare_out_dir(a_file, overwrite=True, resume=True)
