"""Single-run training, written as pure functions (the run axis is added later by `vmap`).

State is a pytree `TrainState(params, batch_stats, opt_state, step, key, diverged)`.
`train_step(state, x, y) -> (state, metrics)` is one SGD step; `train_epoch` is one `lax.scan`
over the minibatches of a fresh permutation, plus one step on the remainder (PyTorch's
DataLoader with shuffle=True, drop_last=False), so nothing leaves the device inside an epoch.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Tuple

import chex
import jax
import jax.numpy as jnp
import optax

from nc_jax.models import MLP
from nc_jax.optim import set_hyperparams


class TrainState(NamedTuple):
    params: Any
    batch_stats: Any
    opt_state: Any
    step: jnp.ndarray       # () int32, optimizer steps taken
    key: jax.Array          # typed PRNG key of the run's data order
    diverged: jnp.ndarray   # () bool, a non-finite training loss has been seen


def steps_per_epoch(n: int, batch_size: int) -> int:
    """ceil(n / batch_size): full batches plus the partial one (drop_last=False)."""
    return -(-n // batch_size)


def init_state(model: MLP, tx: optax.GradientTransformation, seed_key: jax.Array,
               input_dim: int, learning_rate, weight_decay) -> TrainState:
    """Initial state of one run. `seed_key` fixes both the initialization and the data order, so
    runs that share a seed and differ in weight decay start identical and see identical batches."""
    k_init, k_order = jax.random.split(seed_key)
    variables = model.init(k_init, jnp.zeros((2, input_dim), jnp.float32), train=False)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    opt_state = tx.init(params)
    opt_state = set_hyperparams(opt_state, learning_rate=learning_rate, weight_decay=weight_decay)
    return TrainState(params, batch_stats, opt_state, jnp.zeros((), jnp.int32), k_order,
                      jnp.zeros((), bool))


def cross_entropy(logits: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """Mean cross-entropy -log softmax(logits)_y; logits (B, C), y (B,) int."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def train_step(state: TrainState, x: jnp.ndarray, y: jnp.ndarray, *, model: MLP,
               tx: optax.GradientTransformation) -> Tuple[TrainState, dict]:
    """One SGD step on a minibatch x (B, d), y (B,), BN in train mode (batch statistics).

    The loss is the plain cross-entropy: weight decay lives in `tx`.
    Returns metrics {"loss": (), "correct": () number of correct predictions}.
    """

    def loss_fn(params):
        logits, updates = model.apply({"params": params, "batch_stats": state.batch_stats}, x,
                                      train=True, mutable=["batch_stats"])
        return cross_entropy(logits, y), (logits, updates.get("batch_stats", {}))

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    correct = jnp.sum(jnp.argmax(logits, -1) == y)
    diverged = state.diverged | ~jnp.isfinite(loss)
    new_state = TrainState(params, batch_stats, opt_state, state.step + 1, state.key, diverged)
    return new_state, {"loss": loss, "correct": correct}


def train_epoch(state: TrainState, x: jnp.ndarray, y: jnp.ndarray, *, model: MLP,
                tx: optax.GradientTransformation, batch_size: int) -> Tuple[TrainState, dict]:
    """One epoch: a fresh permutation from the run's key, `lax.scan` over the full batches and
    one more step on the remainder. x (N, d), y (N,).

    Returns metrics {"loss": () sample-weighted mean train loss, "accuracy": () fraction of
    samples classified correctly at the step that used them (BN in train mode)}.
    """
    n = x.shape[0]
    chex.assert_rank(x, 2)
    chex.assert_shape(y, (n,))
    n_full, rem = divmod(n, batch_size)
    key, k_perm = jax.random.split(state.key)
    state = state._replace(key=key)
    perm = jax.random.permutation(k_perm, n)

    # Permute the whole set once (one gather per epoch) and slice batches from it: a gather per
    # step is ~20% slower on CPU under vmap.
    xp, yp = x[perm], y[perm]

    def body(s, batch):
        return train_step(s, batch[0], batch[1], model=model, tx=tx)

    loss_sum = jnp.zeros((), jnp.float32)
    correct = jnp.zeros((), jnp.int32)
    if n_full:
        full = n_full * batch_size
        batches = (xp[:full].reshape(n_full, batch_size, -1), yp[:full].reshape(n_full, batch_size))
        state, m = jax.lax.scan(body, state, batches)
        loss_sum = jnp.sum(m["loss"]) * batch_size
        correct = jnp.sum(m["correct"])
    if rem:
        state, m = body(state, (xp[n_full * batch_size:], yp[n_full * batch_size:]))
        loss_sum = loss_sum + m["loss"] * rem
        correct = correct + m["correct"]
    return state, {"loss": loss_sum / n, "accuracy": correct / n}


def forward(state: TrainState, x: jnp.ndarray, *, model: MLP, train: bool = False):
    """Logits (N, C) and hidden features (h_1..h_{L-1}, each (N, width)) on the full set x.

    `train=False` (default) uses the BN running statistics (eval mode, what the thesis
    measures); `train=True` normalizes with the statistics of x itself (running stats untouched).
    """
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    if train:
        (logits, feats), _ = model.apply(variables, x, train=True, return_features=True,
                                         mutable=["batch_stats"])
    else:
        logits, feats = model.apply(variables, x, train=False, return_features=True)
    return logits, feats


def evaluate(state: TrainState, x: jnp.ndarray, y: jnp.ndarray, *, model: MLP) -> dict:
    """Full-set loss and accuracy with BN in eval mode."""
    logits = model.apply({"params": state.params, "batch_stats": state.batch_stats}, x, train=False)
    return {"loss": cross_entropy(logits, y),
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}
