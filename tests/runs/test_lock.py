"""One writer per output directory: a second run on the same --out is
refused at once naming the holder, a killed holder leaves no stale lock, temp files are deleted
only when provably orphaned, and an unwritable or impossible --out fails before any training."""
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from nc_jax.cli import _main as cli
from nc_jax.runs import _lock as lock
from nc_jax.cli import main
from nc_jax.runs import atomic_write_text, host_name, prepare_out_dir
from nc_jax.runs import LOCK_NAME, OutDirBusyError, OutDirLock, holds_lock
from tests import unprivileged

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--preset", "demo", "--set", "model.depth=2", "--set", "model.width=4",
        "--set", "data.n=240", "--set", "data.dim=8", "--set", "data.num_classes=4",
        "--set", "data.teacher_width=16", "--set", "optim.epochs=2",
        "--set", "optim.batch_size=32", "--seeds", "0", "--quiet"]


def _env():
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)


def _wait_for(path, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


# The first writer: the real CLI, held inside the lock until the test releases it, so that the
# second writer is sure to find it running.
HOLD_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from nc_jax.cli import _main as cli
    release, argv = sys.argv[1], sys.argv[2:]
    run = cli.run_experiment
    def held(*a, **k):
        while not os.path.exists(release):
            time.sleep(0.02)
        return run(*a, **k)
    cli.run_experiment = held
    sys.exit(cli.main(argv))
""")


def test_second_writer_on_the_same_out_is_refused_at_once(tmp_path):
    out = tmp_path / "out"
    release = tmp_path / "release"
    first = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, str(release), *TINY,
                              "--weight-decays", "1e-4,1e-3", "--out", str(out)],
                             cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(out / LOCK_NAME, first)
        holder = json.loads((out / LOCK_NAME).read_text())
        assert holder["pid"] == first.pid and holder["host"] == host_name()
        assert "--weight-decays 1e-4,1e-3" in holder["command"]
        # another weight-decay grid started with the same --out (a real second process)
        t0 = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "nc_jax.cli", *TINY,
                                 "--weight-decays", "5e-3", "--out", str(out)], cwd=ROOT,
                                env=_env(), capture_output=True, text=True, timeout=300)
        refused_in = time.monotonic() - t0
        assert second.returncode == 2, second.stderr[-2000:]
        assert second.stderr.startswith("error: output directory") and "in use by another nc-jax " \
            f"run (pid {first.pid} on host {host_name()}" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr and second.stdout == ""
        assert refused_in < 120  # refused before any data or compilation (import time only)
        release.touch()
        stdout, stderr = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr[-3000:]
    # only the first grid's results, and no lock left behind
    doc = json.loads((out / "results.json").read_text())
    assert [r["weight_decay"] for r in doc["runs"]] == [1e-4, 1e-3]
    assert doc["configs"]["sweep"]["weight_decays"] == [1e-4, 1e-3]
    # the run's files and its figures; no lock or temp file left behind
    assert sorted(os.listdir(out)) == ["checkpoint.npz", "nc_vs_weight_decay.png", "results.csv",
                                       "results.json", "theorem.png"]


LOCK_AND_SLEEP = textwrap.dedent("""
    import sys, time
    from nc_jax.runs import OutDirLock
    OutDirLock(sys.argv[1], command="holder").acquire()
    print("locked", flush=True)
    time.sleep(600)
""")


def test_a_killed_holder_leaves_no_stale_lock(tmp_path, capsys):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_AND_SLEEP, str(out)], cwd=ROOT,
                              env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutDirBusyError, match=rf"pid {holder.pid} on host .*command: holder"):
            OutDirLock(out).acquire()
        assert not holds_lock(out)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    # the dead holder's lock file is still there, its flock is gone with the process
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == holder.pid
    assert main(TINY + ["--weight-decays", "1e-3", "--out", str(out)]) == 0
    capsys.readouterr()
    assert not (out / LOCK_NAME).exists() and (out / "results.json").exists()


def test_lock_is_reentrant_and_removed_on_release(tmp_path):
    with OutDirLock(tmp_path / "d") as a:
        assert holds_lock(tmp_path / "d") and (tmp_path / "d" / LOCK_NAME).exists()
        with OutDirLock(tmp_path / "d"):  # e.g. run_sweep(out_dir=...) inside a locked CLI run
            pass
        assert holds_lock(tmp_path / "d")
        assert json.loads((tmp_path / "d" / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not holds_lock(tmp_path / "d") and os.listdir(tmp_path / "d") == []
    a.release()  # a second release is harmless


def test_without_flock_the_recorded_pid_decides(tmp_path, monkeypatch):
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(lock.fcntl, "flock", no_flock)
    d = tmp_path / "d"
    d.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (d / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": host_name()}))
    with OutDirLock(d):  # a dead holder on this host: stale, taken over
        assert json.loads((d / LOCK_NAME).read_text())["pid"] == os.getpid()
    (d / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "host": host_name(),
                                           "command": "other"}))
    with pytest.raises(OutDirBusyError, match=rf"pid {os.getppid()} .*no file locks.*delete"):
        OutDirLock(d).acquire()
    (d / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(OutDirBusyError, match="host elsewhere"):  # cannot check: refused
        OutDirLock(d).acquire()


def test_temp_files_are_deleted_only_when_provably_orphaned(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        names = {
            "live": f".checkpoint.npz.{host_name()}-{live.pid}.abc_123.tmp",  # in flight
            "dead": f".checkpoint.npz.{host_name()}-{dead.pid}.def456.tmp",  # orphaned
            "other_host": f".checkpoint.npz.elsewhere-{dead.pid}.ghi789.tmp",
            "old_style": ".checkpoint.npz.jkl012.tmp",  # names no writer
            "not_ours": f".notes.txt.{host_name()}-{dead.pid}.mno345.tmp",
        }
        for n in names.values():
            (d / n).write_bytes(b"partial")
        # without the lock nothing is provable: everything stays (and none of it is a result)
        assert prepare_out_dir(d, overwrite=False, resume=True) == "new"
        assert sorted(os.listdir(d)) == sorted(names.values())
        with OutDirLock(d):
            assert prepare_out_dir(d, overwrite=False, resume=True) == "new"
            left = set(os.listdir(d)) - {LOCK_NAME}
        assert left == set(names.values()) - {names["dead"]}
    finally:
        live.kill()
        live.wait()


def test_atomic_writes_name_their_writer(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(os.path.basename(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    atomic_write_text(tmp_path / "results.json", "{}")
    assert seen[0].startswith(f".results.json.{host_name()}-{os.getpid()}.")
    assert seen[0].endswith(".tmp")


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if the CLI gets as far as making data or training."""
    def refuse(*a, **k):
        raise AssertionError("training started")
    monkeypatch.setattr(cli, "run_experiment", refuse)


@pytest.mark.parametrize("where, msg", [
    ("{tmp}/a_file/out", "cannot create output directory {tmp}/a_file/out (Not a directory)"),
    ("/proc/nc_jax_out", "cannot create output directory /proc/nc_jax_out"),
    ("{tmp}/a_file", "output path {tmp}/a_file exists and is not a directory"),
    ("", "--out must name a directory, got ''"),
])
def test_impossible_out_fails_before_training(where, msg, tmp_path, capsys, no_training):
    (tmp_path / "a_file").write_text("x")
    where, msg = where.replace("{tmp}", str(tmp_path)), msg.replace("{tmp}", str(tmp_path))
    assert main(TINY + ["--out", where]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and msg in err, err
    # an experiment too (its default --out would otherwise be used for '')
    assert main(["--experiment", "fig3_1", "--preset", "smoke", "--quiet", "--out", where]) == 2
    assert msg in capsys.readouterr().err


UNWRITABLE = textwrap.dedent("""
    import sys
    from nc_jax.cli import main
    from nc_jax.cli import _main as cli
    def refuse(*a, **k):
        raise SystemExit("training started")
    cli.run_experiment = refuse
    codes = [main(sys.argv[2:] + ["--out", out]) for out in (sys.argv[1], sys.argv[1] + "/sub")]
    print(codes)
""")


def test_unwritable_out_fails_before_training(tmp_path):
    reason = unprivileged.why_impossible()
    if reason:
        pytest.skip(reason)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        p = subprocess.run(unprivileged.command([sys.executable, "-c", UNWRITABLE, str(ro),
                                                 *TINY, "--weight-decays", "1e-3"]),
                           cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    finally:
        ro.chmod(0o755)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip() == "[2, 2]"
    lines = p.stderr.strip().splitlines()
    assert lines[0] == (f"error: output directory {ro} is not writable (Permission denied); "
                        f"nothing was run: choose another --out or make it writable")
    assert lines[1] == (f"error: cannot create output directory {ro}/sub (Permission denied); "
                        f"nothing was run: choose a writable --out")
    assert os.listdir(ro) == []


def test_run_sweep_with_out_dir_takes_the_lock(tmp_path):
    """The Python entry point with an output directory is refused, like the CLI, while another
    process holds the directory, and trains nothing."""
    from nc_jax import run_sweep
    from tests.helpers import tiny_config, tiny_data
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_AND_SLEEP, str(out)], cwd=ROOT,
                              env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        cfg = tiny_config()
        with pytest.raises(OutDirBusyError, match=rf"pid {holder.pid}"):
            run_sweep(cfg, tiny_data(cfg), out_dir=out, progress=False)
        assert not (out / "checkpoint.npz").exists()
    finally:
        holder.kill()
        holder.wait()
