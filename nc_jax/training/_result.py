"""What a sweep carries and returns: the options of the loop (`RunOptions`), its state between
compiled chunks (`SweepState`, what a checkpoint stores) and its result (`SweepResult`)."""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence

import jax
import numpy as np

from nc_jax.config import SweepConfig
from nc_jax.training._hooks import ChunkEvent
from nc_jax.training._step import TrainState
from nc_jax.training._task import Task


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
    learning_rate_set: bool = True  # False: a user's tx kept its own learning rate

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
                "bn": get("bn"), "loss": self.task.loss_name, "optimizer": self.task.optimizer}

    def runs(self) -> List[dict]:
        """One dict per run with plain Python numbers; a diverged run's metrics are None. With
        decay groups, `weight_decay` is the "rest" group's and `weight_decay_<group>` each
        group's; `learning_rate` is None when a user's tx kept its own."""
        ident = self.identity()
        optimizer = ident.pop("optimizer")  # after the per-run fields: CSV columns keep their order
        groups = self.config.optim.weight_decay_groups
        out = []
        for i in range(self.num_runs):
            div = bool(self.diverged[i])
            wd = np.atleast_1d(self.weight_decay[i])
            per_group = {f"weight_decay_{g}": float(v) for g, v in zip(groups[1:], wd[1:])}
            out.append({
                **ident, "weight_decay": float(wd[0]), **per_group, "seed": int(self.seed[i]),
                "learning_rate": float(self.learning_rate[i]) if self.learning_rate_set else None,
                "diverged": div,
                "train_loss": None if div else float(self.final_loss[i]),
                "train_accuracy": None if div else float(self.final_accuracy[i]),
                "optimizer": optimizer,
            })
        return out
