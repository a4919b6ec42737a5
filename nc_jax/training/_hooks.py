"""Hooks of the sweep loop: functions called on the host after every compiled chunk with a
`ChunkEvent` (progress bars, checkpoints, early stops, custom logging). A hook may also define
`on_preempt(event)`, called with the last event when a signal stops the sweep early
(`nc_jax.training`)."""
from __future__ import annotations

import dataclasses
import sys
from typing import Callable

import numpy as np


@dataclasses.dataclass
class ChunkEvent:
    """What a hook sees after a compiled chunk: the epoch reached, the last epoch's train-mode
    loss / accuracy and the divergence flags of the K real runs, and the loop state (built only
    when asked for, since it copies every run's parameters to the host)."""

    epoch: int
    total_epochs: int
    num_runs: int
    last_loss: np.ndarray
    last_accuracy: np.ndarray
    diverged: np.ndarray
    snapshot: Callable[[], "SweepState"]  # noqa: F821  (nc_jax.training.SweepState)


class ProgressHook:
    """A tqdm bar over epochs with the mean loss and min / max accuracy of the live runs."""

    def __init__(self, total: int, initial: int, num_runs: int):
        from tqdm.auto import tqdm
        self.bar = tqdm(total=total, initial=initial, desc=f"sweep {num_runs} runs", unit="epoch",
                        file=sys.stderr, dynamic_ncols=True)
        self.epoch = initial

    def __call__(self, ev: ChunkEvent) -> None:
        live = ~ev.diverged
        nan = float("nan")
        self.bar.update(ev.epoch - self.epoch)
        self.epoch = ev.epoch
        self.bar.set_postfix(loss=f"{np.mean(ev.last_loss[live]) if live.any() else nan:.4f}",
                             acc_min=f"{ev.last_accuracy[live].min() if live.any() else nan:.3f}",
                             acc_max=f"{ev.last_accuracy[live].max() if live.any() else nan:.3f}")
        if ev.epoch >= ev.total_epochs:
            self.bar.close()

    def on_preempt(self, ev: ChunkEvent) -> None:
        self.bar.close()  # the stop message should not land inside the bar
