"""`run_sweep`: the one training entry point, with or without an output directory.

Without `out_dir` the grid trains in memory. With `out_dir` the directory is locked for the call
(a second process on it is refused, whichever entry point it used), made ready
(`prepare_out_dir`: new, resume or refused unless `overwrite`), and the sweep checkpoints to
`<out_dir>/checkpoint.npz`: re-running the same call after a kill or a signal resumes there, and
the result is bit-identical to an uninterrupted run.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Callable, Optional

from nc_jax.analysis._reporting import record_fn
from nc_jax.config import SweepConfig
from nc_jax.data._datasets import Dataset
from nc_jax.runs._checkpoint import resumable_train_runs
from nc_jax._files import CHECKPOINT_NAME
from nc_jax.runs._lock import OutDirLock
from nc_jax.runs._outdir import prepare_out_dir
from nc_jax.training._distributed import is_main_process
from nc_jax.training import RunOptions, SweepResult, train_runs
from nc_jax.training._task import Task, data_and_task


def _with_recorder(opts: RunOptions, cfg: SweepConfig, task: Task) -> RunOptions:
    """`opts` with the NC recorder of the command line (`nc_jax.analysis.record_fn(task)`: loss,
    accuracy and the collapse report) when the run records in the loop and names no recorder.
    Without recording `record_fn` stays None, so the checkpoint identity of such a run (which
    names the recorder) is what it always was."""
    every = cfg.record_every if opts.record_every is None else opts.record_every
    if not every or opts.record_fn is not None:
        return opts
    return dataclasses.replace(opts, record_fn=record_fn(task))


def run_sweep(cfg: SweepConfig, data: Optional[Dataset] = None, model=None, loss=None, *,
              out_dir=None, overwrite: bool = False, classifier=None, tx=None,
              checkpoint_every: Optional[int] = None, allow_version_change: bool = False,
              on_checkpoint: Optional[Callable[[int, str], None]] = None,
              options: Optional[RunOptions] = None, **run_options) -> SweepResult:
    """Train the grid cfg.weight_decays x cfg.seeds as one vmapped program.

    `data` defaults to `make_dataset(cfg.data)` (any `Dataset`, e.g.
    `nc_jax.data.from_arrays(x, y)` with x (N, ...)); `model` to the model cfg.model names (any
    Flax module following the protocol of `nc_jax.training.Task`); `loss` to cfg.loss (a name or
    a callable `(logits, y) -> scalar`); `classifier` to the Dense named `head`; `tx` to
    cfg.optim's SGD + weight decay. `options` (`nc_jax.training.RunOptions`) and keyword
    `run_options` (its field names: weight_decays, seeds, record_every, record_fn, progress,
    ...) say how the loop runs. Every `record_every` epochs (cfg.record_every unless given) the
    loop records `record_fn` (default: the NC curves of the command line,
    `nc_jax.analysis.record_fn(task)`: whole-set loss, accuracy and the collapse report), which
    `nc_jax.analyse` returns as each run's `curves`.

    `out_dir`: lock the directory, checkpoint there every `checkpoint_every` epochs (default
    cfg.checkpoint_every; 0: at the end and when a signal stops the run) and resume from its
    checkpoint; `overwrite` replaces another run's results there; `allow_version_change`
    continues an unfinished checkpoint written by other software; `on_checkpoint(epoch, path)`
    runs after each save. `result.state(i)` is run i's final state.
    """
    opts = RunOptions.of(options, **run_options)
    build = dict(model=model, loss=loss, classifier=classifier, tx=tx)
    if out_dir is None:
        data, task = data_and_task(cfg, data, **build)
        return train_runs(task, cfg, data, _with_recorder(opts, cfg, task))
    out_dir = os.fspath(out_dir)
    with OutDirLock(out_dir) if is_main_process() else contextlib.nullcontext():
        prepare_out_dir(out_dir, overwrite=overwrite, resume=True)
        data, task = data_and_task(cfg, data, **build)
        return resumable_train_runs(task, cfg, data, os.path.join(out_dir, CHECKPOINT_NAME),
                                    _with_recorder(opts, cfg, task),
                                    checkpoint_every=checkpoint_every,
                                    allow_version_change=allow_version_change,
                                    on_checkpoint=on_checkpoint)
