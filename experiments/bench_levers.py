"""The performance levers, each measured against the default and checked for
bit-identical results (`docs/performance.md`, "Levers").

One configuration (default: the Figure 3.1 model, width 256, K = 21 runs = 7 thesis WDs x 3
seeds, affine BN, batch 128, n = 10000 teacher samples, constant LR) is trained by the public
`nc_jax.run_sweep` under each lever, every measurement in a fresh subprocess (XLA_FLAGS only
reach a process at its JAX import), the levers interleaved over --repeats rounds:

- XLA:CPU flags (`--xla_cpu_experimental_onednn_custom_call=true`, `--xla_cpu_use_xnnpack=true`);
- the run-axis formulation, `SweepConfig.vmap_runs` (0 = all runs vmapped: the batched GEMMs;
  b > 0 = `lax.map` over the runs, b at a time vmapped);
- `epochs_per_call` (1 = one compiled call per epoch; the default here is one call for all).

Steady rate (run-steps/s) from the difference of a short and a long call (--epochs-short,
--epochs-long), so init, compiles and the final evaluation cancel; whole-call rate from the long
call. "bit-identical" compares the long call's final parameters, BN statistics and losses with
the default's, byte for byte; otherwise the largest relative difference of the final losses.
A lever that changes results bitwise stays opt-in (the project's rule).

    python experiments/bench_levers.py                       # the target point, ~10 min idle
    python experiments/bench_levers.py --quick               # tiny: checks the script
    python experiments/bench_levers.py --out experiments/results/bench_levers.json
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_torch_workers import (BATCH, DEPTH, N_FULL, _jax_sweep, _load,  # noqa: E402
                                 worker_data)
from bench_vs_torch import grid, steps_per_epoch, versions  # noqa: E402
from bench_workers import run_worker, worker_main  # noqa: E402

#: name -> (XLA_FLAGS, SweepConfig.vmap_runs, epochs_per_call or None = one call)
LEVERS = {
    "default": ("", 0, None),
    "onednn": ("--xla_cpu_experimental_onednn_custom_call=true", 0, None),
    "xnnpack": ("--xla_cpu_use_xnnpack=true", 0, None),
    "vmap_runs=7": ("", 7, None),
    "vmap_runs=1": ("", 1, None),
    "epochs_per_call=1": ("", 0, 1),
}


def worker_time(spec):
    """Short and long run_sweep calls of one lever (after a warm-up that brings up the backend);
    the long call's final numbers hashed for the bit-identity check."""
    import numpy as np

    import jax
    x, y = _load(spec["data"])
    wds, seeds = grid(spec["k"])

    def call(epochs, wds, seeds):
        return _jax_sweep(x, y, spec["width"], wds, seeds, epochs, decay=(),
                          vmap_runs=spec["vmap_runs"],
                          epochs_per_call=spec["epochs_per_call"] or epochs)[0]

    call(1, wds[:1], seeds[:1])
    times = {}
    for e in spec["order"]:
        t0 = time.perf_counter()
        res = call(e, wds, seeds)
        jax.block_until_ready(res.states)
        times[str(e)] = time.perf_counter() - t0
        if e == max(spec["order"]):
            long = res
    h = hashlib.sha256()
    for leaf in jax.tree.leaves((long.states.params, long.states.batch_stats)):
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    h.update(np.asarray(long.final_loss).tobytes())
    return {"times_s": times, "sha256": h.hexdigest(),
            "final_loss": [float(v) for v in long.final_loss]}


WORKERS = {"data": worker_data, "time": worker_time}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the script")
    ap.add_argument("--levers", help=f"comma-separated, from {', '.join(LEVERS)} (default all)")
    ap.add_argument("--width", type=int, default=None, help="default 256")
    ap.add_argument("--runs", type=int, default=None, help="K (multiple of 7 or < 7; default 21)")
    ap.add_argument("--n", type=int, default=None, help=f"samples (default {N_FULL})")
    ap.add_argument("--epochs-short", type=int, default=None, help="default 2")
    ap.add_argument("--epochs-long", type=int, default=None, help="default 6")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 2)")
    ap.add_argument("--out", help="write the results to this JSON file")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main(args.worker, WORKERS)
    q = args.quick
    names = [v.strip() for v in (args.levers or ",".join(LEVERS)).split(",") if v.strip()]
    bad = [v for v in names if v not in LEVERS]
    if bad:
        raise SystemExit(f"bench_levers: unknown lever(s) {bad}; known: {list(LEVERS)}")
    if "default" not in names:
        names.insert(0, "default")  # the reference of every ratio and of the bit-identity
    s = {"width": args.width or (16 if q else 256), "k": args.runs or (2 if q else 21),
         "n": args.n or (300 if q else N_FULL), "es": args.epochs_short or (1 if q else 2),
         "el": args.epochs_long or (3 if q else 6), "repeats": args.repeats or (1 if q else 2)}
    grid(s["k"])
    if s["el"] <= s["es"]:
        raise SystemExit("bench_levers: --epochs-long must exceed --epochs-short")
    doc = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
           "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                       "load_average_at_start": os.getloadavg(), **versions()},
           "settings": {**s, "depth": DEPTH, "batch": BATCH,
                        "levers": {n: LEVERS[n] for n in names}}}
    print(f"# bench_levers {doc['date']}  {doc['machine']['platform']}  cpus={os.cpu_count()}  "
          f"load={os.getloadavg()[0]:.2f}  jax {doc['machine']['jax']}", flush=True)
    tmp = tempfile.mkdtemp(prefix="bench_levers_")
    try:
        data_path = os.path.join(tmp, "data.npz")
        script = os.path.abspath(__file__)
        run_worker(script, "data", {"n": s["n"], "path": data_path})
        raw = {n: [] for n in names}
        for rep in range(s["repeats"]):
            for name in (names if rep % 2 == 0 else names[::-1]):
                flags, vmap_runs, epc = LEVERS[name]
                spec = {"data": data_path, "width": s["width"], "k": s["k"],
                        "vmap_runs": vmap_runs, "epochs_per_call": epc,
                        "order": [s["es"], s["el"]] if rep % 2 == 0 else [s["el"], s["es"]]}
                try:
                    r = run_worker(script, "time", spec, flags, timeout=3600)
                except RuntimeError as e:  # e.g. a flag this XLA does not know
                    r = {"error": str(e)[-600:]}
                raw[name].append(r)
                what = ((r["error"].splitlines()[-1:] or ["failed"])[0] if "error" in r else
                        ", ".join(f"{e} ep {t:.2f} s" for e, t in r["times_s"].items()))
                print(f"  round {rep + 1} {name}: {what}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    doc["rows"] = rows = summarize(s, names, raw)
    print(f"\nwidth {s['width']}, K = {s['k']}, n = {s['n']}, batch {BATCH}; steady from "
          f"{s['es']}- and {s['el']}-epoch calls, best of {s['repeats']}; whole = the "
          f"{s['el']}-epoch call")
    head = f"{'lever':>18} {'steady rs/s':>11} {'x default':>9} {'whole rs/s':>10} {'results':>26}"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        if r.get("error"):
            print(f"{r['lever']:>18} failed: {r['error'].strip().splitlines()[-1][-60:]}")
            continue
        same = ("bit-identical" if r["bit_identical"] else
                f"differ (loss rel {r['max_rel_loss_diff']:.1e})")
        print(f"{r['lever']:>18} {r['steady']:>11.1f} {r['speedup']:>8.2f}x {r['whole']:>10.1f} "
              f"{same:>26}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({**doc, "raw": raw}, f, indent=1)
        print(f"wrote {args.out}")
    return 0


def summarize(s, names, raw):
    """One row per lever: best steady and whole-call rates, ratio to the default, bit-identity."""
    import numpy as np
    steps = s["k"] * steps_per_epoch(s["n"])
    ref = next((r for r in raw["default"] if "error" not in r), None)
    rows = []
    for name in names:
        ok = [r for r in raw[name] if "error" not in r]
        if not ok:
            rows.append({"lever": name, "error": raw[name][-1]["error"]})
            continue
        es, el = str(s["es"]), str(s["el"])
        steady = max(steps * (s["el"] - s["es"]) / max(r["times_s"][el] - r["times_s"][es], 1e-9)
                     for r in ok)
        whole = max(steps * s["el"] / r["times_s"][el] for r in ok)
        a, b = np.asarray(ok[0]["final_loss"]), np.asarray(ref["final_loss"]) if ref else None
        rows.append({"lever": name, "steady": steady, "whole": whole,
                     "bit_identical": bool(ref) and all(r["sha256"] == ref["sha256"] for r in ok),
                     "max_rel_loss_diff": (float(np.max(np.abs(a - b) / np.abs(b)))
                                           if b is not None else None)})
    base = next((r["steady"] for r in rows if r["lever"] == "default" and "steady" in r), None)
    for r in rows:
        if "steady" in r:
            r["speedup"] = r["steady"] / base if base else float("nan")
    return rows


if __name__ == "__main__":
    sys.exit(main())
