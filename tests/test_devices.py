import os
import subprocess
import sys
import textwrap

import jax
import numpy as np

from nc_jax.sweep import run_sweep
from tests.helpers import tiny_config, tiny_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import sys
    import jax
    import numpy as np
    from nc_jax.sweep import run_sweep
    from tests.helpers import tiny_config, tiny_data
    assert len(jax.devices()) == 4, jax.devices()
    cfg = tiny_config(weight_decays=(1e-4, 1e-3, 1e-2), seeds=(0,))
    res = run_sweep(cfg, tiny_data(cfg), progress=False)
    np.savez(sys.argv[1], final_loss=res.final_loss, loss=res.history["loss"],
             kernel=np.asarray(res.states.params["head"]["kernel"]),
             n_shards=res.num_devices)
""")


def test_four_forced_cpu_devices_match_one_device(tmp_path):
    out = tmp_path / "multi.npz"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(out)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    multi = np.load(out)
    assert len(jax.devices()) == 1
    cfg = tiny_config(weight_decays=(1e-4, 1e-3, 1e-2), seeds=(0,))  # 3 runs: padded to 4
    single = run_sweep(cfg, tiny_data(cfg), progress=False)
    assert multi["final_loss"].shape == (3,)
    assert int(multi["n_shards"]) == 4  # the run axis really was spread over the devices
    np.testing.assert_allclose(multi["final_loss"], single.final_loss, rtol=1e-5)
    np.testing.assert_allclose(multi["loss"], single.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(multi["kernel"], np.asarray(single.states.params["head"]["kernel"]),
                               rtol=1e-5, atol=1e-6)
