"""Across processes: two JAX processes (`jax.distributed.initialize` on localhost, CPU collectives
over gloo) train one sweep whose run axis is sharded over both processes' devices; the results
equal the one-process sweep with the same `runs_per_device` bit for bit, every process holds them,
and only process 0 prints and writes files."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from nc_jax.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SKIP = 77  # exit status of a worker whose platform cannot run multi-process JAX

ARGS = ["--preset", "demo", "--set", "model.depth=3", "--set", "model.width=16",
        "--set", "data.n=240", "--set", "data.dim=8", "--set", "data.num_classes=4",
        "--set", "data.teacher_width=16", "--set", "optim.epochs=2", "--set", "optim.batch_size=32",
        "--set", "optim.lr=0.05", "--set", "record_every=1", "--weight-decays", "1e-4,5e-3,1e-2",
        "--seeds", "0", "--runs-per-device", "1", "--quiet"]

WORKER = textwrap.dedent("""
    import json, sys
    import jax
    pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=pid,
                                   initialization_timeout=120)
    except Exception as e:  # no gloo / no distributed runtime on this platform
        print(f"cannot start multi-process JAX: {e}", file=sys.stderr)
        sys.exit(77)
    assert jax.process_count() == 2 and len(jax.devices()) == 2
    from nc_jax.cli import main
    rc = main(json.loads(sys.argv[4]) + ["--out", out])
    # both processes leave the coordination service together: process 0 hosts it, and tearing
    # it down at interpreter exit while process 1 is still connected can abort (SIGABRT)
    jax.distributed.shutdown()
    sys.exit(rc)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_process_sweep_equals_one_process_sweep(tmp_path, capsys):
    out = tmp_path / "two"
    port = str(_free_port())
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)  # one CPU device per process: 2 devices in all
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(pid), port, str(out),
                               json.dumps(ARGS)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for pid in (0, 1)]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=600))
        finally:
            if p.poll() is None:
                p.kill()
    codes = [p.returncode for p in procs]
    if SKIP in codes:
        pytest.skip("this platform cannot run multi-process JAX on CPU: "
                    + outs[codes.index(SKIP)][1][-500:])
    assert codes == [0, 0], [o[1][-2000:] for o in outs]
    assert "3 runs in" in outs[0][0] and "runs in" not in outs[1][0]  # only process 0 prints

    assert main(ARGS + ["--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    two = json.loads((out / "results.json").read_text())
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    assert two["environment"]["processes"] == 2 and one["environment"]["processes"] == 1
    assert [t["num_devices"] for t in two["timing"].values()] == [2]
    # every number of every run, curves and per-epoch history included, bit for bit
    assert two["runs"] == one["runs"]
    assert sorted(os.listdir(out)) == ["checkpoint.npz", "curves.csv", "nc_vs_weight_decay.png",
                                       "results.csv", "results.json", "theorem.png",
                                       "training_curves.png"]
