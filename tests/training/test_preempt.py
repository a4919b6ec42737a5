"""Preemption: SIGTERM / SIGINT finish the compiled chunk in flight, save a
checkpoint there, say how to resume and exit 143 / 130; the same command then resumes, and the
results are bit-identical to an uninterrupted run. Library calls keep Python's default signals."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from nc_jax.training import _hooks as hooks, _preempt as preempt
from nc_jax.runs import checkpoint_epoch
from nc_jax.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# 6 epochs, one compiled chunk per epoch; the CLI default checkpoints every 10 epochs, so a
# checkpoint at epoch 2 can only come from the preemption
ARGS = ["--preset", "demo", "--set", "model.depth=3", "--set", "model.width=16",
        "--set", "data.n=240", "--set", "data.dim=8", "--set", "data.num_classes=4",
        "--set", "data.teacher_width=16", "--set", "optim.epochs=6",
        "--set", "optim.batch_size=32", "--set", "optim.lr=0.05",
        "--weight-decays", "1e-4,5e-3", "--seeds", "0"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """results.json runs of an uninterrupted run of ARGS."""
    out = tmp_path_factory.mktemp("ref") / "out"
    assert main(ARGS + ["--quiet", "--out", str(out)]) == 0
    return json.loads((out / "results.json").read_text())["runs"]


# The real CLI in a fresh process. After epoch 2 it writes a marker and waits (for at most 30 s)
# until the test's signal has arrived, so the signal lands while the sweep is running.
SCRIPT = textwrap.dedent("""
    import os, sys, time
    from nc_jax.training import _hooks as hooks, _preempt as preempt
    marker, argv = sys.argv[1], sys.argv[2:]
    call = hooks.ProgressHook.__call__
    def pausing(self, ev):
        call(self, ev)
        if ev.epoch == 2 and not os.path.exists(marker):
            open(marker, "w").close()
            deadline = time.monotonic() + 30
            while preempt.pending() is None and time.monotonic() < deadline:
                time.sleep(0.05)
    hooks.ProgressHook.__call__ = pausing
    from nc_jax.cli import main
    sys.exit(main(argv))
""")


def _env():
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130),
                                       (signal.SIGHUP, 129)])
def test_signal_saves_a_checkpoint_and_the_same_command_resumes_bit_identically(
        sig, code, tmp_path, reference):
    out, marker = tmp_path / "out", tmp_path / "marker"
    argv = ARGS + ["--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(marker), *argv], cwd=ROOT,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the sweep never reached epoch 2"
            time.sleep(0.02)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    name = signal.Signals(sig).name
    assert proc.returncode == code, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    assert f"{name} received: stopping after the current compiled chunk" in stderr
    assert f"interrupted by {name}: stopped after the last complete compiled chunk." in stderr
    assert f"Checkpoints saved:\n  {out}/checkpoint.npz: epoch 2 of 6\n" in stderr
    assert f"Resume with the same command: nc-sweep {' '.join(argv)}" in stderr
    assert stdout == ""  # no table of unfinished runs
    assert checkpoint_epoch(out / "checkpoint.npz") == 2
    assert sorted(os.listdir(out)) == ["checkpoint.npz"]  # no results, no lock left behind

    done = subprocess.run([sys.executable, "-m", "nc_jax.cli", *argv, "--quiet"], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming from {out}/checkpoint.npz (epoch 2 of 6)" in done.stderr
    # every number of every run (final metrics, curves, per-epoch history), bit for bit
    assert json.loads((out / "results.json").read_text())["runs"] == reference


def _signal_at(monkeypatch, epoch, *signals):
    """Make the CLI's progress hook send `signals` to this process after `epoch`."""
    call = hooks.ProgressHook.__call__
    sent = []

    def hook(self, ev):
        call(self, ev)
        if ev.epoch == epoch and not sent:
            sent.append(epoch)
            for s in signals:
                os.kill(os.getpid(), s)

    monkeypatch.setattr(hooks.ProgressHook, "__call__", hook)
    return sent


def test_experiment_without_periodic_checkpoints_is_saved_on_sigterm(tmp_path, monkeypatch,
                                                                    capsys):
    """fig3_1 smoke checkpoints never by itself: a SIGTERM still saves the group in flight, the
    same command resumes it, and the numbers equal an uninterrupted run's."""
    argv = ["--experiment", "fig3_1", "--preset", "smoke", "--set", "weight_decays=[1e-3]"]
    assert main(argv + ["--quiet", "--out", str(tmp_path / "ref")]) == 0
    ref = json.loads((tmp_path / "ref" / "results.json").read_text())["runs"]
    assert sorted(f for f in os.listdir(tmp_path / "ref") if f.endswith(".npz")) == []
    capsys.readouterr()

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    sent = _signal_at(monkeypatch, 2, signal.SIGTERM)
    out = tmp_path / "out"
    assert main(argv + ["--out", str(out)]) == 143
    assert sent == [2]
    # the guard is gone: the previous handlers are back, library calls see no pending stop
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert preempt.pending() is None
    err = capsys.readouterr().err
    assert f"{out}/checkpoint_affine.npz: epoch 2 of 4" in err
    assert sorted(os.listdir(out)) == ["checkpoint_affine.npz"]
    monkeypatch.undo()
    assert main(argv + ["--quiet", "--out", str(out)]) == 0
    assert "resuming from" in capsys.readouterr().err
    assert json.loads((out / "results.json").read_text())["runs"] == ref
    # the resumed group's checkpoint now holds its final state, not the stale epoch 2
    assert checkpoint_epoch(out / "checkpoint_affine.npz") == 4


def test_second_signal_stops_at_once_without_a_traceback(tmp_path, monkeypatch, capsys):
    _signal_at(monkeypatch, 2, signal.SIGINT, signal.SIGINT)
    assert main(ARGS + ["--out", str(tmp_path / "o")]) == 130
    err = capsys.readouterr().err
    assert "error: stopped at once by a second signal" in err and "Traceback" not in err
    assert not (tmp_path / "o" / ".nc-jax.lock").exists()


def test_without_out_nothing_is_saved_and_the_message_says_so(monkeypatch, capsys):
    _signal_at(monkeypatch, 1, signal.SIGTERM)
    assert main(ARGS) == 143
    assert "Nothing was saved: without --out a sweep keeps no checkpoint" in capsys.readouterr().err


def test_library_calls_keep_default_signal_handling():
    from nc_jax.runs import run_sweep
    from tests.helpers import tiny_config, tiny_data
    cfg = tiny_config()
    seen = []
    # the caller's handler, whatever it is: Python's default_int_handler in a terminal, SIG_IGN
    # when pytest was started in the background by a non-interactive shell
    before = signal.getsignal(signal.SIGINT)

    def hook(ev):
        seen.append(signal.getsignal(signal.SIGINT))

    run_sweep(cfg, tiny_data(cfg), progress=False, hooks=[hook])
    assert seen and all(h is before for h in seen)
    with preempt.PreemptionGuard() as g:
        assert signal.getsignal(signal.SIGINT) == g._handle
    assert signal.getsignal(signal.SIGINT) is before
