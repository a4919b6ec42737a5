"""How K runs map onto D devices (see `nc_jax.sweep`): the run layout and the device mesh.

XLA's float32 rounding depends on the batch of runs a device computes in one call, never on
which device or how many: a layout with a fixed number of runs per device therefore gives
bit-identical results on any number of devices.
"""
from __future__ import annotations

import dataclasses
import math
from typing import List

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
