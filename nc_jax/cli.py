"""Command line: `python -m nc_jax.cli --preset demo` trains a weight-decay sweep and prints a table.

With `--out DIR` the sweep is checkpointed to DIR/checkpoint.npz and its results are written to
DIR/results.json and DIR/results.csv (atomically); re-running the same command resumes from the
last checkpoint. Bad values print `error: <message>` and exit with status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import os
import sys

import jax

from nc_jax.checkpoint import (CHECKPOINT_NAME, CheckpointError, OutDirError, atomic_write_json,
                               atomic_write_text, checkpoint_epoch, resumable_run_sweep)
from nc_jax.config import ConfigError, PRESETS, preset
from nc_jax.sweep import SweepResult, run_sweep

#: Checkpoint interval (epochs) of `--out` runs when neither --checkpoint-every nor the preset
#: sets one: frequent enough to lose little on a kill, rare enough to cost nothing measurable.
DEFAULT_CHECKPOINT_EVERY = 10


def _parse_floats(s: str):
    return tuple(float(v) for v in s.split(",") if v.strip())


def _parse_ints(s: str):
    return tuple(int(v) for v in s.split(",") if v.strip())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Train a weight-decay x seed grid as one vmapped program.")
    ap.add_argument("--preset", default="demo", help=f"one of {sorted(PRESETS)}")
    ap.add_argument("--bn", help="affine | plain | none")
    ap.add_argument("--depth", type=int)
    ap.add_argument("--width", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--weight-decays", type=_parse_floats)
    ap.add_argument("--seeds", type=_parse_ints)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--out", metavar="DIR",
                    help="checkpoint to DIR/checkpoint.npz and write DIR/results.{json,csv}; "
                         "re-running the same command resumes from the checkpoint")
    ap.add_argument("--overwrite", action="store_true",
                    help="with --out: discard the checkpoint and results already in DIR")
    ap.add_argument("--checkpoint-every", type=int, metavar="N",
                    help=f"with --out: save every N epochs (default: the preset's value, or "
                         f"{DEFAULT_CHECKPOINT_EVERY} when it has none); the end is always saved")
    ap.add_argument("--runs-per-device", type=int, metavar="B",
                    help="runs each device computes per compiled call (default: all runs in one "
                         "call); a fixed B gives bit-identical results on any number of devices")
    args = ap.parse_args(argv)
    if args.out is None and (args.overwrite or args.checkpoint_every is not None):
        ap.error("--overwrite and --checkpoint-every need --out DIR")
    try:
        cfg = preset(args.preset)
        model_changes = {k: v for k, v in (("bn", args.bn), ("depth", args.depth),
                                            ("width", args.width)) if v is not None}
        if model_changes:
            cfg = cfg.replace(model=dataclasses.replace(cfg.model, **model_changes))
        if args.epochs is not None:
            cfg = cfg.replace(optim=dataclasses.replace(cfg.optim, epochs=args.epochs))
        if args.weight_decays is not None:
            cfg = cfg.replace(weight_decays=args.weight_decays)
        if args.seeds is not None:
            cfg = cfg.replace(seeds=args.seeds)
        if args.runs_per_device is not None:
            cfg = cfg.replace(runs_per_device=args.runs_per_device)
        if args.checkpoint_every is not None:
            cfg = cfg.replace(checkpoint_every=args.checkpoint_every)
        elif args.out is not None and not cfg.checkpoint_every:
            cfg = cfg.replace(checkpoint_every=DEFAULT_CHECKPOINT_EVERY)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        if args.out is None:
            res = run_sweep(cfg, progress=not args.quiet)
        else:
            ckpt = os.path.join(args.out, CHECKPOINT_NAME)
            if not args.overwrite and os.path.exists(ckpt):
                print(f"resuming from {ckpt} (epoch {checkpoint_epoch(ckpt)} of "
                      f"{cfg.optim.epochs})", file=sys.stderr)
            res = resumable_run_sweep(cfg, args.out, overwrite=args.overwrite,
                                      progress=not args.quiet)
            write_results(args.out, res)
    except (ConfigError, CheckpointError, OutDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(res.table())
    print(f"{res.num_runs} runs x {cfg.optim.epochs} epochs in {res.wall_time_s:.1f} s "
          f"(compile {res.compile_time_s:.1f} s) on {jax.devices()[0].platform}")
    return 0


def write_results(out_dir: str, res: SweepResult) -> None:
    """results.json (config, runs, final loss curves) and results.csv (one row per run), both
    written atomically so a kill never leaves a half-written results file."""
    runs = res.runs()
    doc = {"config": res.config.to_dict(), "runs": runs,
           "history": {k: v.tolist() for k, v in res.history.items()},
           "num_devices": res.num_devices, "runs_per_device": res.runs_per_device,
           "backend": jax.default_backend()}
    # json cannot hold NaN: a diverged run's curve is reported as missing values
    doc["history"] = {k: [[x if x == x and abs(x) != float("inf") else None for x in row]
                           for row in v] for k, v in doc["history"].items()}
    atomic_write_json(os.path.join(out_dir, "results.json"), doc, allow_nan=False)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(runs[0]))
    w.writeheader()
    for r in runs:
        w.writerow({k: "" if v is None else v for k, v in r.items()})
    atomic_write_text(os.path.join(out_dir, "results.csv"), buf.getvalue())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
