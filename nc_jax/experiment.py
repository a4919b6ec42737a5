"""Shared machinery of the experiment scripts in `experiments/`: train a group of runs, analyse
every run, write `results.json` / `results.csv` atomically, and a small CLI.

A *group* is one `SweepConfig` (one BN variant, one depth, one data set): its weight-decay x
seed grid trains as one vmapped program. An experiment is a few groups plus figures.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import platform
import sys
import time
from typing import Callable, Dict, List, Mapping, Optional

import jax
import numpy as np

from nc_jax import metrics
from nc_jax.analysis import record_fn as make_record_fn, sweep_reports
from nc_jax.checkpoint import (CheckpointError, OutDirError, atomic_write_text, checkpoint_epoch,
                               prepare_out_dir)
from nc_jax.config import ConfigError, SweepConfig
from nc_jax.data import Dataset, make_dataset
from nc_jax.models import MLP
from nc_jax.sweep import SweepResult, train_runs

#: NCC error threshold of the epsilon-effective depth (Definition 3.2.2). The thesis does not
#: give its epsilon; 1% error is "near-perfect NCC accuracy".
EFFECTIVE_DEPTH_EPS = 0.01
#: A run is converged when it reaches this train accuracy (BN eval mode, whole set): the thesis
#: keeps only runs with perfect training accuracy.
CONVERGED_ACCURACY = 1.0


def _py(v):
    """numpy / jax scalar or array -> JSON-friendly Python (NaN -> None)."""
    a = np.asarray(v)
    if a.ndim == 0:
        x = a.item()
        if isinstance(x, float) and not math.isfinite(x):
            return None
        return x
    return [_py(e) for e in a]


def analyse_group(res: SweepResult, data: Dataset, model: MLP, *, layers: bool = False,
                  group: str = "", eps: float = EFFECTIVE_DEPTH_EPS) -> List[dict]:
    """Per-run result dicts: config fields, final numbers, the full report, `converged`,
    training curves (from the in-loop records) and, with `layers`, per-layer metrics and the
    epsilon-effective depth. A diverged run keeps its identity but every metric is None."""
    reps = sweep_reports(res.states, data.x, data.y, model=model, num_classes=data.num_classes,
                         layers=layers)
    reps = {k: np.asarray(v) for k, v in reps.items()}
    out = []
    for i, base in enumerate(res.runs()):
        r = dict(base, group=group, data=res.config.data.kind,
                 teacher_depth=res.config.data.teacher_depth, epochs=res.config.optim.epochs)
        div = bool(res.diverged[i])
        for k, v in reps.items():
            if k.startswith("layer_"):
                continue
            r[k] = None if div else _py(v[i])
        if not div:
            r["train_loss"] = _py(reps["train_loss"][i])
            r["train_accuracy"] = _py(reps["train_accuracy"][i])
        r["converged"] = (not div) and r["train_accuracy"] is not None and \
            r["train_accuracy"] >= CONVERGED_ACCURACY
        if layers:
            keys = [k for k in reps if k.startswith("layer_")]
            n_layers = reps[keys[0]].shape[1]
            r["layers"] = None if div else [
                {k[len("layer_"):]: _py(reps[k][i, l]) for k in keys} for l in range(n_layers)]
            r["effective_depth"] = None if div else int(metrics.effective_depth(
                1.0 - reps["layer_ncc_accuracy"][i], eps))
            r["effective_depth_eps"] = eps
        if res.records:
            r["curves"] = None if div else {"epoch": _py(res.record_epochs),
                                            **{k: _py(v[i]) for k, v in res.records.items()}}
        out.append(r)
    return out


def run_group(cfg: SweepConfig, *, group: str, data: Optional[Dataset] = None, layers: bool = False,
              progress: bool = True, out_dir: Optional[str] = None) -> tuple:
    """Train `cfg`'s grid as one program (resumable when `cfg.checkpoint_every` and `out_dir`
    are set), record NC every `cfg.record_every` epochs in the loop, and analyse every run.
    Returns (runs, SweepResult)."""
    if data is None:
        data = make_dataset(cfg.data)
    model = MLP(depth=cfg.model.depth, width=cfg.model.width, num_classes=data.num_classes,
                bn=cfg.model.bn)
    kwargs = dict(progress=progress, record_fn=make_record_fn(model, data.num_classes))
    if out_dir is not None and cfg.checkpoint_every:
        from nc_jax.checkpoint import resumable_train_runs
        res = resumable_train_runs(model, cfg, data, os.path.join(out_dir, f"checkpoint_{group}.npz"),
                                   **kwargs)
    else:
        res = train_runs(model, cfg, data, **kwargs)
    return analyse_group(res, data, model, layers=layers, group=group), res


def run_groups(configs: Mapping[str, SweepConfig], *, data: Optional[Dataset] = None,
               layers: bool = False, progress: bool = True, out_dir: Optional[str] = None):
    """`run_group` for every {group: config}; `data` shared by all groups when given, else each
    group makes its own from its DataConfig. Returns (runs, {group: timing})."""
    runs, timing = [], {}
    for group, cfg in configs.items():
        group_runs, res = run_group(cfg, group=group, data=data, layers=layers,
                                    progress=progress, out_dir=out_dir)
        runs += group_runs
        timing[group] = {"wall_time_s": res.wall_time_s, "compile_time_s": res.compile_time_s,
                         "num_devices": res.num_devices, "runs_per_device": res.runs_per_device}
    return runs, timing


def environment() -> dict:
    return {"jax": jax.__version__, "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()], "python": platform.python_version(),
            "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


CSV_SKIP = ("layers", "curves")


def write_results(out_dir: str, name: str, preset: str, configs: Mapping[str, SweepConfig],
                  runs: List[dict], extra: Optional[dict] = None) -> None:
    """results.json (configs + every run) and results.csv (one row per run, scalars only)."""
    os.makedirs(out_dir, exist_ok=True)
    doc = {"experiment": name, "preset": preset,
           "configs": {k: v.to_dict() for k, v in configs.items()},
           "environment": environment(), "runs": runs, **(extra or {})}
    atomic_write_text(os.path.join(out_dir, "results.json"), json.dumps(doc, indent=1))
    cols: List[str] = []
    for r in runs:
        cols += [k for k in r if k not in cols and k not in CSV_SKIP]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in runs:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    atomic_write_text(os.path.join(out_dir, "results.csv"), buf.getvalue())


def load_results(path: str) -> dict:
    p = os.path.join(path, "results.json") if os.path.isdir(path) else path
    with open(p) as f:
        return json.load(f)


def runs_table(runs: List[dict], cols=("group", "weight_decay", "seed", "train_accuracy",
                                       "train_loss", "min_intra", "max_inter", "nc1")) -> str:
    """A fixed-width text table of runs; unconverged runs are marked as the thesis drops them."""
    def fmt(v):
        if v is None:
            return "—"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)
    rows = [[fmt(r.get(c)) for c in cols] + ["" if r["converged"] else
                                             ("DIVERGED" if r["diverged"] else "not converged")]
            for r in runs]
    head = list(cols) + ["status"]
    widths = [max(len(h), *(len(row[j]) for row in rows)) for j, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines.append("-" * len(lines[0]))
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def experiment_main(name: str, presets: Mapping[str, Callable[[], Dict[str, SweepConfig]]],
                    run: Callable, plot: Callable, argv=None, default_preset: str = "quick") -> int:
    """CLI shared by the experiment scripts: --preset, --out, --overwrite, --plot-only, --quiet,
    --reanalyse (results from the final checkpoints, no training), --runs-per-device.

    `presets[name]()` returns {group: SweepConfig}; `run(configs, out_dir, progress)` trains and
    returns (runs, extra); `plot(doc, out_dir)` draws the figures from a results document.
    """
    ap = argparse.ArgumentParser(description=f"nc-jax experiment: {name}")
    ap.add_argument("--preset", default=default_preset, help=f"one of {sorted(presets)}")
    ap.add_argument("--out", help="output directory (default runs/<name>/<preset>)")
    ap.add_argument("--overwrite", action="store_true", help="replace existing results in --out")
    ap.add_argument("--plot-only", action="store_true", help="redraw figures from results.json")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--reanalyse", action="store_true",
                    help="recompute results.json, results.csv and the figures from the final "
                         "checkpoints in --out without training (e.g. after adding a metric)")
    ap.add_argument("--runs-per-device", type=int, metavar="B",
                    help="runs each device computes per compiled call (default: all of a group's "
                         "runs in one call); a fixed B gives bit-identical results on any number "
                         "of devices")
    args = ap.parse_args(argv)
    out = args.out or os.path.join("runs", name, args.preset)
    try:
        if args.preset not in presets:
            raise ConfigError(f"unknown preset {args.preset!r}; known presets: {sorted(presets)}")
        if args.plot_only:
            doc = load_results(out)
            plot(doc, out)
            return 0
        configs = presets[args.preset]()
        if args.runs_per_device is not None:
            configs = {g: c.replace(runs_per_device=args.runs_per_device)
                       for g, c in configs.items()}
        ckpts = [f"checkpoint_{g}.npz" for g in configs]
        res_file = os.path.join(out, "results.json")
        previous = None
        if args.reanalyse:
            # every group must have finished training: a reanalysis never trains
            for (g, cfg), c in zip(configs.items(), ckpts):
                if not cfg.checkpoint_every:
                    raise ConfigError(f"--reanalyse: preset {args.preset!r} (group {g!r}) does not "
                                      f"checkpoint, so there is no saved state to analyse")
                path = os.path.join(out, c)
                ep = checkpoint_epoch(path) if os.path.exists(path) else None
                if ep != cfg.optim.epochs:
                    raise CheckpointError(
                        f"--reanalyse needs the final checkpoint of every group; group {g!r} has "
                        + (f"none ({path})" if ep is None else
                           f"one at epoch {ep} of {cfg.optim.epochs}; run without --reanalyse "
                           f"to finish training"))
            if os.path.exists(res_file):
                previous = load_results(out)
        else:
            # a directory with another run's results is refused; one holding this experiment's
            # checkpoints resumes (each group's checkpoint checks its own config when loaded)
            found = [c for c in ckpts if os.path.exists(os.path.join(out, c))]
            if os.path.exists(res_file) and not args.overwrite:
                raise OutDirError(f"{res_file} exists; pass --overwrite to replace it, --out to "
                                  f"write elsewhere, or --reanalyse to recompute it from the "
                                  f"checkpoints")
            prepare_out_dir(out, overwrite=args.overwrite, resume=bool(found),
                            checkpoint_name=found[0] if found else "checkpoint.npz",
                            artifacts=tuple(ckpts) + ("results.json", "results.csv"))
    except (ConfigError, ValueError, FileNotFoundError, OutDirError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        runs, extra = run(configs, out, not args.quiet)
    except (ConfigError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - t0
    extra = {"wall_time_s": wall, **(extra or {})}
    if args.reanalyse:
        extra["reanalysed"] = True
        if previous is not None:
            # the training times are those of the run that wrote the checkpoints
            extra.update({k: previous[k] for k in ("wall_time_s", "timing") if k in previous})
            extra["reanalysis_wall_time_s"] = wall
    write_results(out, name, args.preset, configs, runs, extra)
    doc = load_results(out)
    plot(doc, out)
    print(runs_table(runs))
    print(f"{len(runs)} runs in {wall:.1f} s; results and figures in {out}")
    return 0


def replace_model(cfg: SweepConfig, **changes) -> SweepConfig:
    return cfg.replace(model=dataclasses.replace(cfg.model, **changes))
