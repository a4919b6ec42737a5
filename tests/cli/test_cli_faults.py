"""Faults of the machine and of the input through the command line: a full disk, a file-size
limit, a lack of memory and an over-long --out end in `error: <what happened>; <what to do>`
(exit 75 for the machine, 2 for the input, the resume command when checkpoints exist), and an
.npz must agree with data.num_classes and declare a size that can be read."""
import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from nc_jax.cli import main
from nc_jax.runs import checkpoint_epoch, read_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--preset", "demo", "--set", "model.depth=2", "--set", "model.width=4",
        "--set", "data.n=240", "--set", "data.dim=8", "--set", "data.num_classes=4",
        "--set", "data.teacher_width=16", "--set", "optim.epochs=2",
        "--set", "optim.batch_size=32", "--weight-decays", "1e-3", "--seeds", "0", "--quiet",
        "--no-compile-cache"]
EXIT_RESOURCE = 75

# The child sets its own limits and patches before it runs the command line (a preexec_fn
# would run Python between fork and exec of this multithreaded process, which can deadlock).
CHILD = r"""
import errno, os, resource, signal, sys
mode, argv = sys.argv[1], sys.argv[2:]
if mode.startswith("fsize="):
    # an embedding program may leave SIGXFSZ at its default (kill): the CLI must ignore it
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    n = int(mode[6:])
    resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))
elif mode == "enospc-results":
    real_fdopen = os.fdopen

    class FullDisk:
        # the disk fills up while results.json is written (after the final checkpoint)
        def __init__(self, f):
            self.f = f
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            self.f.close()
        def fileno(self):
            return self.f.fileno()
        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        def flush(self):
            pass

    def fdopen(fd, *a, **k):
        f = real_fdopen(fd, *a, **k)
        return FullDisk(f) if "results.json" in os.readlink(f"/proc/self/fd/{fd}") else f
    os.fdopen = fdopen
from nc_jax.cli import main
sys.exit(main(argv))
"""


def _child(mode, argv, cwd):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, PYTHONDONTWRITEBYTECODE="1")
    if mode.startswith("fsize="):
        env.pop("JAX_COMPILATION_CACHE_DIR", None)  # its entries would meet the limit first
    return subprocess.run([sys.executable, "-c", CHILD, mode, *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _no_temp_files(d):
    assert [f for f in os.listdir(d) if f.endswith(".tmp")] == []


def test_file_size_limit_during_the_checkpoint_write_exits_75(tmp_path):
    out = tmp_path / "o"
    p = _child("fsize=3000", TINY + ["--out", str(out)], tmp_path)
    assert p.returncode == EXIT_RESOURCE, p.stderr[-2000:]
    first, *rest = p.stderr[p.stderr.index("error: "):].splitlines()
    assert first == (f"error: the file-size limit was reached (ulimit -f, or the largest file the "
                     f"file system allows) while writing {out}/checkpoint.npz (File too large); "
                     f"raise the limit (ulimit -f unlimited) or write elsewhere (--out), then "
                     f"re-run the same command.")
    assert "Traceback" not in p.stderr
    assert rest[-1].startswith("No checkpoint was written yet (the first save failed); the "
                               "same command starts afresh: nc-sweep --preset demo")
    assert os.listdir(out) == []  # no checkpoint, no temp file, the lock released


def test_full_disk_while_writing_results_exits_75_and_resumes(tmp_path):
    out = tmp_path / "o"
    p = _child("enospc-results", TINY + ["--out", str(out)], tmp_path)
    assert p.returncode == EXIT_RESOURCE, p.stderr[-2000:]
    lines = p.stderr[p.stderr.index("error: "):].splitlines()
    assert lines[0] == (f"error: the disk is full (no space left on device) while writing "
                        f"{out}/results.json (No space left on device); free space on that file "
                        f"system (or write elsewhere: --out), then re-run the same command.")
    assert lines[-3:-1] == ["Checkpoints saved:", f"  {out}/checkpoint.npz: epoch 2 of 2"]
    assert lines[-1].startswith("Resume with the same command: nc-sweep --preset demo")
    assert not (out / "results.json").exists()
    _no_temp_files(out)
    assert checkpoint_epoch(out / "checkpoint.npz") == 2
    read_checkpoint(out / "checkpoint.npz")  # whole: its checksum holds
    # space is back: the same command restores the finished sweep and writes the results
    p = _child("plain", TINY + ["--out", str(out)], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"resuming from {out}/checkpoint.npz (epoch 2 of 2)" in p.stderr
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 1


def test_out_of_memory_while_writing_a_checkpoint_exits_75(tmp_path, monkeypatch, capsys):
    from nc_jax.runs import _checkpoint as ck

    def no_memory(*a, **k):
        raise MemoryError
    monkeypatch.setattr(ck.np, "savez", no_memory)
    out = tmp_path / "o"
    assert main(TINY + ["--out", str(out)]) == EXIT_RESOURCE
    err = capsys.readouterr().err
    assert err.startswith(f"error: out of memory while writing {out}/checkpoint.npz; free "
                          f"memory (other programs, or fewer runs per compiled call: "
                          f"--runs-per-device; a smaller grid or model), then re-run the same "
                          f"command.\n")
    assert "No checkpoint was written yet" in err and os.listdir(out) == []


def test_over_long_out_is_refused_before_training(tmp_path, capsys):
    long_name = tmp_path / ("a" * 300)
    assert main(TINY + ["--out", str(long_name)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: output directory {str(long_name)[:80]}...")
    assert err.rstrip().endswith("cannot be used: a name in it is longer than the file system "
                                 "allows (usually 255 bytes) (ENAMETOOLONG); nothing was run: "
                                 "choose a shorter --out")
    # every name fits, but a temp file's absolute path would pass the system's limit: refused
    # now, not after training when the first checkpoint is written
    parts, path = [], str(tmp_path)
    while len(path) < 4096 - 100:
        parts.append("d" * 200)
        path = os.path.join(str(tmp_path), *parts)
    path = path[:4096 - 100]
    assert main(TINY + ["--out", path]) == 2
    err = capsys.readouterr().err
    assert "cannot be used: the files written in it need up to 128 bytes more than its " \
           "absolute path, and the system limits a path to 4096 bytes (ENAMETOOLONG)" in err
    assert not os.path.exists(os.path.join(path, "checkpoint.npz"))


def _npz(path, x, y):
    np.savez(path, x=x, y=y)
    return str(path)


def test_npz_labels_must_match_data_num_classes(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3)).astype(np.float32)
    five = _npz(tmp_path / "five.npz", x, np.concatenate([np.repeat(np.arange(4), 10), [100] * 10]))
    common = ["--preset", "demo", "--set", "model.depth=2", "--set", "model.width=4",
              "--set", "optim.epochs=1", "--set", "optim.batch_size=16", "--weight-decays",
              "1e-3", "--seeds", "0", "--quiet", "--no-compile-cache"]
    assert main(common + ["--data", five, "--set", "data.num_classes=4"]) == 2
    assert capsys.readouterr().err == (
        f"error: {five}: labels outside [0, 4) with num_classes=4: found [100] (5 distinct "
        f"labels); the labels must be the class indices 0..3: relabel y as 0..4 "
        f"(np.unique(y, return_inverse=True)[1]) and set num_classes=5 (data.num_classes=5; "
        f"--set data.num_classes=5)\n")
    three = _npz(tmp_path / "three.npz", x[:30], np.arange(30) % 3)
    assert main(common + ["--data", three]) == 2  # the default data.num_classes is 10
    assert "num_classes=10 but class(es) [3, 4, 5, 6, 7, 8, 9] have no sample" in \
        capsys.readouterr().err
    out = tmp_path / "o"
    assert main(common + ["--data", three, "--set", "data.num_classes=3", "--out", str(out)]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["data"]["num_classes"] == 3 and doc["configs"]["sweep"]["data"]["num_classes"] == 3


def test_npz_declaring_a_huge_shape_is_an_input_error(tmp_path, capsys):
    p = tmp_path / "huge.npz"
    with zipfile.ZipFile(p, "w") as zf:
        for name, shape, dtype, body in (("x", (1 << 40, 8), "<f4", b"\0" * 32),
                                         ("y", (4,), "<i8", np.arange(4).astype("<i8").tobytes())):
            head = io.BytesIO()
            np.lib.format.write_array_header_1_0(head, {"descr": dtype, "fortran_order": False,
                                                        "shape": shape})
            zf.writestr(f"{name}.npy", head.getvalue() + body)
    assert main(["--preset", "demo", "--data", str(p), "--set", "data.num_classes=2", "--quiet",
                 "--no-compile-cache"]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: data file {p} is damaged: array x declares shape (1099511627776, 8) of float32 "
        f"(3.52e+04 GB) but the archive stores")
