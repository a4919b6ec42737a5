"""Frozen, validated configuration dataclasses and named presets.

Every field is checked at construction, so a bad value fails at once with a message that names
the field and the allowed range, instead of surfacing later as a JAX trace or a NaN.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Tuple

from nc_jax.losses import DEFAULT_SMOOTHING, known_losses
from nc_jax.models import BN_VARIANTS, known_models

DATA_KINDS = ("teacher", "conic", "npz", "mnist")
WEIGHT_DECAY_MODES = ("coupled", "decoupled")
DECAY_MASKS = ("all", "kernels")


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


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A model by name (`nc_jax.models.make_model`), with BN after every hidden block.

    - "mlp": Definition 3.2.1, `depth` Dense layers (depth - 1 hidden blocks) of `width` units;
    - "mlp_peeled": the same with the last BN scale-only and no head bias (Theorem 2.3.1's model);
    - "cnn": `depth` conv-ReLU-BN blocks of `width` channels, global average pool, Dense head;
    - "resnet": CIFAR-style ResNet-`depth` (depth = 6n + 2: n basic blocks in each of 3 stages of
      `width`, 2 `width`, 4 `width` channels), BN in every block, global average pool, head.
    `bn` is "affine" (trainable gamma, beta), "plain" (no BN parameters) or "none" (no BN).
    """

    depth: int = 6
    width: int = 256
    bn: str = "affine"
    name: str = "mlp"

    def __post_init__(self):
        _require(isinstance(self.name, str), f"model.name must be a string, got {self.name!r}")
        _require(self.name in known_models(),
                 f"model.name must be one of {known_models()}, got {self.name!r}")
        min_depth = {"mlp": 2, "mlp_peeled": 2, "cnn": 1, "resnet": 8}.get(self.name, 1)
        _int_at_least("model.depth", self.depth, min_depth)
        if self.name == "resnet":
            _require((self.depth - 2) % 6 == 0,
                     f"model.depth of a resnet must be 6n + 2 (8, 14, 20, ...), got {self.depth}")
        _int_at_least("model.width", self.width, 1)
        _require(self.bn in BN_VARIANTS, f"model.bn must be one of {BN_VARIANTS}, got {self.bn!r}")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The training loss by name (`nc_jax.losses`): "ce" (cross-entropy, the thesis'), "mse"
    (squared error to one-hot targets, Han et al. 2022), "label_smoothing" (cross-entropy with
    targets (1 - smoothing) e_y + smoothing / C) or any name registered with
    `nc_jax.losses.register_loss` (its factory receives this config)."""

    name: str = "ce"
    smoothing: float = DEFAULT_SMOOTHING

    def __post_init__(self):
        _require(isinstance(self.name, str), f"loss.name must be a string, got {self.name!r}")
        _require(self.name in known_losses(),
                 f"loss.name must be one of {known_losses()}, got {self.name!r} (register a "
                 f"loss with nc_jax.losses.register_loss)")
        _finite_number("loss.smoothing", self.smoothing, nonneg=True)
        _require(self.smoothing < 1, f"loss.smoothing must be < 1, got {self.smoothing!r}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Training data. Defaults where the thesis is silent: n=10000, d=32, C=10, width 256.

    `test_size` > 0 holds out that many samples (test_size / C per class, drawn with a key
    derived from `seed`) from the n generated / loaded ones: training uses the other ones, the
    held-out ones are measured after training (`nc_jax.data.split_heldout`, `nc_jax.analysis`).
    """

    kind: str = "teacher"
    n: int = 10000
    dim: int = 32
    num_classes: int = 10
    teacher_depth: int = 3
    teacher_width: int = 256
    teacher_bn: str = "affine"
    seed: int = 0
    path: Optional[str] = None
    standardize: bool = False
    test_size: int = 0

    def __post_init__(self):
        _require(self.kind in DATA_KINDS, f"data.kind must be one of {DATA_KINDS}, got {self.kind!r}")
        _int_at_least("data.n", self.n, 2)
        _int_at_least("data.dim", self.dim, 1)
        _int_at_least("data.num_classes", self.num_classes, 2)
        _int_at_least("data.teacher_depth", self.teacher_depth, 1)
        _int_at_least("data.teacher_width", self.teacher_width, 1)
        _int_at_least("data.seed", self.seed, 0)
        _require(self.teacher_bn in BN_VARIANTS,
                 f"data.teacher_bn must be one of {BN_VARIANTS}, got {self.teacher_bn!r}")
        if self.kind in ("teacher", "conic"):
            _require(self.n % self.num_classes == 0,
                     f"data.n ({self.n}) must be a multiple of data.num_classes "
                     f"({self.num_classes}) for a balanced data set")
        # bool("no") is True: a string here would silently mean the opposite of what it says
        _require(isinstance(self.standardize, bool),
                 f"data.standardize must be true or false, got {self.standardize!r}")
        _require(self.path is None or isinstance(self.path, str),
                 f"data.path must be a file name, got {self.path!r}")
        if self.kind == "npz":
            _require(bool(self.path), "data.path is required when data.kind == 'npz'")
        _int_at_least("data.test_size", self.test_size, 0)
        if self.kind in ("teacher", "conic") and self.test_size:
            # n and C are known here; for mnist / npz the class counts are only known once the
            # data is loaded, and `nc_jax.data.split_heldout` checks the same two rules there
            _require(self.test_size % self.num_classes == 0,
                     f"data.test_size ({self.test_size}) must be a multiple of data.num_classes "
                     f"({self.num_classes}) for a class-balanced hold-out")
            left = (self.n - self.test_size) // self.num_classes
            _require(left >= MIN_TRAIN_PER_CLASS,
                     f"data.test_size ({self.test_size}) leaves {left} training samples per class "
                     f"of data.n ({self.n}); every class must keep at least "
                     f"{MIN_TRAIN_PER_CLASS}")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """SGD + momentum, LR step schedule, weight decay inside the optax chain (never in the loss).

    `lr_decay_epochs=None` means two decays, at 1/3 and 2/3 of training (Papyan et al. 2020; the
    number of decays is lost in the thesis text).
    """

    lr: float = 0.0679
    momentum: float = 0.9
    epochs: int = 300
    batch_size: int = 128
    lr_decay_epochs: Optional[Tuple[int, ...]] = None
    lr_decay_factor: float = 0.1
    weight_decay_mode: str = "coupled"
    decay_mask: str = "all"

    def __post_init__(self):
        _finite_number("optim.lr", self.lr, positive=True)
        _finite_number("optim.momentum", self.momentum, nonneg=True)
        _require(self.momentum < 1, f"optim.momentum must be < 1, got {self.momentum!r}")
        _int_at_least("optim.epochs", self.epochs, 1)
        _int_at_least("optim.batch_size", self.batch_size, 1)
        _finite_number("optim.lr_decay_factor", self.lr_decay_factor, positive=True)
        _require(self.weight_decay_mode in WEIGHT_DECAY_MODES,
                 f"optim.weight_decay_mode must be one of {WEIGHT_DECAY_MODES}, "
                 f"got {self.weight_decay_mode!r}")
        _require(self.decay_mask in DECAY_MASKS,
                 f"optim.decay_mask must be one of {DECAY_MASKS}, got {self.decay_mask!r}")
        if self.lr_decay_epochs is not None:
            _require(isinstance(self.lr_decay_epochs, (list, tuple)),
                     f"optim.lr_decay_epochs must be a list of epochs, got "
                     f"{self.lr_decay_epochs!r}")
            object.__setattr__(self, "lr_decay_epochs", tuple(self.lr_decay_epochs))
            for i, e in enumerate(self.lr_decay_epochs):
                _int_at_least("optim.lr_decay_epochs[i]", e, 1)
                # a decay at or after the last epoch never happens: surely not what was meant
                _require(e < self.epochs, f"optim.lr_decay_epochs[{i}] must be < optim.epochs "
                                          f"({self.epochs}), got {e}")

    @property
    def decay_epochs(self) -> Tuple[int, ...]:
        if self.lr_decay_epochs is not None:
            return self.lr_decay_epochs
        return tuple(e for e in (self.epochs // 3, (2 * self.epochs) // 3) if e >= 1)


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
        wds = []
        for i, w in enumerate(self.weight_decays):
            # float() would accept True as 1.0 and "1e-4" as a number, and turn other strings
            # into a bare ValueError that names no field
            try:
                if isinstance(w, (bool, str, bytes)):
                    raise TypeError
                wds.append(float(w))
            except (TypeError, ValueError):
                raise ConfigError(f"weight_decays[{i}] must be a number, got {w!r}") from None
        object.__setattr__(self, "weight_decays", tuple(wds))
        object.__setattr__(self, "seeds", tuple(self.seeds))
        _require(len(self.weight_decays) >= 1, "weight_decays must not be empty")
        for i, w in enumerate(self.weight_decays):
            _finite_number(f"weight_decays[{i}]", w, nonneg=True)
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
        if isinstance(optim.get("lr_decay_epochs"), list):
            optim["lr_decay_epochs"] = tuple(optim["lr_decay_epochs"])
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
