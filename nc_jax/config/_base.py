"""Shared pieces of the configs: names of the allowed values, the error type and validators.

Every field is checked at construction, so a bad value fails at once with a message that names
the field and the allowed range, instead of surfacing later as a JAX trace or a NaN.
"""
from __future__ import annotations

import math
from typing import Any

DATA_KINDS = ("teacher", "conic", "npz", "mnist")
WEIGHT_DECAY_MODES = ("coupled", "decoupled")
DECAY_MASKS = ("all", "kernels")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("step", "cosine", "constant")
#: Parameter groups that may get their own weight decay (`OptimConfig.decay_groups`); every
#: parameter outside them is in the group "rest".
DECAY_GROUPS = ("last_bn", "head")


#: Fewest training samples a class may keep after the hold-out (`DataConfig.test_size`): with
#: one sample a class has no within-class spread (NC1, min intra are trivial), so two is the
#: least that measures anything.
MIN_TRAIN_PER_CLASS = 2

#: Seeds are turned into PRNG keys through uint32.
MAX_SEED = 2 ** 32 - 1


class ConfigError(ValueError):
    """A configuration value is out of its allowed range."""


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _finite_number(name: str, value: Any, *, positive: bool = False, nonneg: bool = False) -> None:
    _require(isinstance(value, (int, float)) and not isinstance(value, bool),
             f"{name} must be a number, got {value!r}")
    _require(math.isfinite(value), f"{name} must be finite, got {value!r}")
    if positive:
        _require(value > 0, f"{name} must be > 0, got {value!r}")
    if nonneg:
        _require(value >= 0, f"{name} must be >= 0, got {value!r}")


def _int_at_least(name: str, value: Any, low: int) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool),
             f"{name} must be an integer, got {value!r}")
    _require(value >= low, f"{name} must be >= {low}, got {value!r}")


