"""Command line: `python -m nc_jax.cli --preset demo` trains a weight-decay sweep and prints a table."""
from __future__ import annotations

import argparse
import dataclasses
import sys

import jax

from nc_jax.config import ConfigError, PRESETS, preset
from nc_jax.sweep import run_sweep


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
    args = ap.parse_args(argv)
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
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res = run_sweep(cfg, progress=not args.quiet)
    print(res.table())
    print(f"{res.num_runs} runs x {cfg.optim.epochs} epochs in {res.wall_time_s:.1f} s "
          f"(compile {res.compile_time_s:.1f} s) on {jax.devices()[0].platform}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
