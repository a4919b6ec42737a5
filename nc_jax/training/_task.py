"""A `Task` is what one run trains: a model, where its classifier is, a loss and an optimizer.

Every training and analysis function takes one `Task` instead of `model=` / `tx=` / loss
threaded through each layer. It is built once, outside any `vmap`, from a config (big_vision
style: model and loss chosen by name) or from a user's own Flax module and loss function.

The model protocol (what `Task` needs of a module):

- a `flax.linen.Module` with `__call__(x, train: bool = False, return_features: bool = False)`;
- x is (B, ...): flat vectors (B, d) or images (B, H, W, C), whatever the module accepts;
- it returns logits (B, C), or with `return_features=True` the pair `(logits, features)`,
  `features` a tuple of (B, ...) arrays in layer order whose last entry is the penultimate
  feature h that the classifier reads (logits = h W^T + b);
- BN statistics, if any, live in the `batch_stats` collection;
- the classifier (W (C, d), b (C,) or None) is found by `classifier(params)`; the default rule
  (`nc_jax.models.head_classifier`) takes the Dense layer named `head`;
- optionally, `last_bn(params, prev)` names the BN layer whose output is h (see
  `nc_jax.models.MLP.last_bn`), for the report of Proposition 2.2.1.

A Flax NNX module enters through `nc_jax.models`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nc_jax.config import SweepConfig
from nc_jax.data import make_dataset
from nc_jax.losses import Loss, get_loss
from nc_jax._naming import callable_name
from nc_jax.models import head_classifier, make_model
from nc_jax.training._optim import make_optimizer, steps_per_epoch
from nc_jax.training._tx import custom_tx, param_groups
from nc_jax.training._tx import describe as describe_tx

Classifier = Callable[[Any], Tuple[jax.Array, Optional[jax.Array]]]


def _describe(v: Any) -> Any:
    """A module field as JSON: numbers, strings and tuples as they are, anything else by repr."""
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, (tuple, list)):
        return [_describe(e) for e in v]
    return repr(v)


def model_identity(model: nn.Module, name: Optional[str] = None, *,
                   registered: bool = False) -> dict:
    """What identifies a model's numbers: its name and its dataclass fields (JSON-able), plus,
    for a user's module that is not in the model registry, its `module.qualname`.

    A registered model is keyed on its registered name only, so moving nc-jax's (or a user's
    registered) model class to another module never invalidates a checkpoint. Two runs of the
    same model with other widths or BN variants differ in the fields, so a checkpoint is only
    resumed by the model that wrote it."""
    fields = {f.name: _describe(getattr(model, f.name)) for f in dataclasses.fields(model)
              if f.name not in ("parent", "name")}
    cls = type(model)
    out = {"name": name or cls.__name__, "fields": fields}
    if not registered:
        out["class"] = f"{cls.__module__}.{cls.__qualname__}"
    return out


def init_variables(model: nn.Module, key: jax.Array, sample_shape: Sequence[int]
                   ) -> Tuple[Any, Any]:
    """(params, batch_stats) of a fresh `model` for inputs of per-sample shape `sample_shape`."""
    variables = model.init(key, jnp.zeros((2, *sample_shape), jnp.float32), train=False)
    return variables["params"], variables.get("batch_stats", {})


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """model + classifier rule + loss + optimizer of one run (the run axis is added by vmap).

    `model_name` and `loss_name` identify the run in results and checkpoints ("mlp", "ce", or a
    user module's class name and a user loss' qualified name). `optimizer` names the
    transformation ("sgd", "adamw", ... from the config, or "custom:..." for a user's `tx`);
    `tx_injects_lr`: whether the optimizer state holds a learning rate that a run can set (always
    for nc-jax's own; a user's is only set when per-run learning rates are passed explicitly).
    `rng_streams`: the named
    PRNG streams the model gets in train mode (dropout, stochastic depth, ...), each run's own,
    derived from its seed.
    """

    model: nn.Module
    tx: optax.GradientTransformation
    loss: Loss
    num_classes: int
    classifier: Classifier = head_classifier
    model_name: str = ""
    loss_name: str = "ce"
    model_registered: bool = False
    optimizer: str = "sgd"
    tx_injects_lr: bool = True
    rng_streams: Tuple[str, ...] = ("dropout",)

    # ---- pure functions of one run's variables -------------------------------------------
    def variables(self, params, batch_stats) -> dict:
        return {"params": params, "batch_stats": batch_stats}

    def init_variables(self, key: jax.Array, sample_shape: Sequence[int]) -> Tuple[Any, Any]:
        """(params, batch_stats) of a fresh model for inputs of per-sample shape `sample_shape`."""
        return init_variables(self.model, key, sample_shape)

    def rngs(self, key: Optional[jax.Array]) -> dict:
        """{stream: key} for the model's train-mode randomness, split from `key` (one per
        `rng_streams` name); flax ignores streams a model does not use."""
        if key is None or not self.rng_streams:
            return {}
        return {name: jax.random.fold_in(key, i) for i, name in enumerate(self.rng_streams)}

    def apply_train(self, params, batch_stats, x, key: Optional[jax.Array] = None
                    ) -> Tuple[jax.Array, Any]:
        """Train-mode logits (B, C) (BN on batch statistics) and the updated batch_stats;
        `key` seeds the model's `rng_streams` (dropout)."""
        logits, updates = self.model.apply(self.variables(params, batch_stats), x, train=True,
                                           mutable=["batch_stats"], rngs=self.rngs(key))
        return logits, updates.get("batch_stats", {})

    def features(self, params, batch_stats, x, train: bool = False):
        """(logits (N, C), features tuple) on x; `train=False` uses the BN running statistics
        (eval mode, what the thesis measures); `train=True` normalizes with x's own statistics
        (running statistics untouched)."""
        v = self.variables(params, batch_stats)
        if train:
            # a fixed key: train-mode features of a model with dropout are one fixed draw
            out, _ = self.model.apply(v, x, train=True, return_features=True,
                                      mutable=["batch_stats"], rngs=self.rngs(jax.random.key(0)))
        else:
            out = self.model.apply(v, x, train=False, return_features=True)
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], (tuple, list))):
            raise TypeError(f"{self.model_name}: with return_features=True the model must return "
                            f"(logits, features tuple), got {type(out).__name__}")
        return out[0], tuple(out[1])

    @property
    def custom_tx(self) -> bool:
        """Whether the optimizer is a user's (its learning rate is then never replaced)."""
        return self.optimizer.startswith("custom")

    @property
    def has_last_bn(self) -> bool:
        return callable(getattr(self.model, "last_bn", None))

    def last_bn(self, params, prev) -> Optional[dict]:
        """The model's last BN layer (scale, bias, input; see `nc_jax.models.MLP.last_bn`) when
        the model provides `last_bn(params, prev)`, else None: the optional part of the protocol
        that Proposition 2.2.1's report needs."""
        rule = getattr(self.model, "last_bn", None)
        return None if rule is None else rule(params, prev)

    def weights(self, params) -> Tuple[jax.Array, Optional[jax.Array]]:
        """The classifier (W (C, d), b (C,) or None)."""
        return self.classifier(params)

    # ---- identity and validation ---------------------------------------------------------
    def identity(self) -> dict:
        out = {"model": model_identity(self.model, self.model_name,
                                       registered=self.model_registered),
               "loss": self.loss_name, "classifier": callable_name(self.classifier)}
        if self.custom_tx:  # nc-jax's own optimizer is described by the config
            out["optimizer"] = self.optimizer
        return out

    def check(self, sample_shape: Sequence[int]) -> None:
        """Trace the model once (no FLOPs) and check the protocol, so a module that breaks it
        fails here with a message, not deep inside a vmapped scan."""
        key = jax.random.key(0)
        try:
            params, stats = jax.eval_shape(lambda k: self.init_variables(k, sample_shape), key)
        except Exception as e:
            raise ValueError(f"model {self.model_name!r} cannot be initialised on inputs of "
                             f"per-sample shape {tuple(sample_shape)}: {e}") from e
        x = jax.ShapeDtypeStruct((3, *sample_shape), jnp.float32)
        logits, feats = jax.eval_shape(lambda p, s, x: self.features(p, s, x), params, stats, x)
        if logits.shape != (3, self.num_classes):
            raise ValueError(f"model {self.model_name!r} returns logits of shape {logits.shape} "
                             f"for a batch of 3; expected (3, {self.num_classes}) (the data has "
                             f"{self.num_classes} classes)")
        if not feats or any(f.shape[0] != 3 for f in feats):
            raise ValueError(f"model {self.model_name!r}: features must be a non-empty tuple of "
                             f"(B, ...) arrays, got shapes {[f.shape for f in feats]}")
        W, b = jax.eval_shape(self.weights, params)
        d = int(np.prod(feats[-1].shape[1:]))
        if W.shape != (self.num_classes, d) or (b is not None and b.shape != (self.num_classes,)):
            raise ValueError(f"model {self.model_name!r}: the classifier gives W {W.shape} and b "
                             f"{None if b is None else b.shape}; expected W ({self.num_classes}, "
                             f"{d}) matching the last feature and b ({self.num_classes},) or None")


def make_task(cfg: SweepConfig, data, *, model: Optional[nn.Module] = None, loss: Union[str, Loss, None] = None,
              classifier: Optional[Classifier] = None,
              tx: Optional[optax.GradientTransformation] = None) -> Task:
    """The Task of a config on `data` (its number of classes and samples fix the head and the
    LR schedule's steps): `model` (default `make_model(cfg.model)`), `loss` (a name, a callable
    or None = cfg.loss), `classifier` (default: the Dense named `head`) and `tx` (default: the
    optimizer cfg.optim names). A custom `tx` is any `optax.GradientTransformation`, used as
    given: its learning rate is never replaced, and the grid's weight decay is set in its
    injected `weight_decay` or added in front of it (`nc_jax.training._tx`)."""
    num_classes = data.num_classes
    if model is None:
        model = make_model(cfg.model, num_classes)
        name, registered = cfg.model.name, True
    else:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a flax.linen.Module (wrap an NNX module with "
                            f"nc_jax.models.from_nnx), got {type(model).__name__}")
        name, registered = type(model).__name__, False
    loss_fn, lname = get_loss(loss, cfg.loss)
    groups = param_groups(model, cfg.optim.decay_groups) if cfg.optim.decay_groups else None
    if tx is None:
        tx = make_optimizer(cfg.optim, steps_per_epoch(data.n, cfg.optim.batch_size), groups)
        optimizer, injects_lr = cfg.optim.name, True
    else:
        shapes = jax.eval_shape(lambda k: init_variables(model, k, data.sample_shape),
                                jax.random.key(0))[0]
        optimizer = describe_tx(tx)
        tx, injects_lr = custom_tx(tx, shapes, len(cfg.optim.weight_decay_groups), groups)
    return Task(model=model, tx=tx, loss=loss_fn, num_classes=int(num_classes),
                classifier=classifier or head_classifier, model_name=name, loss_name=lname,
                model_registered=registered, optimizer=optimizer, tx_injects_lr=injects_lr)


def data_and_task(cfg: SweepConfig, data=None, **task_kwargs) -> Tuple[Any, Task]:
    """(data, task) of a run: `data` (default: made from cfg.data) and `make_task(cfg, data,
    **task_kwargs)` on it; the one place a run's data and task are built."""
    if data is None:
        data = make_dataset(cfg.data)
    return data, make_task(cfg, data, **task_kwargs)
