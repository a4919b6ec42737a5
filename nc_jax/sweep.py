"""A grid of runs (weight decays x seeds) trained as ONE vmapped, jitted program.

Every leaf of the `TrainState` gets a leading run axis; the data is shared. A host loop
dispatches chunks of epochs (each chunk is one compiled call: `lax.scan` over epochs, each epoch
a `lax.scan` over minibatches), so nothing leaves the device inside a chunk. With several local
devices the run axis is sharded over a `jax.sharding.Mesh`.

Run layout: each device's share of one compiled call is a block of B runs (`runs_per_device`),
so a call trains D * B runs on D devices and the K runs take G = ceil(K / (D * B)) calls per
chunk (the grid is padded with copies of the last run; the copies are dropped from the results).
XLA's float32 rounding depends on the batch of runs a device computes, never on which device
or how many: a fixed B therefore gives bit-identical results on any number of devices. The
default B = ceil(K / D) (one call per chunk, fastest) agrees across device counts only to float32
rounding (~1e-7).
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from nc_jax.config import ConfigError, SweepConfig
from nc_jax.data import Dataset, make_dataset
from nc_jax.models import MLP
from nc_jax.optim import make_optimizer
from nc_jax.train import TrainState, evaluate, init_state, steps_per_epoch, train_epoch

RUN_AXIS = "runs"


@dataclasses.dataclass
class SweepResult:
    """Per-run results of a sweep; arrays have a leading run axis of length K.

    history[name] is (K, epochs) (train-mode loss / accuracy averaged over each epoch);
    records[name] is (K, R) for the R evaluations at `record_epochs` (NC during training).
    final_loss / final_accuracy are measured on the whole training set with BN in eval mode.
    """

    config: SweepConfig
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
        """The final state of run i (no run axis)."""
        return jax.tree.map(lambda a: a[i], self.states)

    def runs(self) -> List[dict]:
        """One dict per run with plain Python numbers; a diverged run's metrics are None."""
        out = []
        for i in range(self.num_runs):
            div = bool(self.diverged[i])
            out.append({
                "bn": self.config.model.bn, "depth": self.config.model.depth,
                "width": self.config.model.width,
                "weight_decay": float(self.weight_decay[i]), "seed": int(self.seed[i]),
                "learning_rate": float(self.learning_rate[i]), "diverged": div,
                "train_loss": None if div else float(self.final_loss[i]),
                "train_accuracy": None if div else float(self.final_accuracy[i]),
            })
        return out

    def table(self) -> str:
        rows = self.runs()
        head = f"{'run':>3} {'bn':>6} {'wd':>8} {'seed':>4} {'loss':>10} {'acc':>7}  status"
        lines = [head, "-" * len(head)]
        for i, r in enumerate(rows):
            loss = "—" if r["diverged"] else f"{r['train_loss']:.3e}"
            acc = "—" if r["diverged"] else f"{r['train_accuracy']:.4f}"
            status = "DIVERGED" if r["diverged"] else "ok"
            lines.append(f"{i:>3} {r['bn']:>6} {r['weight_decay']:>8.1e} {r['seed']:>4} "
                         f"{loss:>10} {acc:>7}  {status}")
        return "\n".join(lines)


def run_grid(weight_decays: Sequence[float], seeds: Sequence[int]):
    """Runs in the order wd-major, seed-minor: (wd_i, seed_j) is run i * len(seeds) + j."""
    wd = np.repeat(np.asarray(weight_decays, np.float32), len(seeds))
    sd = np.tile(np.asarray(seeds, np.int64), len(weight_decays))
    return wd, sd


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """How K runs map onto D devices: G sequential compiled calls per chunk, each over
    D * B runs (B = runs_per_device on every device), K padded up to G * D * B."""

    num_runs: int
    num_devices: int
    runs_per_device: int
    num_groups: int

    @property
    def group_size(self) -> int:
        return self.num_devices * self.runs_per_device

    @property
    def padded(self) -> int:
        return self.num_groups * self.group_size


def run_layout(num_runs: int, devices=None, runs_per_device: int = 0):
    """(RunLayout, Mesh or None) for `num_runs` runs on `devices` (default: all local ones).

    `runs_per_device` 0 = ceil(K / D), one call per chunk. A positive value fixes the batch of
    runs each device computes, which is what makes results independent of the device count.
    """
    devices = list(devices) if devices is not None else jax.local_devices()
    n_dev = len(devices)
    if (not isinstance(runs_per_device, (int, np.integer)) or isinstance(runs_per_device, bool)
            or runs_per_device < 0):
        raise ConfigError(f"runs_per_device must be an integer >= 0 (0 = ceil(runs / devices)), "
                          f"got {runs_per_device!r}")
    b = int(runs_per_device) or int(math.ceil(num_runs / n_dev))
    groups = int(math.ceil(num_runs / (n_dev * b)))
    mesh = jax.sharding.Mesh(np.asarray(devices), (RUN_AXIS,)) if n_dev > 1 else None
    return RunLayout(num_runs, n_dev, b, groups), mesh


def _put(tree, mesh, spec):
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, spec))


def make_chunk_fn(model: MLP, tx, batch_size: int, num_epochs: int,
                  record_fn: Optional[Callable] = None):
    """jit(vmap(run `num_epochs` epochs, then record)) over the run axis; data shared.

    Signature: (states[K], x (N, d), y (N,)) -> (states[K], history {name: (K, num_epochs)},
    record {name: (K,)}). States are donated: the chunk updates them in place.
    """

    def one_run(state, x, y):
        def epoch(s, _):
            return train_epoch(s, x, y, model=model, tx=tx, batch_size=batch_size)

        state, hist = jax.lax.scan(epoch, state, None, length=num_epochs)
        rec = record_fn(state, x, y) if record_fn is not None else {}
        return state, hist, rec

    return jax.jit(jax.vmap(one_run, in_axes=(0, None, None)), donate_argnums=0)


def default_record_fn(model: MLP):
    """Full-set loss/accuracy (BN eval mode) recorded during training."""

    def record(state, x, y):
        return evaluate(state, x, y, model=model)

    return record


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
    """Per-run (weight_decays float32, seeds int64, learning_rates float32), each (K,): the
    explicit arrays when given, else cfg's grid and learning rate; validated."""
    if weight_decays is None or seeds is None:
        weight_decays, seeds = run_grid(cfg.weight_decays, cfg.seeds)
    weight_decays = np.asarray(weight_decays, np.float32)
    seeds = np.asarray(seeds, np.int64)
    if learning_rates is None:
        learning_rates = np.full(len(weight_decays), cfg.optim.lr, np.float32)
    learning_rates = np.asarray(learning_rates, np.float32)
    check_run_arrays(weight_decays, seeds, learning_rates)
    return weight_decays, seeds, learning_rates


def init_fn(model: MLP, tx, input_dim: int) -> Callable:
    """jit(vmap(init_state)): (seeds (K,), learning_rates (K,), weight_decays (K,)) ->
    stacked initial states. Build it once and call it per group of runs."""
    fn = jax.vmap(lambda k, lr, wd: init_state(model, tx, k, input_dim, lr, wd))

    def init(seeds, learning_rates, weight_decays):
        keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))
        return fn(keys, jnp.asarray(learning_rates, jnp.float32),
                  jnp.asarray(weight_decays, jnp.float32))

    return jax.jit(init)


def init_states(model: MLP, tx, seeds, learning_rates, weight_decays, input_dim: int) -> TrainState:
    """Stacked initial states (leading run axis) from per-run seeds, learning rates and WDs."""
    return init_fn(model, tx, input_dim)(seeds, learning_rates, weight_decays)


def train_runs(model: MLP, cfg: SweepConfig, data: Dataset, *, weight_decays=None, seeds=None,
               learning_rates=None, progress: bool = True, record_every: Optional[int] = None,
               record_fn: Optional[Callable] = None, devices=None,
               chunk_callback: Optional[Callable] = None, start=None,
               epochs_per_call: int = 1, runs_per_device: Optional[int] = None) -> SweepResult:
    """Train K runs (arrays of weight decays, seeds, learning rates, each (K,)) as one program.

    `record_fn(state, x, y) -> {name: scalar}` (default: full-set loss / accuracy) is evaluated
    inside the compiled loop every `record_every` epochs (default: cfg.record_every; 0 = never,
    the final full-set evaluation is always done).
    Each compiled call runs `record_every` epochs when recording, else `epochs_per_call`.
    `chunk_callback(epoch, states, history_parts, record_parts, record_epochs)` runs on the host
    after each call (checkpointing hooks in here); `start` resumes from such a snapshot.
    `runs_per_device` (default cfg.runs_per_device) fixes the run layout (see the module
    docstring): the same value gives bit-identical results on any number of devices.
    """
    t_start = time.perf_counter()
    ocfg = cfg.optim
    weight_decays, seeds, learning_rates = resolve_run_arrays(cfg, weight_decays, seeds,
                                                              learning_rates)
    k = len(weight_decays)
    if ocfg.batch_size > data.n:
        raise ConfigError(f"optim.batch_size ({ocfg.batch_size}) must be <= number of samples ({data.n})")
    if data.num_classes != model.num_classes:
        raise ValueError(f"model has {model.num_classes} outputs but the data has {data.num_classes} classes")
    record_every = cfg.record_every if record_every is None else record_every
    if not record_every:
        # nothing to record: a full-set evaluation after every chunk would cost ~20% of an epoch
        record_fn = None
    elif record_fn is None:
        record_fn = default_record_fn(model)

    spe = steps_per_epoch(data.n, ocfg.batch_size)
    tx = make_optimizer(ocfg, spe)
    rpd = cfg.runs_per_device if runs_per_device is None else runs_per_device
    layout, mesh = run_layout(k, devices, rpd)
    padded, gsize = layout.padded, layout.group_size
    pad = padded - k
    wd_p, sd_p, lr_p = (np.concatenate([a, np.repeat(a[-1:], pad)]) for a in
                        (weight_decays, seeds, learning_rates))

    x = _put(jnp.asarray(data.x), mesh, P())
    y = _put(jnp.asarray(data.y), mesh, P())
    epochs = ocfg.epochs
    chunk = record_every if record_every else max(1, int(epochs_per_call))
    groups = [slice(g * gsize, (g + 1) * gsize) for g in range(layout.num_groups)]
    if start is None:
        # per group, like training: the compiled batch of runs is the same on any device count
        init = init_fn(model, tx, data.dim)
        group_states = [init(sd_p[g], lr_p[g], wd_p[g]) for g in groups]
        epoch0, hist_parts, rec_parts, rec_epochs = 0, [], [], []
    else:
        group_states = [jax.tree.map(lambda a: a[g], start["states"]) for g in groups]
        epoch0 = int(start["epoch"])
        hist_parts, rec_parts, rec_epochs = (list(start["history"]), list(start["records"]),
                                             list(start["record_epochs"]))
    group_states = [_put(st, mesh, P(RUN_AXIS)) for st in group_states]

    def joined(trees):
        if len(trees) == 1:
            return trees[0]
        return jax.tree.map(lambda *a: (jnp.concatenate(a) if isinstance(a[0], jax.Array)
                                        else np.concatenate(a)), *trees)

    fns: Dict[int, Callable] = {}
    compile_time = 0.0
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=epochs, initial=epoch0, desc=f"sweep {k} runs", unit="epoch",
                   file=sys.stderr, dynamic_ncols=True)
    epoch = epoch0
    while epoch < epochs:
        n_ep = min(chunk, epochs - epoch)
        if n_ep not in fns:
            tc = time.perf_counter()
            fns[n_ep] = make_chunk_fn(model, tx, ocfg.batch_size, n_ep, record_fn).lower(
                group_states[0], x, y).compile()
            compile_time += time.perf_counter() - tc
        # every group is dispatched before any result is read back, so the calls queue up
        outs = [fns[n_ep](st, x, y) for st in group_states]
        group_states = [o[0] for o in outs]
        hist = joined([jax.tree.map(np.asarray, o[1]) for o in outs])  # small host copies
        rec = joined([jax.tree.map(np.asarray, o[2]) for o in outs])
        epoch += n_ep
        hist_parts.append(hist)
        rec_parts.append(rec)
        rec_epochs.append(epoch)
        if bar is not None:
            live = ~np.concatenate([np.asarray(st.diverged) for st in group_states])[:k]
            loss = hist["loss"][:k, -1]
            acc = hist["accuracy"][:k, -1]
            bar.update(n_ep)
            bar.set_postfix(loss=f"{np.mean(loss[live]) if live.any() else float('nan'):.4f}",
                            acc_min=f"{acc[live].min() if live.any() else float('nan'):.3f}",
                            acc_max=f"{acc[live].max() if live.any() else float('nan'):.3f}")
        if chunk_callback is not None:
            chunk_callback(epoch, joined(group_states), hist_parts, rec_parts, rec_epochs)
    if bar is not None:
        bar.close()

    final_fn = jax.jit(jax.vmap(lambda s: evaluate(s, x, y, model=model)))
    final = joined([jax.tree.map(np.asarray, final_fn(st)) for st in group_states])
    history = {name: np.concatenate([h[name] for h in hist_parts], axis=1)[:k]
               for name in hist_parts[0]} if hist_parts else {}
    records = {name: np.stack([r[name] for r in rec_parts], axis=1)[:k]
               for name in rec_parts[0]} if rec_parts else {}
    num_devices = len(group_states[0].step.sharding.device_set)
    states = joined(group_states)
    states = jax.tree.map(lambda a: a[:k], states)
    final = jax.tree.map(lambda a: np.asarray(a)[:k], final)
    diverged = np.asarray(states.diverged) | ~np.isfinite(final["loss"])
    return SweepResult(
        config=cfg, weight_decay=weight_decays, seed=seeds, learning_rate=learning_rates,
        final_loss=final["loss"], final_accuracy=final["accuracy"],
        diverged=diverged, history=history, record_epochs=np.asarray(rec_epochs),
        records=records, states=states, wall_time_s=time.perf_counter() - t_start,
        compile_time_s=compile_time, num_devices=num_devices,
        runs_per_device=layout.runs_per_device)


def run_sweep(cfg: SweepConfig, data: Optional[Dataset] = None, **kwargs) -> SweepResult:
    """Train the grid cfg.weight_decays x cfg.seeds as one vmapped program (see `train_runs`)."""
    if data is None:
        data = make_dataset(cfg.data)
    model = MLP(depth=cfg.model.depth, width=cfg.model.width, num_classes=data.num_classes,
                bn=cfg.model.bn)
    return train_runs(model, cfg, data, **kwargs)
