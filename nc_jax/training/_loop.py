"""A grid of runs (weight decays x seeds) trained as ONE vmapped, jitted program.

Every leaf of the `TrainState` gets a leading run axis; the data is shared. A host loop
dispatches chunks of epochs (each chunk is one compiled call: `lax.scan` over epochs, each epoch
a `lax.scan` over minibatches), so nothing leaves the device inside a chunk. With several
devices the run axis is sharded over a `jax.sharding.Mesh` of `jax.devices()` (all processes
when `jax.distributed` is initialised).

The loop carries one `SweepState` (states, epoch, history, records, layout): a checkpoint stores
it as is and `train_runs(start=...)` continues from it. Progress bars and checkpoints are hooks
called after every chunk (`hooks=[...]`), so the loop knows nothing of either.

Run layout: each device's share of one compiled call is a block of B runs (`runs_per_device`),
so a call trains D * B runs on D devices and the K runs take G = ceil(K / (D * B)) calls per
chunk (the grid is padded with copies of the last run; the copies never leave the loop).
XLA's float32 rounding depends on the batch of runs a device computes, never on which device
or how many: a fixed B therefore gives bit-identical results on any number of devices. The
default B = ceil(K / D) (one call per chunk, fastest) agrees across device counts only to float32
rounding (~1e-7).
"""
from __future__ import annotations

import time
from typing import Callable, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from nc_jax.training import _distributed as distributed
from nc_jax.training import _preempt as preempt
from nc_jax.config import ConfigError, SweepConfig
from nc_jax.data._datasets import Dataset
from nc_jax.training._hooks import ChunkEvent, ProgressHook
from nc_jax.training._result import RunOptions, SweepResult, SweepState
from nc_jax.training._layout import RUN_AXIS, map_runs, run_layout
from nc_jax.training._task import Task
from nc_jax.training._step import TrainState, evaluate, init_state, train_epoch

def run_grid(weight_decays, seeds: Sequence[int]):
    """Runs in the order wd-major, seed-minor: (wd_i, seed_j) is run i * len(seeds) + j.
    `weight_decays` (W,) or (W, G) with decay groups; returns wd (K,) or (K, G), seeds (K,)."""
    wd = np.repeat(np.asarray(weight_decays, np.float64), len(seeds), axis=0)
    sd = np.tile(np.asarray(seeds, np.int64), len(weight_decays))
    return wd, sd


def make_chunk_fn(task: Task, batch_size: int, num_epochs: int,
                  record_fn: Optional[Callable] = None, vmap_runs: int = 0, mesh=None):
    """jit(vmap(run `num_epochs` epochs, then record)) over the run axis; data shared.

    Signature: (states[K], x (N, ...), y (N,)) -> (states[K], history {name: (K, num_epochs)},
    record {name: (K,)}). States are donated: the chunk updates them in place. `vmap_runs` > 0
    maps the runs with `lax.map` in vmapped batches of that size instead (`layout.map_runs`;
    `mesh`: per device).
    """

    def one_run(state, x, y):
        def epoch(s, _):
            return train_epoch(s, x, y, task, batch_size)

        state, hist = jax.lax.scan(epoch, state, None, length=num_epochs)
        rec = record_fn(state, x, y) if record_fn is not None else {}
        return state, hist, rec

    return jax.jit(map_runs(one_run, 2, vmap_runs, mesh), donate_argnums=0)


def check_run_arrays(weight_decays, seeds, learning_rates) -> None:
    """Explicit per-run arrays bypass SweepConfig's validation: check them as strictly."""
    k = len(weight_decays)
    if not (len(seeds) == len(learning_rates) == k) or k == 0:
        raise ConfigError(f"weight_decays ({k}), seeds ({len(seeds)}) and learning_rates "
                          f"({len(learning_rates)}) must have the same, non-zero length")
    for name, a, ok, rng in (("weight_decays", weight_decays, lambda v: v >= 0, ">= 0"),
                             # > 0 in float32, the precision training runs in
                             ("learning_rates", learning_rates,
                              lambda v: v.astype(np.float32) > 0, "> 0 in float32")):
        a = np.asarray(a, np.float64)
        bad = np.argwhere(~(np.isfinite(a) & ok(a)))
        if bad.size:
            i = tuple(int(j) for j in bad[0])
            where = i[0] if len(i) == 1 else list(i)
            raise ConfigError(f"{name}[{where}] must be finite and {rng}, got {float(a[i])!r}")


def resolve_run_arrays(cfg: SweepConfig, weight_decays=None, seeds=None, learning_rates=None):
    """Per-run (weight_decays float64, seeds int64, learning_rates float64), each (K,), as given:
    the explicit arrays when given, else cfg's grid and learning rate; validated."""
    if weight_decays is None or seeds is None:
        weight_decays, seeds = run_grid(cfg.weight_decay_matrix(), cfg.seeds)
    weight_decays = np.asarray(weight_decays, np.float64)
    groups = cfg.optim.weight_decay_groups
    want = (len(weight_decays),) if len(groups) == 1 else (len(weight_decays), len(groups))
    if weight_decays.shape != want:
        raise ConfigError(f"weight_decays must have shape {want} (runs" +
                          (f" x decay groups {list(groups)})" if len(groups) > 1 else ")") +
                          f", got {weight_decays.shape}")
    seeds = np.asarray(seeds, np.int64)
    if learning_rates is None:
        learning_rates = np.full(len(weight_decays), cfg.optim.lr, np.float64)
    learning_rates = np.asarray(learning_rates, np.float64)
    check_run_arrays(weight_decays, seeds, learning_rates)
    return weight_decays, seeds, learning_rates


def init_fn(task: Task, sample_shape: Sequence[int], set_lr: bool = True) -> Callable:
    """jit(vmap(init_state)): (seeds (K,), learning_rates (K,), weight_decays (K,) or (K, G)) ->
    stacked initial states. `set_lr` False leaves the optimizer's own learning rate (a user's
    tx). Build it once and call it per group of runs."""
    sample_shape = tuple(int(s) for s in sample_shape)
    fn = jax.vmap(lambda k, lr, wd: init_state(task, k, sample_shape, lr if set_lr else None, wd))

    def init(seeds, learning_rates, weight_decays):
        keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))
        return fn(keys, jnp.asarray(learning_rates, jnp.float32),
                  jnp.asarray(weight_decays, jnp.float32))

    return jax.jit(init)


def init_states(task: Task, seeds, learning_rates, weight_decays, sample_shape,
                set_lr: bool = True) -> TrainState:
    """Stacked initial states (leading run axis) from per-run seeds, learning rates and WDs."""
    return init_fn(task, sample_shape, set_lr)(seeds, learning_rates, weight_decays)


def sets_learning_rate(task: Task, explicit: bool) -> bool:
    """Whether runs set their learning rate in the optimizer: always for nc-jax's optimizer; for
    a user's only when per-run learning rates were passed (`explicit`), which it must inject."""
    if not task.custom_tx:
        return True
    if explicit and not task.tx_injects_lr:
        raise ConfigError("per-run learning_rates were passed, but the custom tx injects no "
                          "learning_rate: build it with optax.inject_hyperparams, or leave its "
                          "learning rate as it is")
    return explicit


def default_record_fn(task: Task) -> Callable:
    """Full-set loss / accuracy (BN eval mode) recorded during training; the NC curves of the
    experiments come from `nc_jax.analysis.record_fn` passed as `record_fn`."""

    def record(state, x, y):
        return evaluate(state, x, y, task)

    record.nc_jax_name = "loss_accuracy"
    return record


def train_runs(task: Task, cfg: SweepConfig, data: Dataset,
               options: Optional[RunOptions] = None, *, start: Optional[SweepState] = None,
               **overrides) -> SweepResult:
    """Train K runs (per-run weight decays, seeds and learning rates, each (K,)) as one program.

    `options` (a `RunOptions`; keyword `overrides` of its fields are applied on top) sets the
    per-run arrays, in-loop recording, chunking, run layout, devices, progress and hooks.
    `record_fn(state, x, y) -> {name: scalar}` (default: full-set loss / accuracy;
    `nc_jax.analysis.record_fn(task)` gives the NC curves) is evaluated inside the compiled loop
    every `record_every` epochs (0 = never; the final full-set evaluation is always done). Each
    compiled call runs `record_every` epochs when recording, else `epochs_per_call`. Hooks are
    called on the host after each call with a `ChunkEvent` (checkpointing is one); `start`
    continues from a `SweepState`. Inside a `PreemptionGuard`, a SIGTERM / SIGINT stops the loop
    after the chunk in flight: hooks with an `on_preempt(event)` method get the last event (the
    checkpoint hook saves), then `Preempted` is raised. A fixed `runs_per_device` (default
    cfg.runs_per_device, or start's) gives bit-identical results on any number of devices.
    """
    t_start = time.perf_counter()
    o = RunOptions.of(options, **overrides)
    progress, record_fn, devices, hooks = o.progress, o.record_fn, o.devices, o.hooks
    ocfg = cfg.optim
    weight_decays, seeds, learning_rates = resolve_run_arrays(cfg, o.weight_decays, o.seeds,
                                                              o.learning_rates)
    k = len(weight_decays)
    if ocfg.batch_size > data.n:
        raise ConfigError(f"optim.batch_size ({ocfg.batch_size}) must be <= number of samples ({data.n})")
    if data.num_classes != task.num_classes:
        raise ValueError(f"the task has {task.num_classes} classes but the data has "
                         f"{data.num_classes}")
    task.check(data.sample_shape)
    record_every = cfg.record_every if o.record_every is None else o.record_every
    if not record_every:
        # nothing to record: a full-set evaluation after every chunk would cost ~20% of an epoch
        record_fn = None
    elif record_fn is None:
        record_fn = default_record_fn(task)

    rpd = cfg.runs_per_device if o.runs_per_device is None else o.runs_per_device
    if not rpd and start is not None:
        rpd = start.runs_per_device
    layout, mesh = run_layout(k, devices, rpd)
    wd_p, sd_p, lr_p = (layout.pad(a) for a in (weight_decays, seeds, learning_rates))
    put_runs = distributed.putter(mesh, P(RUN_AXIS))
    x = distributed.putter(mesh, P())(data.x)
    y = distributed.putter(mesh, P())(data.y)
    epochs = ocfg.epochs
    chunk = record_every if record_every else max(1, int(o.epochs_per_call))
    groups = layout.groups()
    set_lr = sets_learning_rate(task, o.learning_rates is not None)
    if start is None:
        # per group, like training: the compiled batch of runs is the same on any device count
        init = init_fn(task, data.sample_shape, set_lr)
        group_states = [init(sd_p[g], lr_p[g], wd_p[g]) for g in groups]
        epoch0, hist_parts, rec_parts, rec_epochs = 0, [], [], []
    else:
        padded_states = jax.tree.map(layout.pad, start.states)
        group_states = [jax.tree.map(lambda a: a[g], padded_states) for g in groups]
        epoch0 = int(start.epoch)
        hist_parts = [{n: layout.pad(v) for n, v in start.history.items()}] if start.history else []
        rec_parts = [{n: layout.pad(v[:, j]) for n, v in start.records.items()}
                     for j in range(len(start.record_epochs))]
        rec_epochs = [int(e) for e in start.record_epochs]
    group_states = [put_runs(st) for st in group_states]

    def joined(trees):
        if len(trees) == 1:
            return trees[0]
        return jax.tree.map(lambda *a: (jnp.concatenate(a) if isinstance(a[0], jax.Array)
                                        else np.concatenate(a)), *trees)

    def snapshot() -> SweepState:
        states = jax.tree.map(lambda a: a[:k], distributed.to_host(joined(group_states)))
        history = ({n: np.concatenate([h[n] for h in hist_parts], axis=1)[:k]
                    for n in hist_parts[0]} if hist_parts else {})
        records = ({n: np.stack([r[n] for r in rec_parts], axis=1)[:k]
                    for n in rec_parts[0]} if rec_parts else {})
        return SweepState(states, epoch, history, records, np.asarray(rec_epochs, np.int64),
                          layout.runs_per_device)

    hooks = list(hooks)
    if progress and distributed.is_main_process():
        hooks.insert(0, ProgressHook(epochs, epoch0, k))
    fns: Dict[int, Callable] = {}
    compile_time = 0.0
    epoch = epoch0
    ev = None
    while epoch < epochs:
        if preempt.pending() is not None:
            # the hooks saw the last chunk's event already; those that keep state (the
            # checkpoint) save it now, whatever their interval
            if ev is not None:
                for hook in hooks:
                    if hasattr(hook, "on_preempt"):
                        hook.on_preempt(ev)
            preempt.raise_if_pending(epoch, epochs)
        n_ep = min(chunk, epochs - epoch)
        if n_ep not in fns:
            tc = time.perf_counter()
            fns[n_ep] = make_chunk_fn(task, ocfg.batch_size, n_ep, record_fn, cfg.vmap_runs,
                                      mesh).lower(
                group_states[0], x, y).compile()
            compile_time += time.perf_counter() - tc
        # every group is dispatched before any result is read back, so the calls queue up
        outs = [fns[n_ep](st, x, y) for st in group_states]
        group_states = [o[0] for o in outs]
        hist = joined([distributed.to_host(o[1]) for o in outs])  # small host copies
        rec = joined([distributed.to_host(o[2]) for o in outs])
        epoch += n_ep
        hist_parts.append(hist)
        rec_parts.append(rec)
        rec_epochs.append(epoch)
        if hooks:
            div = np.concatenate([distributed.to_host(st.diverged) for st in group_states])[:k]
            ev = ChunkEvent(epoch, epochs, k, hist["loss"][:k, -1], hist["accuracy"][:k, -1],
                            div, snapshot)
            for hook in hooks:
                hook(ev)

    final_fn = jax.jit(map_runs(lambda s: evaluate(s, x, y, task), 0, cfg.vmap_runs, mesh))
    final = joined([distributed.to_host(final_fn(st)) for st in group_states])
    final = jax.tree.map(lambda a: np.asarray(a)[:k], final)
    snap = snapshot()
    diverged = np.asarray(snap.states.diverged) | ~np.isfinite(final["loss"])
    return SweepResult(
        config=cfg, task=task, weight_decay=weight_decays, seed=seeds,
        learning_rate=learning_rates, final_loss=final["loss"],
        final_accuracy=final["accuracy"], diverged=diverged, history=snap.history,
        record_epochs=snap.record_epochs, records=snap.records, states=snap.states,
        wall_time_s=time.perf_counter() - t_start, compile_time_s=compile_time,
        num_devices=layout.num_devices, runs_per_device=layout.runs_per_device,
        learning_rate_set=set_lr)

