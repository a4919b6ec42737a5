"""A run's optimizer and the grid: which hyperparameters nc-jax sets per run, and the parameter
groups that get their own weight decay.

nc-jax's own optimizer (`make_optimizer`) has the learning rate and the weight decay injected
(`optax.inject_hyperparams`), and every run gets its own values of both. A user's optimizer is
used as given: its learning rate (and schedule) is never replaced, unless per-run learning
rates are passed explicitly. The grid's weight decay enters it in one of two ways:

- it injects a `weight_decay` hyperparameter (e.g. `optax.inject_hyperparams(optax.adamw)(
  learning_rate=1e-3, weight_decay=0.0)`): each run's weight decay is set there;
- it does not (e.g. `optax.adam(1e-3)`): the decay is added in front of it as an L2 gradient
  term, `chain(add_decayed_weights(wd), tx)` (coupled decay, like `torch.optim.Adam(
  weight_decay=wd)`); a weight decay inside the user's own chain stays as it is, on top.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import optax

from nc_jax._naming import callable_name
from nc_jax.training._optim import add_group_decayed_weights


def param_groups(model, groups: Sequence[str]) -> Callable:
    """params -> pytree of group indices (0: "rest", i: `groups[i - 1]`) like params.

    "head": the top-level entry named `head` (the classifier of the default rule); "last_bn":
    the top-level entry named by the model's `last_bn_name` (the BN layer whose output is the
    feature h; `nc_jax.models.MLP` names it)."""
    keys = []
    for g in groups:
        if g == "head":
            keys.append("head")
        elif g == "last_bn":
            name = getattr(model, "last_bn_name", None)
            if name is None:
                raise ValueError(f"decay group 'last_bn': model {type(model).__name__} does not "
                                 f"name its last BN layer (attribute last_bn_name), or has none")
            keys.append(name)
        else:
            raise ValueError(f"unknown decay group {g!r}; known: last_bn, head")

    def fn(params):
        for g, k in zip(groups, keys):
            if k not in params:
                raise ValueError(f"decay group {g!r}: no top-level parameter entry {k!r} (found "
                                 f"{sorted(params)})")
        return {name: jax.tree.map(lambda _: keys.index(name) + 1 if name in keys else 0, sub)
                for name, sub in params.items()}

    return fn


@functools.partial(optax.inject_hyperparams, static_args=("inner", "groups"))
def grid_weight_decay(weight_decay, inner: optax.GradientTransformation,
                      groups: Optional[Callable] = None) -> optax.GradientTransformation:
    """chain(add decayed weights (wd, per group with `groups`), inner): the grid's weight decay
    in front of a user's transformation that has no `weight_decay` of its own."""
    decay = (add_group_decayed_weights(weight_decay, groups) if groups is not None
             else optax.add_decayed_weights(weight_decay))
    return optax.chain(decay, inner)


def injected(tx: optax.GradientTransformation, params) -> Tuple[str, ...]:
    """The hyperparameters `tx` injects at its top level (without computing: eval_shape)."""
    state = jax.eval_shape(tx.init, params)
    return tuple(sorted(getattr(state, "hyperparams", None) or ()))


def custom_tx(tx, params, n_groups: int, groups: Optional[Callable]
              ) -> Tuple[optax.GradientTransformation, bool]:
    """(the transformation to train with, whether it injects a learning rate) for a user's `tx`
    (see the module docstring); `params` may be shapes."""
    if not isinstance(tx, optax.GradientTransformation) and not (
            hasattr(tx, "init") and hasattr(tx, "update")):
        raise TypeError(f"tx must be an optax.GradientTransformation, got {type(tx).__name__}")
    names = injected(tx, params)
    if "weight_decay" in names:
        if groups is not None:
            raise ValueError("optim.decay_groups with a custom tx: the tx's own weight_decay "
                             "hyperparameter is one number; pass a tx without weight_decay "
                             "(nc-jax then adds the per-group decay in front of it) or no "
                             "decay_groups")
        return tx, "learning_rate" in names
    wd0 = jnp.zeros((n_groups,), jnp.float32) if groups is not None else 0.0
    return grid_weight_decay(weight_decay=wd0, inner=tx, groups=groups), False


def describe(tx) -> str:
    """A user's transformation by the function that built it (`module.qualname` of its update)."""
    return "custom:" + str(callable_name(getattr(tx, "update", tx)))
