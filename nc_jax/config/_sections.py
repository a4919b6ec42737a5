"""The sections of a `SweepConfig`: model, loss, data and optimizer, frozen and validated.

Every field is checked at construction, so a bad value fails at once with a message that names
the field and the allowed range, instead of surfacing later as a JAX trace or a NaN.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import numpy as np

from nc_jax.config._base import (DATA_KINDS, DECAY_GROUPS, DECAY_MASKS, MAX_SEED,
                                 MIN_TRAIN_PER_CLASS,
                                 OPTIMIZERS, SCHEDULES, WEIGHT_DECAY_MODES, _finite_number,
                                 _int_at_least, _require)
from nc_jax.losses import DEFAULT_SMOOTHING, known_losses
from nc_jax.models import BN_VARIANTS, known_models


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
        # the data seed becomes a uint32 PRNG key: 2**32 would silently alias seed 0
        _require(self.seed <= MAX_SEED, f"data.seed must be <= {MAX_SEED}, got {self.seed!r}")
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
    """The optimizer by name, its learning-rate schedule, and weight decay inside the optax chain
    (never in the loss).

    `name`: "sgd" (momentum `momentum`; the thesis'), "adam" (weight decay as an L2 gradient
    term before the Adam scaling, like `torch.optim.Adam(weight_decay=...)`) or "adamw" (decay
    decoupled from the Adam scaling and multiplied by the learning rate, Loshchilov & Hutter
    2019, `optax.adamw`); `b1`, `b2`, `eps` are Adam's. `schedule`: "step" (x
    `lr_decay_factor` at `lr_decay_epochs`; None means two decays, at 1/3 and 2/3 of training,
    Papyan et al. 2020, the number of decays being lost in the thesis text), "cosine" (to 0 at
    the last step) or "constant"; `warmup_epochs` > 0 ramps the learning rate linearly from 0
    first (`optax.warmup_cosine_decay_schedule`'s convention). `weight_decay_mode` is SGD's
    (coupled or decoupled). `decay_groups` (names from `DECAY_GROUPS`) gives those parameter
    groups their own weight decay per run (`SweepConfig.weight_decays` entries are then dicts).
    """

    lr: float = 0.0679
    momentum: float = 0.9
    epochs: int = 300
    batch_size: int = 128
    lr_decay_epochs: Optional[Tuple[int, ...]] = None
    lr_decay_factor: float = 0.1
    weight_decay_mode: str = "coupled"
    decay_mask: str = "all"
    name: str = "sgd"
    schedule: str = "step"
    warmup_epochs: int = 0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    decay_groups: Tuple[str, ...] = ()

    def __post_init__(self):
        _finite_number("optim.lr", self.lr, positive=True)
        _require(float(np.float32(self.lr)) > 0, f"optim.lr ({self.lr!r}) is 0 in float32, the "
                                                 f"precision training runs in: nothing would train")
        _require(self.name in OPTIMIZERS,
                 f"optim.name must be one of {OPTIMIZERS}, got {self.name!r}")
        _require(self.schedule in SCHEDULES,
                 f"optim.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        _int_at_least("optim.warmup_epochs", self.warmup_epochs, 0)
        for name in ("b1", "b2"):
            v = getattr(self, name)
            _finite_number(f"optim.{name}", v, nonneg=True)
            _require(v < 1, f"optim.{name} must be < 1, got {v!r}")
        _finite_number("optim.eps", self.eps, positive=True)
        if self.name == "sgd":
            _require((self.b1, self.b2, self.eps) == (0.9, 0.999, 1e-8),
                     "optim.b1 / b2 / eps are Adam's: set optim.name=adam or adamw")
        else:
            _require(self.weight_decay_mode == "coupled",
                     f"optim.weight_decay_mode is SGD's; for decoupled weight decay with Adam "
                     f"use optim.name=adamw (got name={self.name!r}, "
                     f"weight_decay_mode={self.weight_decay_mode!r})")
        _require(isinstance(self.decay_groups, (list, tuple)) and
                 all(g in DECAY_GROUPS for g in self.decay_groups) and
                 len(set(self.decay_groups)) == len(self.decay_groups),
                 f"optim.decay_groups must be distinct names from {DECAY_GROUPS}, got "
                 f"{self.decay_groups!r}")
        object.__setattr__(self, "decay_groups", tuple(self.decay_groups))
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
            _require(self.schedule == "step", f"optim.lr_decay_epochs belongs to the step "
                                              f"schedule, not to {self.schedule!r}")
        _require(self.warmup_epochs < self.epochs,
                 f"optim.warmup_epochs ({self.warmup_epochs}) must be < optim.epochs "
                 f"({self.epochs})")

    @property
    def weight_decay_groups(self) -> Tuple[str, ...]:
        """The groups a run's weight decay has one value for: ("rest", *decay_groups)."""
        return ("rest", *self.decay_groups)

    @property
    def decay_epochs(self) -> Tuple[int, ...]:
        if self.lr_decay_epochs is not None:
            return self.lr_decay_epochs
        return tuple(e for e in (self.epochs // 3, (2 * self.epochs) // 3) if e >= 1)


