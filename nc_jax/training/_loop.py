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

import dataclasses
import time
from typing import Callable, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from nc_jax.training import _distributed as distributed
from nc_jax.training import _preempt as preempt
from nc_jax.config import ConfigError, SweepConfig
from nc_jax.data._datasets import Dataset
from nc_jax.training._hooks import ChunkEvent, ProgressHook
from nc_jax.training._layout import RUN_AXIS, map_runs, run_layout
from nc_jax.training._task import Task
from nc_jax.training._step import TrainState, evaluate, init_state, train_epoch

@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a grid is trained, beside what the `SweepConfig` fixes: one object handed down the
    layers (`nc_jax.run_sweep` -> checkpointed loop -> `train_runs`) instead of a dozen keywords.

    weight_decays / seeds / learning_rates: per-run arrays (K,) overriding the config's grid
    (None: cfg.weight_decays x cfg.seeds at cfg.optim.lr); record_every: epochs between in-loop
    evaluations (None: cfg.record_every; 0: none); record_fn(state, x, y) -> {name: scalar}
    evaluated then (None: loss / accuracy in `train_runs`; `nc_jax.run_sweep` records the NC
    curves of `nc_jax.analysis.record_fn`); epochs_per_call: epochs per compiled call when not
    recording; runs_per_device: the run layout's B (None: cfg.runs_per_device); devices: the
    devices to shard the run axis over (None: all); progress: a progress bar; hooks: callables
    of a `ChunkEvent` run after every compiled call.
    """

    weight_decays: Optional[Sequence[float]] = None
    seeds: Optional[Sequence[int]] = None
    learning_rates: Optional[Sequence[float]] = None
    record_every: Optional[int] = None
    record_fn: Optional[Callable] = None
    epochs_per_call: int = 1
    runs_per_device: Optional[int] = None
    devices: Optional[Sequence] = None
    progress: bool = True
    hooks: Sequence[Callable[[ChunkEvent], None]] = ()

    @classmethod
    def of(cls, options: Optional["RunOptions"] = None, **overrides) -> "RunOptions":
        """`options` (default: all defaults) with `overrides` (field names) applied; an unknown
        name is a TypeError naming the fields."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown run option(s) {unknown}; RunOptions fields: {sorted(known)}")
        base = cls() if options is None else options
        return dataclasses.replace(base, **overrides) if overrides else base


@dataclasses.dataclass
class SweepState:
    """Everything a sweep carries between compiled chunks, for the K real runs (no padding).

    states: stacked `TrainState` (leading run axis K); epoch: epochs done; history[name]:
    (K, epoch) train-mode loss / accuracy per epoch; records[name]: (K, R) in-loop evaluations
    at `record_epochs` (R,); runs_per_device: the B of the layout that computed them.
    """

    states: TrainState
    epoch: int
    history: Dict[str, np.ndarray]
    records: Dict[str, np.ndarray]
    record_epochs: np.ndarray
    runs_per_device: int


@dataclasses.dataclass
class SweepResult:
    """Per-run results of a sweep; arrays have a leading run axis of length K.

    weight_decay / learning_rate are the values as given (float64, so 1e-4 stays 1e-4 in the
    results; training uses their float32 rounding). history[name] is (K, epochs) (train-mode
    loss / accuracy averaged over each epoch); records[name] is (K, R) for the R evaluations at
    `record_epochs` (NC during training). final_loss / final_accuracy are measured on the whole
    training set with BN in eval mode.
    """

    config: SweepConfig
    task: Task
    weight_decay: np.ndarray
    seed: np.ndarray
    learning_rate: np.ndarray
    final_loss: np.ndarray
    final_accuracy: np.ndarray
    diverged: np.ndarray
    history: Dict[str, np.ndarray]
    record_epochs: np.ndarray
    records: Dict[str, np.ndarray]
    states: TrainState
    wall_time_s: float
    compile_time_s: float
    num_devices: int = 1
    runs_per_device: int = 0  # B of the run layout that produced these numbers

    @property
    def num_runs(self) -> int:
        return int(self.weight_decay.shape[0])

    def state(self, i: int) -> TrainState:
        """The final state of run i (no run axis): `.params`, `.batch_stats`, ..."""
        return jax.tree.map(lambda a: a[i], self.states)

    def identity(self) -> dict:
        """What ran, taken from the task (not from defaults): model name, depth, width, BN, loss."""
        m = self.task.model
        cfg_model = self.config.model if self.task.model_name == self.config.model.name else None
        get = (lambda k: getattr(cfg_model, k)) if cfg_model is not None else \
            (lambda k: getattr(m, k, None))
        return {"model": self.task.model_name, "depth": get("depth"), "width": get("width"),
                "bn": get("bn"), "loss": self.task.loss_name}

    def runs(self) -> List[dict]:
        """One dict per run with plain Python numbers; a diverged run's metrics are None."""
        ident = self.identity()
        out = []
        for i in range(self.num_runs):
            div = bool(self.diverged[i])
            out.append({
                **ident, "weight_decay": float(self.weight_decay[i]), "seed": int(self.seed[i]),
                "learning_rate": float(self.learning_rate[i]), "diverged": div,
                "train_loss": None if div else float(self.final_loss[i]),
                "train_accuracy": None if div else float(self.final_accuracy[i]),
            })
        return out



def run_grid(weight_decays: Sequence[float], seeds: Sequence[int]):
    """Runs in the order wd-major, seed-minor: (wd_i, seed_j) is run i * len(seeds) + j."""
    wd = np.repeat(np.asarray(weight_decays, np.float64), len(seeds))
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
                             ("learning_rates", learning_rates, lambda v: v > 0, "> 0")):
        bad = np.flatnonzero(~(np.isfinite(a) & ok(a)))
        if bad.size:
            i = int(bad[0])
            raise ConfigError(f"{name}[{i}] must be finite and {rng}, got {float(a[i])!r}")


def resolve_run_arrays(cfg: SweepConfig, weight_decays=None, seeds=None, learning_rates=None):
    """Per-run (weight_decays float64, seeds int64, learning_rates float64), each (K,), as given:
    the explicit arrays when given, else cfg's grid and learning rate; validated."""
    if weight_decays is None or seeds is None:
        weight_decays, seeds = run_grid(cfg.weight_decays, cfg.seeds)
    weight_decays = np.asarray(weight_decays, np.float64)
    seeds = np.asarray(seeds, np.int64)
    if learning_rates is None:
        learning_rates = np.full(len(weight_decays), cfg.optim.lr, np.float64)
    learning_rates = np.asarray(learning_rates, np.float64)
    check_run_arrays(weight_decays, seeds, learning_rates)
    return weight_decays, seeds, learning_rates


def init_fn(task: Task, sample_shape: Sequence[int]) -> Callable:
    """jit(vmap(init_state)): (seeds (K,), learning_rates (K,), weight_decays (K,)) ->
    stacked initial states. Build it once and call it per group of runs."""
    sample_shape = tuple(int(s) for s in sample_shape)
    fn = jax.vmap(lambda k, lr, wd: init_state(task, k, sample_shape, lr, wd))

    def init(seeds, learning_rates, weight_decays):
        keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))
        return fn(keys, jnp.asarray(learning_rates, jnp.float32),
                  jnp.asarray(weight_decays, jnp.float32))

    return jax.jit(init)


def init_states(task: Task, seeds, learning_rates, weight_decays, sample_shape) -> TrainState:
    """Stacked initial states (leading run axis) from per-run seeds, learning rates and WDs."""
    return init_fn(task, sample_shape)(seeds, learning_rates, weight_decays)


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
    if start is None:
        # per group, like training: the compiled batch of runs is the same on any device count
        init = init_fn(task, data.sample_shape)
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
        num_devices=layout.num_devices, runs_per_device=layout.runs_per_device)

