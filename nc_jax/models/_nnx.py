"""Use a Flax NNX module where the rest of nc_jax expects a linen module.

The training and sweep code treats a model as the pure functions `init(key, x)` and
`apply({"params", "batch_stats"}, x, train, return_features, mutable=["batch_stats"])`, which is
what lets it `jax.vmap` a whole grid of runs and `lax.scan` over minibatches (an NNX module
keeps its state inside the object instead). `from_nnx` wraps an NNX class into such a
linen module:

    class Net(nnx.Module):
        def __init__(self, din, width, num_classes, *, rngs: nnx.Rngs):
            self.body = nnx.Linear(din, width, rngs=rngs)
            self.bn = nnx.BatchNorm(width, momentum=0.9, use_fast_variance=False, rngs=rngs)
            self.head = nnx.Linear(width, num_classes, rngs=rngs)   # classifier: named `head`
        def __call__(self, x, train=False, return_features=False):
            h = self.bn(nnx.relu(self.body(x)), use_running_average=not train)
            logits = self.head(h)
            return (logits, (h,)) if return_features else logits

    model = from_nnx(Net, 784, 256, 10)                 # a flax.linen Module
    variables = model.init(jax.random.key(0), x)       # {"params": ..., "batch_stats": ...}
    logits, upd = model.apply(variables, x, train=True, mutable=["batch_stats"])

How it works (the same scheme as `flax.nnx.bridge.ToLinen`, flax 0.12): at `init` the NNX module
is constructed with `rngs=nnx.Rngs(<linen "params" key>)` and its state is stored in linen
collections named after the Variable type (`nnx.Param` -> "params", `nnx.BatchStat` ->
"batch_stats"), keyed by the attribute path with every path element as a string (list indices
too, e.g. params["layers"]["0"]["kernel"], which keeps the tree checkpoint-friendly). At `apply`
the module's structure is rebuilt abstractly with `nnx.eval_shape` (no random init is computed),
the stored arrays are merged in, the module is called, and the mutated collections are written
back. Everything is a function of the arrays passed in, so `jax.vmap` over a run axis gives every
run its own parameters and BN statistics.

Why not `nnx.bridge.ToLinen` itself: it re-runs the NNX constructor, random initialization
included, on every `apply` (real work outside `jit`), it boxes variables carrying metadata
in `NNXMeta`, and it does not translate the protocol's `train` flag.

`train` mapping: before the call the adapter sets `use_running_average = not train` on every
submodule that has that attribute (nnx.BatchNorm), and it also passes `train=` on to the module's
`__call__`, so both module styles work (BN flag set per call or stored on the layer). In train
mode BN statistics are written back only with `mutable=["batch_stats"]`; without it the adapter
raises, as linen's own BatchNorm does, instead of dropping the update.

NNX's BatchNorm uses flax's conventions, not PyTorch's: `momentum` is the weight of the *old*
statistic (default 0.99; PyTorch's momentum=0.1 is nnx momentum=0.9), the running variance is
updated with the biased batch variance, and `use_fast_variance=True` (the default) computes
E[x^2] - E[x]^2, which loses precision when features collapse. Pass `momentum=0.9,
use_fast_variance=False` for the settings of `nc_jax.models.BatchNorm`. Never pass an
`axis_name`: BN would average statistics across vmapped runs.

Classifier rule: an attribute named `head` that is an `nnx.Linear` lands at params["head"] =
{"kernel" (d, C), "bias" (C,)}, exactly what `nc_jax.models.head_classifier` reads. A classifier
elsewhere: pass `classifier=linear_classifier("path/to/linear")`.

Not supported: modules that keep an `nnx.Rngs` (e.g. stochastic `nnx.Dropout(rngs=...)`); the
protocol's models are deterministic given their parameters, and `from_nnx` raises on them.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from flax import nnx
from flax.core import FrozenDict
from flax.nnx import variablelib


def _collection(variable) -> str:
    # Same registry the bridge uses: Param -> "params", BatchStat -> "batch_stats"; a user-defined
    # Variable subclass gets its own collection named after the class.
    return variablelib.variable_name_from_type(type(variable), allow_register=True)


def _str_path(path) -> tuple[str, ...]:
    return tuple(str(p) for p in path)


def _lookup(tree, keys: Sequence[str]):
    for k in keys:
        tree = tree[k]
    return tree


def _nest(flat: dict) -> dict:
    """{(k1, k2, ...): leaf} -> nested dict."""
    out: dict = {}
    for keys, leaf in flat.items():
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = leaf
    return out


class NNXModule(nn.Module):
    """Linen view of the NNX module `nnx_class(*args, rngs=nnx.Rngs(key), **kwargs)`.

    Call: `(x, train=False, return_features=False)` as in the model protocol of nc_jax.models;
    the output is whatever the NNX module's `__call__` returns (logits (B, C), or
    `(logits, features)`). Build it with `from_nnx`.
    """

    nnx_class: Callable[..., nnx.Module]
    args: tuple[Any, ...] = ()
    kwargs: FrozenDict = FrozenDict({})

    def _construct(self, rngs: nnx.Rngs) -> nnx.Module:
        module = self.nnx_class(*self.args, rngs=rngs, **dict(self.kwargs))
        if not isinstance(module, nnx.Module):
            raise ValueError(f"from_nnx: {self.nnx_class!r} built a {type(module).__name__}, "
                             "not an nnx.Module")
        return module

    def _split(self, module):
        graphdef, state, rng_state = nnx.split(module, nnx.Not(nnx.RngState), nnx.RngState)
        if nnx.to_flat_state(rng_state):
            raise ValueError(
                f"from_nnx: {self.nnx_class.__name__} keeps an nnx.Rngs (RNG state at "
                f"{[_str_path(p) for p, _ in nnx.to_flat_state(rng_state)]}); stochastic layers "
                "are not supported, the model protocol is deterministic given its parameters")
        return graphdef, state

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        if self.is_initializing():
            module = self._construct(nnx.Rngs(self.make_rng("params")))
            _, state = self._split(module)
            # Store the state as constructed, before the first call: linen's BatchNorm does not
            # update statistics during init either.
            self._write(state, initializing=True)
        else:
            abstract = nnx.eval_shape(lambda: self._construct(nnx.Rngs(0)))
            graphdef, state = self._split(abstract)
            self._read_into(state)
            module = nnx.merge(graphdef, state)
        module.set_attributes(use_running_average=not train, raise_if_not_found=False)
        out = module(x, train=train, return_features=return_features)
        if not self.is_initializing():
            _, state = self._split(module)
            self._write(state, initializing=False, train=train)
        return out

    def _read_into(self, state) -> None:
        """Set every abstract Variable of `state` to the array stored in the linen variables."""
        for path, var in nnx.to_flat_state(state):
            col, keys = _collection(var), _str_path(path)
            try:
                value = _lookup(self.variables[col], keys)
            except (KeyError, TypeError):
                raise ValueError(
                    f"from_nnx: variables have no {col}/{'/'.join(keys)} that "
                    f"{self.nnx_class.__name__} needs; were they made by this model's init?"
                ) from None
            expected = var.get_value()
            if tuple(jnp.shape(value)) != tuple(expected.shape):
                raise ValueError(
                    f"from_nnx: {col}/{'/'.join(keys)} has shape {tuple(jnp.shape(value))}, "
                    f"{self.nnx_class.__name__} expects {tuple(expected.shape)}")
            var.set_value(value)

    def _write(self, state, initializing: bool, train: bool = False) -> None:
        by_collection: dict = {}
        for path, var in nnx.to_flat_state(state):
            by_collection.setdefault(_collection(var), {})[_str_path(path)] = var.get_value()
        for col, flat in by_collection.items():
            if not initializing and col == "params":
                continue  # parameters are never changed by a forward pass
            if not self.is_mutable_collection(col):
                if train and not initializing:
                    raise ValueError(
                        f"from_nnx: train=True updates the {col!r} collection; call "
                        f"apply(..., train=True, mutable=[{col!r}])")
                continue
            for name, value in _nest(flat).items():
                self.put_variable(col, name, value)


def from_nnx(nnx_class: Callable[..., nnx.Module], *args, name: str | None = None,
             **kwargs) -> NNXModule:
    """Linen module for `nnx_class(*args, rngs=nnx.Rngs(key), **kwargs)` (see module docstring).

    `nnx_class` is an nnx.Module class or any callable taking a keyword `rngs` and returning an
    nnx.Module, whose `__call__(x, train=False, return_features=False)` follows the model
    protocol. The arguments become module fields (keep them plain Python values: ints, strings,
    tuples) and the constructor is re-run abstractly (`nnx.eval_shape`) at every apply trace.
    """
    if not callable(nnx_class):
        raise ValueError(f"from_nnx needs an nnx.Module class or factory, got {nnx_class!r}")
    if "rngs" in kwargs:
        raise ValueError("from_nnx passes rngs itself (from the linen init key); drop `rngs=`")
    return NNXModule(nnx_class, tuple(args), FrozenDict(kwargs), name=name)


def linear_classifier(path: str | Sequence[str] = "head"):
    """Classifier rule for an nnx.Linear at `path` ("a/b" or ("a", "b")) of an adapted model.

    Returns fn(params) -> (W (C, d), b (C,) or None) with logits = h W^T + b, for the
    `classifier=` argument of the metric code; nnx.Linear stores its kernel as (d, C).
    """
    keys = tuple(path.split("/")) if isinstance(path, str) else tuple(str(p) for p in path)

    def classifier(params):
        try:
            layer = _lookup(params, keys)
            kernel = layer["kernel"]
        except (KeyError, TypeError):
            raise KeyError(f"no nnx.Linear at params/{'/'.join(keys)} (top-level keys: "
                           f"{sorted(params)})") from None
        return kernel.T, layer.get("bias")

    classifier.nc_jax_name = "linear:" + "/".join(keys)

    return classifier
