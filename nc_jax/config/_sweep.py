"""`SweepConfig`: a grid of runs, its sections, per-group weight decays, and named presets."""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Tuple

import numpy as np

from nc_jax.config._base import MAX_SEED, ConfigError, _finite_number, _int_at_least, _require
from nc_jax.config._sections import DataConfig, LossConfig, ModelConfig, OptimConfig


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A grid of runs (weight decays x seeds) trained as one vmapped, jitted program.

    `record_every` > 0 evaluates the NC report on the whole training set every that many epochs,
    inside the compiled loop. `checkpoint_every` > 0 saves the full sweep state that often when an
    output directory is given. `runs_per_device` > 0 fixes how many runs each device computes in
    one compiled call (0 = all runs in one call, spread evenly): results are bit-identical on any
    number of devices for the same value (see `nc_jax.training`). `vmap_runs` > 0 trains the runs
    of a call with `lax.map`, that many at a time vmapped (1 = one run after another inside the
    program: the fast choice for convolutional models on CPU; 0 = all vmapped, see
    `nc_jax.training.map_runs`).
    """

    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    data: DataConfig = DataConfig()
    loss: LossConfig = LossConfig()
    weight_decays: Tuple[float, ...] = (1e-4, 3e-4, 5e-4, 1e-3, 3e-3, 7e-3, 1e-2)
    seeds: Tuple[int, ...] = (0,)
    record_every: int = 0
    checkpoint_every: int = 0
    runs_per_device: int = 0
    vmap_runs: int = 0

    def __post_init__(self):
        for name, cls in SECTIONS:
            _require(isinstance(getattr(self, name), cls),
                     f"{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")
        for name in ("weight_decays", "seeds"):
            _require(not isinstance(getattr(self, name), (str, bytes)),
                     f"{name} must be a sequence of numbers, got {getattr(self, name)!r}")
        groups = self.optim.weight_decay_groups
        wds = [_weight_decay(f"weight_decays[{i}]", w, groups)
               for i, w in enumerate(self.weight_decays)]
        object.__setattr__(self, "weight_decays", tuple(wds))
        object.__setattr__(self, "seeds", tuple(self.seeds))
        _require(len(self.weight_decays) >= 1, "weight_decays must not be empty")
        _require(len(self.seeds) >= 1, "seeds must not be empty")
        for i, s in enumerate(self.seeds):
            _int_at_least(f"seeds[{i}]", s, 0)
            # seeds become uint32 PRNG keys: 2**32 would silently alias seed 0
            _require(s <= MAX_SEED, f"seeds[{i}] must be <= {MAX_SEED}, got {s!r}")
        _require(len(set(self.seeds)) == len(self.seeds), f"seeds must be distinct, got {self.seeds}")
        _int_at_least("record_every", self.record_every, 0)
        _int_at_least("checkpoint_every", self.checkpoint_every, 0)
        _int_at_least("runs_per_device", self.runs_per_device, 0)
        _int_at_least("vmap_runs", self.vmap_runs, 0)
        if self.data.kind in ("teacher", "conic"):
            _require(self.optim.batch_size <= self.data.n,
                     f"optim.batch_size ({self.optim.batch_size}) must be <= data.n ({self.data.n})")

    @property
    def num_runs(self) -> int:
        return len(self.weight_decays) * len(self.seeds)

    def weight_decay_matrix(self):
        """The weight decays as a float64 array: (W,) without decay groups, (W, G) with them,
        column g the decay of group `optim.weight_decay_groups[g]` (a number entry decays every
        group alike)."""
        groups = self.optim.weight_decay_groups
        if len(groups) == 1:
            return np.asarray(self.weight_decays, np.float64)
        return np.asarray([[w[g] for g in groups] if isinstance(w, dict) else [w] * len(groups)
                           for w in self.weight_decays], np.float64)

    def replace(self, **changes) -> "SweepConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SweepConfig":
        """Inverse of `to_dict`. Missing fields take their defaults; an unknown field raises a
        ConfigError naming it (a typo in a config file must not be silently ignored)."""
        _require(isinstance(d, dict), f"a SweepConfig dict is required, got {type(d).__name__}")
        d = dict(d)
        sections = {}
        for name, sub in SECTIONS:
            part = d.pop(name, {})
            _require(isinstance(part, dict), f"{name} must be a dict, got {type(part).__name__}")
            _check_fields(sub, part, prefix=f"{name}.")
            sections[name] = dict(part)
        _check_fields(cls, d, prefix="", skip=tuple(n for n, _ in SECTIONS))
        optim = sections["optim"]
        for name in ("lr_decay_epochs", "decay_groups"):
            if isinstance(optim.get(name), list):
                optim[name] = tuple(optim[name])
        for name in ("weight_decays", "seeds"):
            if name in d:
                v = d[name]
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    v = (v,)  # one value is a grid of one
                _require(isinstance(v, (list, tuple)),
                         f"{name} must be a list of numbers, got {v!r}"
                         + (" (a string: write the numbers without quotes)"
                            if isinstance(v, str) else ""))
                d[name] = tuple(v)
        return cls(**{n: sub(**sections[n]) for n, sub in SECTIONS}, **d)


SECTIONS = (("model", ModelConfig), ("optim", OptimConfig), ("data", DataConfig),
            ("loss", LossConfig))


def _weight_decay(name: str, w: Any, groups: Tuple[str, ...]):
    """One `weight_decays` entry, validated: a number >= 0 (every group), or with decay groups a
    dict {group: number >= 0} naming every group of `groups` ("rest" included)."""
    if isinstance(w, dict):
        _require(len(groups) > 1, f"{name} is a dict of per-group decays, but optim.decay_groups "
                                  f"is empty: name the groups, e.g. optim.decay_groups="
                                  f"[last_bn,head], or give one number")
        _require(set(w) == set(groups), f"{name} must give a decay for exactly the groups "
                                        f"{list(groups)}, got {sorted(w)}")
        return {g: _weight_decay(f"{name}.{g}", w[g], ()) for g in groups}
    # float() would accept True as 1.0 and "1e-4" as a number, and turn other strings into a
    # bare ValueError that names no field
    try:
        if isinstance(w, (bool, str, bytes)):
            raise TypeError
        v = float(w)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {w!r}") from None
    _finite_number(name, v, nonneg=True)
    return v


def decay_grid(**values) -> Tuple[dict, ...]:
    """Every combination of per-group weight decays, as `SweepConfig.weight_decays` entries:
    `decay_grid(rest=[5e-4], last_bn=[1e-4, 1e-3], head=[1e-4, 1e-3])` gives 4 dicts."""
    names = list(values)
    return tuple(dict(zip(names, combo)) for combo in itertools.product(*values.values()))


#: Fields added after results and checkpoints were first written, with the value a stored
#: config that lacks them had: such a config equals one that has them at this value.
IMPLICIT_DEFAULTS = {
    "runs_per_device": 0, "vmap_runs": 0, "data.test_size": 0, "optim.name": "sgd",
    "optim.schedule": "step", "optim.warmup_epochs": 0, "optim.b1": 0.9, "optim.b2": 0.999,
    "optim.eps": 1e-8, "optim.decay_groups": [],
}


def canonical_dict(d: dict) -> dict:
    """A config dict (`SweepConfig.to_dict()`, or one stored in results or checkpoints) without
    the `IMPLICIT_DEFAULTS` fields that are at their implicit value, so that configs written
    before a field existed compare equal to today's."""
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
    for dotted, default in IMPLICIT_DEFAULTS.items():
        *parent, key = dotted.split(".")
        node = d.get(parent[0]) if parent else d
        if isinstance(node, dict) and key in node:
            value = list(node[key]) if isinstance(node[key], tuple) else node[key]
            if value == default:
                del node[key]
    return d


def _check_fields(cls, d: dict, prefix: str, skip: Tuple[str, ...] = ()) -> None:
    known = [f.name for f in dataclasses.fields(cls) if f.name not in skip]
    unknown = sorted(k for k in d if k not in known)
    _require(not unknown, f"unknown config field(s) {[prefix + k for k in unknown]}; "
                          f"known: {[prefix + k for k in known]}")


THESIS_WEIGHT_DECAYS = (1e-4, 3e-4, 5e-4, 1e-3, 3e-3, 7e-3, 1e-2)

PRESETS = {
    # A weight-decay sweep small enough to print its table in about a minute on a 2-core CPU.
    "demo": SweepConfig(
        model=ModelConfig(depth=6, width=64, bn="affine"),
        optim=OptimConfig(epochs=30),
        data=DataConfig(n=2000),
        weight_decays=(1e-4, 1e-3, 5e-3),
        seeds=(0,),
    ),
    # The thesis protocol of Section 3.1.1 for one BN variant (Figure 3.1).
    "paper": SweepConfig(
        model=ModelConfig(depth=6, width=256, bn="affine"),
        optim=OptimConfig(epochs=300),
        data=DataConfig(n=10000),
        weight_decays=THESIS_WEIGHT_DECAYS,
        seeds=(0, 1, 2),
    ),
}


def preset(name: str) -> SweepConfig:
    """Return a named preset; unknown names raise a ConfigError listing the known ones."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}")
    return PRESETS[name]
