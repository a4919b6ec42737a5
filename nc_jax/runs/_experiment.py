"""Experiments as data: an `Experiment` is named presets of *groups* plus its figures.

A group is one `SweepConfig` (one BN variant, one depth, one data set): its weight-decay x seed
grid trains as one vmapped program (resumable when the config sets `checkpoint_every` and an
output directory is given), and every run is analysed (`nc_jax.analysis.analyse`). The
experiments of the thesis register themselves in `nc_jax.thesis`; `nc_jax.cli` imports that
package and runs any registered experiment, or a custom sweep, with the same flags.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from nc_jax.analysis._analyse import analyse
from nc_jax.analysis._reporting import record_fn
from nc_jax.config import ConfigError, SweepConfig
from nc_jax.data import Dataset, make_dataset
from nc_jax.runs._checkpoint import checkpoint_epoch, resumable_train_runs
from nc_jax._files import CheckpointError
from nc_jax.training import _preempt as preempt
from nc_jax.training import RunOptions, train_runs
from nc_jax.training._task import data_and_task

Presets = Mapping[str, Callable[[], Dict[str, SweepConfig]]]


def checkpoint_name(group: str) -> str:
    """A group's checkpoint file in the output directory."""
    return f"checkpoint_{group}.npz"


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A named experiment.

    presets: {preset: () -> {group: SweepConfig}}; plot(doc, out_dir) draws the figures from a
    results document; layers: per-layer metrics and effective depth for every run; shared_data:
    all groups train on the data of the first group's DataConfig (generated once); extra: fixed
    fields added to results.json.
    """

    name: str
    presets: Presets
    plot: Callable[[dict, str], None]
    description: str = ""
    layers: bool = False
    shared_data: bool = False
    extra: Mapping[str, object] = dataclasses.field(default_factory=dict)
    default_preset: str = "quick"
    checkpoint_name: Callable[[str], str] = checkpoint_name

    def configs(self, preset: str) -> Dict[str, SweepConfig]:
        if preset not in self.presets:
            raise ConfigError(f"unknown preset {preset!r} of experiment {self.name!r}; known "
                              f"presets: {sorted(self.presets)}")
        return self.presets[preset]()


EXPERIMENTS: Dict[str, Experiment] = {}


def register_experiment(exp: Experiment) -> Experiment:
    EXPERIMENTS[exp.name] = exp
    return exp


def get_experiment(name: str) -> Experiment:
    """A registered experiment (`nc_jax.thesis` registers the thesis' when imported)."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; known experiments: {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def data_summary(data: Dataset) -> dict:
    """What results.json says about the data: size, shapes, classes, kind and provenance; `n` is
    the number of training samples, and with a held-out part `test_size` its number (the held-out
    rows are `data.info["heldout_indices"]`, left out here like the selection indices)."""
    info = {k: v for k, v in data.info.items()
            if k not in ("selected_indices", "heldout_indices")}
    out = {"n": data.n, "dim": data.dim, "sample_shape": list(data.sample_shape),
           "num_classes": data.num_classes, "kind": info.get("kind"),
           "source": info.get("source"), "info": info}
    if getattr(data, "test", None) is not None:
        out["test_size"] = data.test.n
    return out


def run_group(cfg: SweepConfig, *, group: str, data: Optional[Dataset] = None,
              layers: bool = False, progress: bool = True, out_dir: Optional[str] = None,
              model=None, loss=None, checkpoint_file: Optional[str] = None,
              allow_version_change: bool = False) -> Tuple[List[dict], object]:
    """Train `cfg`'s grid as one program, record NC every `cfg.record_every` epochs in the loop,
    and analyse every run. With `out_dir` the sweep is resumable from
    `<out_dir>/<checkpoint_file>` (default `checkpoint_<group>.npz`), saved every
    `cfg.checkpoint_every` epochs and at the end when that is set, and in any case when a signal
    stops it (`nc_jax.training.PreemptionGuard`); `allow_version_change`: see `resumable_train_runs`. `model` /
    `loss` override the config's (see `nc_jax.run_sweep`). When `data` has a held-out part
    (`DataConfig.test_size`), every run also gets the `test_*` keys of
    `nc_jax.analysis.heldout_report` (`analyse(..., test=data.test)`).
    Returns (runs, SweepResult)."""
    data, task = data_and_task(cfg, data, model=model, loss=loss)
    opts = RunOptions(progress=progress, record_fn=record_fn(task))
    if out_dir is not None:
        res = resumable_train_runs(task, cfg, data,
                                   os.path.join(out_dir, checkpoint_file or
                                                checkpoint_name(group)), opts,
                                   final_checkpoint=bool(cfg.checkpoint_every),
                                   allow_version_change=allow_version_change)
    else:
        res = train_runs(task, cfg, data, opts)
    runs = analyse(res, data, layers=layers, group=group, test=getattr(data, "test", None))
    return runs, res


def run_experiment(exp: Experiment, configs: Mapping[str, SweepConfig], *,
                   out_dir: Optional[str] = None, progress: bool = True,
                   data: Optional[Dataset] = None, model=None, loss=None,
                   allow_version_change: bool = False) -> Tuple[List[dict], dict]:
    """`run_group` for every {group: config}. `data` (default: made from each group's
    DataConfig, once for all groups when `exp.shared_data`) and `model` / `loss` apply to every
    group. Returns (runs, extra results fields: timing per group, data summary, exp.extra)."""
    runs, timing, summary = [], {}, None
    if data is None and exp.shared_data:
        data = make_dataset(next(iter(configs.values())).data)
    for group, cfg in configs.items():
        preempt.raise_if_pending()  # a signal during the previous group's analysis
        gdata = data if data is not None else make_dataset(cfg.data)
        summary = summary or data_summary(gdata)
        group_runs, res = run_group(cfg, group=group, data=gdata, layers=exp.layers,
                                    progress=progress, out_dir=out_dir, model=model, loss=loss,
                                    checkpoint_file=exp.checkpoint_name(group),
                                    allow_version_change=allow_version_change)
        runs += group_runs
        timing[group] = {"wall_time_s": res.wall_time_s, "compile_time_s": res.compile_time_s,
                         "num_devices": res.num_devices, "runs_per_device": res.runs_per_device}
    return runs, {"timing": timing, "data": summary, **dict(exp.extra)}


def check_reanalysable(exp: Experiment, configs: Mapping[str, SweepConfig], out_dir: str,
                       preset: str) -> None:
    """--reanalyse never trains: every group must have its final checkpoint in `out_dir`."""
    for g, cfg in configs.items():
        if not cfg.checkpoint_every:
            raise ConfigError(f"--reanalyse: preset {preset!r} (group {g!r}) does not "
                              f"checkpoint, so there is no saved state to analyse")
        path = os.path.join(out_dir, exp.checkpoint_name(g))
        ep = checkpoint_epoch(path) if os.path.exists(path) else None
        if ep != cfg.optim.epochs:
            raise CheckpointError(
                f"--reanalyse needs the final checkpoint of every group; group {g!r} has "
                + (f"none ({path})" if ep is None else
                   f"one at epoch {ep} of {cfg.optim.epochs}; run without --reanalyse "
                   f"to finish training"))

