"""--reanalyse never overwrites another run's results (nor takes its
timings), an unfinished checkpoint of other software is refused by default, every error path
prints `error: <what and what to do>` with exit status 2, and a relative or absolute .npz path
resumes the same run."""
import io
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from nc_jax.runs import _checkpoint as ck
from nc_jax.cli import _main as cli
from nc_jax.training import _hooks as hooks
from nc_jax.runs import _provenance as provenance
from nc_jax.runs import (CheckpointError, CheckpointVersionError, checkpoint_epoch,
                         read_checkpoint, run_sweep)
from nc_jax.cli import main
from nc_jax.config import OptimConfig
from nc_jax.cli import experiment_main
from tests import unprivileged
from tests.helpers import tiny_config, tiny_data

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--preset", "demo", "--set", "model.depth=2", "--set", "model.width=4",
        "--set", "data.n=240", "--set", "data.dim=8", "--set", "data.num_classes=4",
        "--set", "data.teacher_width=16", "--set", "optim.epochs=2",
        "--set", "optim.batch_size=32", "--weight-decays", "1e-3", "--seeds", "0", "--quiet"]


def _env():
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished custom sweep (final checkpoint, results.json) in its own directory."""
    out = tmp_path_factory.mktemp("finished") / "out"
    assert main(TINY + ["--out", str(out)]) == 0
    return out


# ---- item 5: --reanalyse and the existing-results guard ----------------------------------------

def test_reanalyse_refuses_another_experiments_results(finished, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoint.npz").write_bytes((finished / "checkpoint.npz").read_bytes())
    theirs = {"experiment": "fig3_1", "preset": "paper", "wall_time_s": 12345.0,
              "timing": {"affine": {"wall_time_s": 12000.0}}, "configs": {}, "runs": []}
    (out / "results.json").write_text(json.dumps(theirs))
    (out / "fig3_1.png").write_bytes(b"their figure")
    capsys.readouterr()
    assert main(TINY + ["--out", str(out), "--reanalyse"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: output directory {out} holds results of another run (experiment "
                   f"'fig3_1', preset 'paper'); --reanalyse would overwrite them and their "
                   f"figures: pass --overwrite to replace them, or choose another --out\n")
    assert json.loads((out / "results.json").read_text()) == theirs
    # with --overwrite it is replaced, and their timings are not carried over as ours
    assert main(TINY + ["--out", str(out), "--reanalyse", "--overwrite"]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["experiment"] == "sweep" and doc["reanalysed"] is True
    assert doc["wall_time_s"] != 12345.0 and "affine" not in doc["timing"]
    assert "reanalysis_wall_time_s" not in doc
    assert checkpoint_epoch(out / "checkpoint.npz") == 2  # --overwrite never deletes it here


def test_reanalyse_refuses_same_experiment_with_another_configuration(finished, tmp_path,
                                                                      capsys):
    out = tmp_path / "out"
    out.mkdir()
    for f in ("checkpoint.npz", "results.json"):
        (out / f).write_bytes((finished / f).read_bytes())
    doc = json.loads((out / "results.json").read_text())
    doc["configs"]["sweep"]["model"]["width"] = 999
    (out / "results.json").write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(TINY + ["--out", str(out), "--reanalyse"]) == 2
    assert "(experiment 'sweep', preset 'demo', another configuration)" in capsys.readouterr().err
    (out / "results.json").write_text("{not json")
    assert main(TINY + ["--out", str(out), "--reanalyse"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out}/results.json cannot be read") and "--overwrite" in err


def test_resuming_custom_sweep_refuses_another_experiments_results(finished, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoint.npz").write_bytes((finished / "checkpoint.npz").read_bytes())
    (out / "results.json").write_text(json.dumps({"experiment": "fig3_3", "preset": "quick"}))
    capsys.readouterr()
    assert main(TINY + ["--out", str(out)]) == 2
    assert "holds results of another run (experiment 'fig3_3'" in capsys.readouterr().err


# ---- item 6: versions ---------------------------------------------------------------------------

def _stopped_at_2(out, monkeypatch=None, software=None):
    """A 4-epoch library sweep stopped after its epoch-2 checkpoint, written by `software`."""
    cfg = tiny_config(optim=OptimConfig(lr=0.05, epochs=4, batch_size=32), checkpoint_every=2,
                      weight_decays=(1e-3,), seeds=(0,))

    class Stop(Exception):
        pass

    def stop(epoch, path):
        if epoch == 2:
            raise Stop

    if software is not None:
        monkeypatch.setattr(ck, "software", lambda: software)
    with pytest.raises(Stop):
        run_sweep(cfg, tiny_data(cfg), out_dir=out, progress=False, on_checkpoint=stop)
    if software is not None:
        monkeypatch.setattr(ck, "software", provenance.software)
    return cfg


def test_checkpoint_records_the_software(tmp_path):
    _stopped_at_2(tmp_path)
    meta = read_checkpoint(tmp_path / "checkpoint.npz")[0]
    sw = provenance.software()
    assert meta["software"] == sw and meta["software_history"] == [sw]
    import jax
    import nc_jax
    assert sw["nc_jax"] == nc_jax.__version__ and sw["jax"] == jax.__version__
    assert sw["jaxlib"] and sw["flax"] and sw["optax"] and len(sw["nc_jax_source"]) == 64


def test_source_hash_sees_every_edit_of_the_package(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    h = provenance.source_sha256(str(pkg))
    (pkg / "notes.txt").write_text("not code")
    assert provenance.source_sha256(str(pkg)) == h
    (pkg / "sub" / "b.py").write_text("y = 2  # a comment\n")
    assert provenance.source_sha256(str(pkg)) != h
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    assert provenance.source_sha256(str(pkg)) == h
    (pkg / "sub" / "b.py").rename(pkg / "b.py")  # same content, other module
    assert provenance.source_sha256(str(pkg)) != h
    assert provenance.git_commit(str(pkg)) is None  # not in a git work tree


def test_resume_with_other_software_is_refused_unless_allowed(tmp_path, monkeypatch):
    old = dict(provenance.software(), nc_jax="0.1.0", jax="0.4.30",
               nc_jax_source="0" * 64, git_commit="abc1234def56")
    cfg = _stopped_at_2(tmp_path, monkeypatch, old)
    with pytest.raises(CheckpointVersionError) as e:
        run_sweep(cfg, tiny_data(cfg), out_dir=tmp_path, progress=False)
    msg = str(e.value)
    assert "was written by other software" in msg
    assert f"nc_jax: checkpoint 0.1.0, now {provenance.software()['nc_jax']}" in msg
    assert "jax: checkpoint 0.4.30, now" in msg and "nc_jax_source: checkpoint 000000" in msg
    assert "--allow-version-change" in msg
    assert [d[0] for d in e.value.differences] == ["nc_jax", "nc_jax_source", "jax"]
    assert checkpoint_epoch(tmp_path / "checkpoint.npz") == 2  # untouched
    res = run_sweep(cfg, tiny_data(cfg), out_dir=tmp_path, progress=False,
                              allow_version_change=True)
    assert res.history["loss"].shape == (1, 4)
    meta = read_checkpoint(tmp_path / "checkpoint.npz")[0]
    assert meta["epoch"] == 4 and meta["software_history"] == [old, provenance.software()]
    # a finished checkpoint of other software is only restored (e.g. --reanalyse): allowed
    run_sweep(cfg, tiny_data(cfg), out_dir=tmp_path, progress=False)


def test_cli_refuses_other_software_before_training_and_names_the_flag(tmp_path, monkeypatch,
                                                                       capsys):
    old = dict(provenance.software(), jaxlib="0.0.1")
    argv = ["--preset", "demo", "--set", "model.depth=3", "--set", "model.width=16",
            "--set", "data.n=240", "--set", "data.dim=8", "--set", "data.num_classes=4",
            "--set", "data.teacher_width=16", "--set", "optim.epochs=4",
            "--set", "optim.batch_size=32", "--set", "optim.lr=0.05", "--weight-decays", "1e-3",
            "--seeds", "0", "--checkpoint-every", "2", "--out", str(tmp_path)]
    # the first half of the run, by "other software", stopped by a SIGTERM after epoch 2
    monkeypatch.setattr(ck, "software", lambda: old)
    call = hooks.ProgressHook.__call__

    def sigterm_at_2(self, ev):
        call(self, ev)
        if ev.epoch == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(hooks.ProgressHook, "__call__", sigterm_at_2)
    assert main(argv) == 143
    monkeypatch.undo()
    assert checkpoint_epoch(tmp_path / "checkpoint.npz") == 2
    capsys.readouterr()
    argv.append("--quiet")

    def refuse(*a, **k):
        raise AssertionError("training started")

    with monkeypatch.context() as m:
        m.setattr(cli, "run_experiment", refuse)
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: checkpoint {tmp_path}/checkpoint.npz was written by other "
                          f"software:\n  jaxlib: checkpoint 0.0.1, now ")
    assert "--allow-version-change" in err and "Traceback" not in err
    assert main(argv + ["--allow-version-change"]) == 0
    err = capsys.readouterr().err
    assert "warning: checkpoint" in err and "continuing anyway" in err
    assert "resuming from" in err and "(epoch 2 of 4)" in err


def test_checkpoint_without_software_field_is_readable_and_refused_clearly(tmp_path):
    cfg = _stopped_at_2(tmp_path)
    path = tmp_path / "checkpoint.npz"
    meta, arrays = read_checkpoint(path)
    del meta["software"], meta["software_history"]  # as nc-jax wrote them before this field
    meta_json = json.dumps(meta, sort_keys=True)
    buf = io.BytesIO()
    np.savez(buf, **arrays, __meta__=np.asarray(meta_json),
             __sha256__=np.asarray(ck._digest(meta_json, arrays)))
    path.write_bytes(buf.getvalue())
    assert checkpoint_epoch(path) == 2
    with pytest.raises(CheckpointVersionError, match="(?s)records no software versions .*"
                       "--allow-version-change"):
        run_sweep(cfg, tiny_data(cfg), out_dir=tmp_path, progress=False)
    run_sweep(cfg, tiny_data(cfg), out_dir=tmp_path, progress=False, allow_version_change=True)
    assert read_checkpoint(path)[0]["software_history"] == [None, provenance.software()]


# ---- item 7: errors that said the wrong thing ----------------------------------------------------

def _central_directory_entry(raw: bytes) -> int:
    return raw.index(b"PK\x01\x02")


@pytest.mark.parametrize("offset, value, cause", [
    (10, 99, "NotImplementedError"),  # compression method -> "not supported"
    (8, 1, "RuntimeError"),           # general purpose flag bit 0 -> "encrypted"
])
def test_byte_flips_that_zipfile_reports_oddly_are_corrupt(finished, tmp_path, offset, value,
                                                           cause):
    raw = bytearray((finished / "checkpoint.npz").read_bytes())
    raw[_central_directory_entry(raw) + offset] = value
    bad = tmp_path / "checkpoint.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=rf"is corrupt or truncated .*\({cause}"):
        read_checkpoint(bad)


def test_npy_named_checkpoint_npz(tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.zeros(3))
    out = tmp_path / "out"
    out.mkdir()
    os.rename(tmp_path / "a.npy", out / "checkpoint.npz")
    with pytest.raises(CheckpointError, match="single .npy array, not an .npz archive"):
        read_checkpoint(out / "checkpoint.npz")
    assert main(TINY + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: checkpoint {out}/checkpoint.npz is not an nc-jax checkpoint")


UNREADABLE = """
import sys
from nc_jax.runs import read_checkpoint, CheckpointError
try:
    read_checkpoint(sys.argv[1])
except CheckpointError as e:
    print(e)
from nc_jax.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_unreadable_checkpoint_is_not_called_corrupt(finished, tmp_path):
    reason = unprivileged.why_impossible()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "out"
    out.mkdir()
    ckpt = out / "checkpoint.npz"
    ckpt.write_bytes((finished / "checkpoint.npz").read_bytes())
    ckpt.chmod(0)
    try:
        p = subprocess.run(unprivileged.command([sys.executable, "-c", UNREADABLE, str(ckpt),
                                                 *TINY, "--out", str(out)]),
                           cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    finally:
        ckpt.chmod(0o644)
    want = (f"checkpoint {ckpt} cannot be read: permission denied. It may well be valid: fix "
            f"its permissions (or run as its owner), do not delete it")
    assert p.stdout.strip() == want
    assert p.returncode == 2 and p.stderr.strip() == f"error: {want}"
    assert "corrupt" not in p.stderr and "delete it to start" not in p.stderr
    assert checkpoint_epoch(ckpt) == 2  # and it was valid


@pytest.mark.parametrize("content, msg", [
    (b"garbage", "is not an .npz archive (it starts with b'garbag')"),
    (b"PK\x03\x04torn", "is not a readable .npz archive (BadZipFile"),
    ("npy", "holds a single array, not an .npz archive of x and y"),
    ("object", "holds object (pickled) arrays, which cannot be read safely"),
    ("no_y", "missing array(s) ['y']"),
    (None, "does not exist"),
])
def test_bad_user_npz_in_experiments_is_an_error_not_a_traceback(tmp_path, capsys, content,
                                                                 msg):
    path = tmp_path / "d.npz"
    if content == "npy":
        np.save(tmp_path / "d.npy", np.zeros((4, 3)))
        os.rename(tmp_path / "d.npy", path)
    elif content == "object":
        np.savez(path, x=np.array([{"a": 1}] * 4, dtype=object), y=np.array([0, 1, 0, 1]))
    elif content == "no_y":
        np.savez(path, x=np.zeros((4, 3)))
    elif content is not None:
        path.write_bytes(content)
    assert experiment_main("real_data", ["--preset", "quick", "--data", str(path), "--quiet",
                                         "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and msg in err and str(path) in err, err
    assert "Traceback" not in err and "allow_pickle" not in err


def test_bad_user_npz_through_the_script_exits_2(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"garbage")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "real_data.py"),
                        "--preset", "quick", "--data", str(tmp_path / "d.npz"), "--quiet",
                        "--out", str(tmp_path / "o")], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.startswith(f"error: data file {tmp_path}/d.npz is not an .npz archive")
    assert "np.savez(path, x=x, y=y)" in p.stderr


@pytest.mark.parametrize("argv, msg", [
    (["--weight-decays", "1e-3,abc"], "--weight-decays expects comma-separated numbers (e.g. "
                                      "1e-4,1e-3), got '1e-3,abc'"),
    (["--seeds", "0,1.5"], "--seeds expects comma-separated integers (e.g. 0,1,2), got '0,1.5'"),
    (["--set", "data.standardize=no"], "data.standardize must be true or false, got 'no'"),
    (["--set", 'weight_decays="1e-4"'], "weight_decays must be a list of numbers, got '1e-4'"),
    (["--set", "weight_decays=[true]"], "weight_decays[0] must be a number, got True"),
    (["--set", "optim.lr_decay_epochs=[1,5]"], "optim.lr_decay_epochs[1] must be < optim.epochs "
                                               "(2), got 5"),
])
def test_config_values_that_were_misread(argv, msg, capsys, tmp_path):
    assert main(TINY + argv + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and msg in err, err
    assert not (tmp_path / "o").exists()


def test_plot_only_without_results(tmp_path, capsys):
    assert main(TINY + ["--out", str(tmp_path), "--plot-only"]) == 2
    assert capsys.readouterr().err == (f"error: --plot-only: no results in {tmp_path} "
                                       f"(results.json is missing); run without --plot-only "
                                       f"first\n")


# ---- item 8: the same .npz by a relative or an absolute path is the same run -------------------

def test_relative_and_absolute_npz_path_resume_the_same_checkpoint(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(64, 5)).astype(np.float32),
             y=np.arange(64) % 2)
    cfg = tiny_config(optim=OptimConfig(lr=0.05, epochs=2, batch_size=32), weight_decays=(1e-3,),
                      seeds=(0,)).to_dict()
    cfg["data"].update(kind="npz", path="d.npz", num_classes=2)  # relative to the working dir
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "o"
    assert main(["--config", "cfg.json", "--quiet", "--out", str(out)]) == 0
    first = json.loads((out / "results.json").read_text())["runs"]
    assert read_checkpoint(out / "checkpoint.npz")[0]["config"]["data"]["path"] == "d.npz"
    capsys.readouterr()
    # the same data named by its absolute path (what --data stores): the same run, restored
    assert main(["--config", "cfg.json", "--data", str(tmp_path / "d.npz"), "--quiet",
                 "--out", str(out)]) == 0
    assert "resuming from" in capsys.readouterr().err
    assert json.loads((out / "results.json").read_text())["runs"] == first
    # other data under the same name is still refused, by its fingerprint
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(64, 5)).astype(np.float32),
             y=np.arange(64) % 2)
    assert main(["--config", "cfg.json", "--quiet", "--out", str(out)]) == 2
    assert "data_fingerprint.x.sha256" in capsys.readouterr().err
