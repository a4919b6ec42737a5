"""One device vs several (forced CPU devices in a subprocess): with a fixed `runs_per_device` the
results are bit-identical, also for a checkpoint written on 4 devices and resumed on 1; the
automatic layout agrees to float32 rounding; runs mapped one at a time (`vmap_runs=1`, under
`shard_map` on several devices) are bit-identical on any device count."""
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest


from nc_jax.config import OptimConfig
from nc_jax.training import run_layout
from nc_jax.runs import run_sweep
from tests.helpers import tiny_config, tiny_data
from tests.runs.test_checkpoint import assert_bit_identical, result_arrays

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# 3 runs. Automatic layout: 1 run per device on 4 devices, 3 on 1 device (different programs).
# runs_per_device=2: one call of 4 x 2 runs on 4 devices, two calls of 2 runs on 1 device.
SCRIPT = textwrap.dedent("""
    import sys
    import jax
    import numpy as np
    from nc_jax import run_sweep
    from tests.helpers import tiny_data
    from tests.runs.test_checkpoint import result_arrays
    from tests.training.test_devices import auto_config, fixed_config, StopAfter
    assert len(jax.devices()) == 4, jax.devices()
    out = {}
    for name, cfg in (("auto", auto_config()), ("fixed", fixed_config()),
                      ("mapped", auto_config().replace(vmap_runs=1))):
        res = run_sweep(cfg, tiny_data(cfg), progress=False)
        out.update({f"{name}:{k}": v for k, v in result_arrays(res).items()})
        out[f"{name}:n_devices"] = np.asarray(res.num_devices)
        out[f"{name}:runs_per_device"] = np.asarray(res.runs_per_device)
    # a sweep interrupted after its epoch-2 checkpoint: the main process resumes it on 1 device
    cfg = auto_config()
    try:
        run_sweep(cfg, out_dir=sys.argv[2], data=tiny_data(cfg), progress=False,
                            on_checkpoint=StopAfter(2))
    except StopAfter.Stop:
        pass
    np.savez(sys.argv[1], **out)
""")


def auto_config():
    return tiny_config(optim=OptimConfig(lr=0.05, epochs=4, batch_size=32),
                       weight_decays=(1e-4, 1e-3, 1e-2), seeds=(0,), record_every=2,
                       checkpoint_every=2)


def fixed_config():
    return auto_config().replace(runs_per_device=2)


class StopAfter:
    class Stop(Exception):
        pass

    def __init__(self, epoch):
        self.epoch = epoch

    def __call__(self, epoch, path):
        if epoch == self.epoch:
            raise StopAfter.Stop


def split(arrays: dict, name: str) -> dict:
    return {k.split(":", 1)[1]: v for k, v in arrays.items()
            if k.startswith(name + ":") and not k.endswith(("n_devices", "runs_per_device"))}


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    d = tmp_path_factory.mktemp("devices")
    out, ckpt = d / "multi.npz", d / "run"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(out), str(ckpt)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(out)), ckpt


def test_run_layout():
    dev = jax.devices()[:1]
    assert run_layout(7, dev)[0].padded == 7 and run_layout(7, dev)[0].num_groups == 1
    lay = run_layout(7, dev, runs_per_device=3)[0]
    assert (lay.runs_per_device, lay.num_groups, lay.padded) == (3, 3, 9)
    fake4 = dev * 4  # the arithmetic only; no mesh is used
    lay = run_layout(3, fake4)[0]
    assert (lay.runs_per_device, lay.num_groups, lay.padded) == (1, 1, 4)
    lay = run_layout(9, fake4, runs_per_device=2)[0]
    assert (lay.runs_per_device, lay.num_groups, lay.padded) == (2, 2, 16)


def test_fixed_runs_per_device_is_bit_identical_on_one_and_four_devices(four_devices):
    multi, _ = four_devices
    assert int(multi["fixed:n_devices"]) == 4  # the run axis really was spread over the devices
    assert int(multi["fixed:runs_per_device"]) == 2
    cfg = fixed_config()
    single = run_sweep(cfg, tiny_data(cfg), progress=False)
    assert single.num_devices == 1 and single.runs_per_device == 2
    one, four = result_arrays(single), split(multi, "fixed")
    # NC1 of the in-loop NC report (run_sweep records it with record_every) is computed from an
    # SVD and agrees to float32 rounding only (1 ulp seen); the training itself and every other
    # record are bit-identical
    np.testing.assert_allclose(one.pop("records/nc1"), four.pop("records/nc1"), rtol=1e-6)
    assert_bit_identical(one, four)


def test_automatic_layout_agrees_to_rounding(four_devices):
    multi, _ = four_devices
    assert int(multi["auto:n_devices"]) == 4 and int(multi["auto:runs_per_device"]) == 1
    cfg = auto_config()
    single = result_arrays(run_sweep(cfg, tiny_data(cfg), progress=False))
    multi = split(multi, "auto")
    kernel = next(k for k in single if k.startswith("state") and "head" in k and "kernel" in k)
    for k in ("final_loss", "history/loss", kernel):
        np.testing.assert_allclose(multi[k], single[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_checkpoint_from_four_devices_resumes_bit_identically_on_one(four_devices, tmp_path):
    multi, ckpt = four_devices
    cfg = auto_config()
    # the stored layout (1 run per device) is kept, so the resume continues the same program
    resumed = run_sweep(cfg, out_dir=ckpt, data=tiny_data(cfg), progress=False)
    assert resumed.num_devices == 1 and resumed.runs_per_device == 1
    assert_bit_identical(result_arrays(resumed), split(multi, "auto"))


def test_mapped_runs_are_bit_identical_on_one_and_four_devices(four_devices):
    multi, _ = four_devices
    assert int(multi["mapped:n_devices"]) == 4
    cfg = auto_config().replace(vmap_runs=1)
    single = run_sweep(cfg, tiny_data(cfg), progress=False)
    assert single.num_devices == 1
    assert_bit_identical(result_arrays(single), split(multi, "mapped"))
