"""Single-run training, written as pure functions (the run axis is added later by `vmap`).

State is a pytree `TrainState(params, batch_stats, opt_state, step, key, diverged)`.
`train_step(state, x, y, task) -> (state, metrics)` is one SGD step; `train_epoch` is one
`lax.scan` over the minibatches of a fresh permutation, plus one step on the remainder
(PyTorch's DataLoader with shuffle=True, drop_last=False), so nothing leaves the device inside
an epoch. Inputs x are (N, ...): any per-sample shape the task's model accepts.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence, Tuple

import chex
import jax
import jax.numpy as jnp
import optax

from nc_jax.training._optim import set_hyperparams
from nc_jax.training._task import Task


#: fold_in tag separating the model's PRNG stream from the data order's.
_MODEL_RNG_STREAM = 0x6D6F64


class TrainState(NamedTuple):
    params: Any
    batch_stats: Any
    opt_state: Any
    step: jnp.ndarray       # () int32, optimizer steps taken
    key: jax.Array          # typed PRNG key of the run's data order
    diverged: jnp.ndarray   # () bool, a non-finite training loss has been seen


def init_state(task: Task, seed_key: jax.Array, sample_shape: Sequence[int], learning_rate,
               weight_decay) -> TrainState:
    """Initial state of one run. `seed_key` fixes both the initialization and the data order, so
    runs that share a seed and differ in weight decay start identical and see identical batches.
    `sample_shape` is the shape of one input (x.shape[1:]). The run's `weight_decay` (a scalar,
    or (G,) per decay group) and `learning_rate` go into the optimizer state; `learning_rate`
    None leaves the optimizer's own (a user's tx)."""
    k_init, k_order = jax.random.split(seed_key)
    params, batch_stats = task.init_variables(k_init, sample_shape)
    opt_state = task.tx.init(params)
    opt_state = set_hyperparams(opt_state, learning_rate=learning_rate, weight_decay=weight_decay)
    return TrainState(params, batch_stats, opt_state, jnp.zeros((), jnp.int32), k_order,
                      jnp.zeros((), bool))


def train_step(state: TrainState, x: jnp.ndarray, y: jnp.ndarray, task: Task
               ) -> Tuple[TrainState, dict]:
    """One SGD step on a minibatch x (B, ...), y (B,), BN in train mode (batch statistics).

    The loss is `task.loss` alone: weight decay lives in `task.tx`.
    Returns metrics {"loss": (), "correct": () number of correct predictions}.
    """

    # the model's train-mode randomness (dropout): a key per step, from the run's data-order key
    # by fold_in, so the data order (split from that key each epoch) is the same with or
    # without it
    rng = jax.random.fold_in(jax.random.fold_in(state.key, _MODEL_RNG_STREAM), state.step)

    def loss_fn(params):
        logits, batch_stats = task.apply_train(params, state.batch_stats, x, rng)
        return task.loss(logits, y), (logits, batch_stats)

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = task.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    correct = jnp.sum(jnp.argmax(logits, -1) == y)
    diverged = state.diverged | ~jnp.isfinite(loss)
    new_state = TrainState(params, batch_stats, opt_state, state.step + 1, state.key, diverged)
    return new_state, {"loss": loss, "correct": correct}


def train_epoch(state: TrainState, x: jnp.ndarray, y: jnp.ndarray, task: Task,
                batch_size: int) -> Tuple[TrainState, dict]:
    """One epoch: a fresh permutation from the run's key, `lax.scan` over the full batches and
    one more step on the remainder. x (N, ...), y (N,).

    Returns metrics {"loss": () sample-weighted mean train loss, "accuracy": () fraction of
    samples classified correctly at the step that used them (BN in train mode)}.
    """
    n = x.shape[0]
    chex.assert_shape(y, (n,))
    n_full, rem = divmod(n, batch_size)
    key, k_perm = jax.random.split(state.key)
    state = state._replace(key=key)
    perm = jax.random.permutation(k_perm, n)

    # Permute the whole set once (one gather per epoch) and slice batches from it: a gather per
    # step is ~20% slower on CPU under vmap.
    xp, yp = x[perm], y[perm]

    def body(s, batch):
        return train_step(s, batch[0], batch[1], task)

    loss_sum = jnp.zeros((), jnp.float32)
    correct = jnp.zeros((), jnp.int32)
    if n_full:
        full = n_full * batch_size
        batches = (xp[:full].reshape(n_full, batch_size, *x.shape[1:]),
                   yp[:full].reshape(n_full, batch_size))
        state, m = jax.lax.scan(body, state, batches)
        loss_sum = jnp.sum(m["loss"]) * batch_size
        correct = jnp.sum(m["correct"])
    if rem:
        state, m = body(state, (xp[n_full * batch_size:], yp[n_full * batch_size:]))
        loss_sum = loss_sum + m["loss"] * rem
        correct = correct + m["correct"]
    return state, {"loss": loss_sum / n, "accuracy": correct / n}


def forward(state: TrainState, x: jnp.ndarray, task: Task, *, train: bool = False):
    """Logits (N, C) and the model's features tuple on the full set x (see `Task.features`)."""
    return task.features(state.params, state.batch_stats, x, train=train)


def loss_accuracy(task: Task, logits: jnp.ndarray, y: jnp.ndarray) -> dict:
    """{"loss": the task's loss, "accuracy": fraction of argmax(logits) == y} of logits (N, C)."""
    return {"loss": task.loss(logits, y), "accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}


def evaluate(state: TrainState, x: jnp.ndarray, y: jnp.ndarray, task: Task) -> dict:
    """Full-set loss (the task's) and accuracy with BN in eval mode."""
    logits = task.model.apply(task.variables(state.params, state.batch_stats), x, train=False)
    return loss_accuracy(task, logits, y)
