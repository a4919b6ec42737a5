"""Determinism: the same seed and config give bit-identical data and results in two processes
(this pytest process and a fresh interpreter), and different seeds really differ."""
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nc_jax.runs import data_fingerprint
from nc_jax.runs import run_sweep
from tests.helpers import tiny_config, tiny_data

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def determinism_config():
    return tiny_config(weight_decays=(1e-4, 5e-3), seeds=(0, 1))


def run_arrays() -> dict:
    """Data fingerprint and every number of a fresh sweep of `determinism_config`."""
    cfg = determinism_config()
    data = tiny_data(cfg)
    res = run_sweep(cfg, data, progress=False)
    fp = data_fingerprint(data)
    out = {"x_sha": np.asarray(fp["x"]["sha256"]), "y_sha": np.asarray(fp["y"]["sha256"]),
           "final_loss": res.final_loss, "final_accuracy": res.final_accuracy,
           **{f"history/{k}": v for k, v in res.history.items()},
           **{f"records/{k}": v for k, v in res.records.items()}}
    for path, leaf in jax.tree_util.tree_flatten_with_path(res.states)[0]:
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out[f"state{jax.tree_util.keystr(path)}"] = leaf
    return {k: np.asarray(v) for k, v in out.items()}


SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from tests.training.test_determinism import run_arrays
    np.savez(sys.argv[1], **run_arrays())
""")


def test_two_processes_give_bit_identical_results(tmp_path):
    out = tmp_path / "other_process.npz"
    # the other process runs while this one computes: both are single-threaded enough to overlap
    p = subprocess.Popen([sys.executable, "-c", SCRIPT, str(out)], cwd=ROOT, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         # compile independently: no executable shared through the test cache
                         env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
                                  JAX_ENABLE_COMPILATION_CACHE="false"))
    try:
        here = run_arrays()
        _, err = p.communicate(timeout=600)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err[-3000:]
    with np.load(out) as f:
        there = {k: f[k] for k in f.files}
    assert sorted(here) == sorted(there)
    for k in here:
        assert here[k].dtype == there[k].dtype, k
        np.testing.assert_array_equal(here[k], there[k], err_msg=k)
    # not vacuous: runs (wd-major, seed-minor) with seeds 0 and 1 differ in init and data order
    kernel = here["state.params['head']['kernel']"]
    assert not np.array_equal(kernel[0], kernel[1])
    assert not np.array_equal(here["history/loss"][0], here["history/loss"][1])


@pytest.mark.parametrize("layout", [dict(runs_per_device=1), dict(vmap_runs=1)])
def test_a_grid_run_alone_reproduces_bit_for_bit(layout):
    """What the README promises: with one run per compiled batch (runs_per_device=1, or
    vmap_runs=1), run i of a grid and the same run trained alone give the same bits."""
    cfg = tiny_config(**layout)
    data = tiny_data(cfg)
    grid = run_sweep(cfg, data, progress=False)
    alone = run_sweep(cfg.replace(weight_decays=(cfg.weight_decays[1],), seeds=(cfg.seeds[0],)),
                      data, progress=False)
    i = 1 * len(cfg.seeds) + 0  # (wd_1, seed_0)
    np.testing.assert_array_equal(grid.history["loss"][i], alone.history["loss"][0])
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a)[i], np.asarray(b)[0]),
                 grid.states.params, alone.states.params)
