"""How K runs map onto D devices (see `nc_jax.training`): the run layout and the device mesh.

XLA's float32 rounding depends on the batch of runs a device computes in one call, never on
which device or how many: a layout with a fixed number of runs per device therefore gives
bit-identical results on any number of devices.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, List

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax.config import ConfigError

RUN_AXIS = "runs"


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """How K runs map onto D devices: G sequential compiled calls per chunk, each over
    D * B runs (B = runs_per_device on every device), K padded up to G * D * B."""

    num_runs: int
    num_devices: int
    runs_per_device: int
    num_groups: int

    @property
    def group_size(self) -> int:
        return self.num_devices * self.runs_per_device

    @property
    def padded(self) -> int:
        return self.num_groups * self.group_size

    def groups(self) -> List[slice]:
        return [slice(g * self.group_size, (g + 1) * self.group_size)
                for g in range(self.num_groups)]

    def pad(self, a):
        """Repeat the last run up to `padded` runs (copies of a real run: same seed, LR, WD)."""
        k = a.shape[0]
        if self.padded == k:
            return a
        xp = jnp if isinstance(a, jax.Array) else np
        return xp.concatenate([a, xp.repeat(a[-1:], self.padded - k, axis=0)], axis=0)


def run_layout(num_runs: int, devices=None, runs_per_device: int = 0):
    """(RunLayout, Mesh or None) for `num_runs` runs on `devices` (default: `jax.devices()`, all
    processes' devices when `jax.distributed` is initialised).

    `runs_per_device` 0 = ceil(K / D), one call per chunk. A positive value fixes the batch of
    runs each device computes, which is what makes results independent of the device count.
    """
    devices = list(devices) if devices is not None else jax.devices()
    n_dev = len(devices)
    if (not isinstance(runs_per_device, (int, np.integer)) or isinstance(runs_per_device, bool)
            or runs_per_device < 0):
        raise ConfigError(f"runs_per_device must be an integer >= 0 (0 = ceil(runs / devices)), "
                          f"got {runs_per_device!r}")
    b = int(runs_per_device) or int(math.ceil(num_runs / n_dev))
    groups = int(math.ceil(num_runs / (n_dev * b)))
    mesh = jax.sharding.Mesh(np.asarray(devices), (RUN_AXIS,)) if n_dev > 1 else None
    return RunLayout(num_runs, n_dev, b, groups), mesh


def map_runs(fn: Callable, num_shared: int, vmap_runs: int = 0, mesh=None) -> Callable:
    """`fn(state, *shared)` of one run -> the same over a leading run axis of `state` (K, ...),
    with `num_shared` arguments (the data) shared by all runs.

    `vmap_runs` 0: `jax.vmap` over all K runs, one batched program (the default: fastest for
    matmul models, whose batched GEMMs keep the cores busy). `vmap_runs` b > 0: the runs go
    through `lax.map` inside the compiled program, b at a time vmapped (b = 1: the un-batched
    single-run program, one run after another with no dispatch in between). On CPU, XLA's
    batched (grouped) convolution is several times slower than K plain ones, so conv models
    train fastest with b = 1 (`docs/performance.md`). With b = 1 every run is computed by the
    same program whatever K or the device count: its numbers equal the run trained alone.
    With a `mesh` (several devices) the map runs per device under `shard_map` on that device's
    runs, so no device gathers another's.
    """
    if not vmap_runs:
        return jax.vmap(fn, in_axes=(0,) + (None,) * num_shared)

    def mapped(states, *shared):
        return jax.lax.map(lambda s: fn(s, *shared), states,
                           batch_size=vmap_runs if vmap_runs > 1 else None)

    if mesh is None:
        return mapped
    spec = jax.sharding.PartitionSpec
    # check_vma off: the scan carries mix per-device states with the replicated data
    return jax.shard_map(mapped, mesh=mesh, in_specs=(spec(RUN_AXIS),) + (spec(),) * num_shared,
                         out_specs=spec(RUN_AXIS), check_vma=False)
