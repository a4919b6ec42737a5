"""Frozen, validated configuration dataclasses and named presets.

A `SweepConfig` holds one grid of runs: its `ModelConfig`, `OptimConfig`, `DataConfig` and
`LossConfig` sections, the weight decays (numbers, or dicts of per-group decays) and the seeds.
Every field is checked at construction; `SweepConfig.from_dict` names an unknown field.
"""
from nc_jax.config._base import (DATA_KINDS, DECAY_GROUPS, DECAY_MASKS, MAX_SEED,
                                 MIN_TRAIN_PER_CLASS, OPTIMIZERS, SCHEDULES, WEIGHT_DECAY_MODES,
                                 ConfigError)
from nc_jax.config._sections import DataConfig, LossConfig, ModelConfig, OptimConfig
from nc_jax.config._sweep import (IMPLICIT_DEFAULTS, PRESETS, SECTIONS, THESIS_WEIGHT_DECAYS,
                                  SweepConfig, canonical_dict, decay_grid, preset)
from nc_jax.models import BN_VARIANTS

__all__ = [
    "BN_VARIANTS", "ConfigError", "DATA_KINDS", "DECAY_GROUPS", "DECAY_MASKS", "DataConfig",
    "IMPLICIT_DEFAULTS", "LossConfig", "MAX_SEED", "MIN_TRAIN_PER_CLASS", "ModelConfig",
    "OPTIMIZERS", "OptimConfig", "PRESETS", "SCHEDULES", "SECTIONS", "SweepConfig",
    "THESIS_WEIGHT_DECAYS", "WEIGHT_DECAY_MODES", "canonical_dict", "decay_grid", "preset",
]
