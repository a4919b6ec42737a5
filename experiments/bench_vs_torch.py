"""nc-jax against PyTorch, side by side on the same CPU, data, model and optimizer.

The Figure 3.1 model (6-layer MLP, affine BN, d = 32, C = 10, batch 128, SGD lr 0.0679 momentum
0.9, weight decay on every parameter, LR x0.1 at 1/3 and 2/3 of training) on teacher data
exported from nc-jax (`make_dataset`, float32, n = 10000); K runs = 7 thesis WDs x K/7 seeds,
trained by: jax, the public `nc_jax.run_sweep` (one vmapped, jitted program); torch-seq, what most
users write (nn.Module + DataLoader + torch.optim.SGD + MultiStepLR, one run after another); and
torch-bat, a hand-batched PyTorch ensemble (bmm, per-run BN statistics; see `bench_torch.py`).

Rates are run-steps/s (optimizer steps of one run). Steady rate: from the difference of a short
and a long call (--epochs-short / --epochs-long), so init, upload, final evaluation and compiles
cancel. Whole-call rate: the long call's steps over its wall time, compiles included. Each call
runs in a fresh subprocess after a warm-up (XLA_FLAGS from --xla-flags reach only the jax side;
no framework's thread pool idles next to the other); per (width, K) the three are interleaved
--repeats times, orders alternating; the best repeat counts, all are in the JSON. PyTorch gets
as many threads as XLA uses (the CPUs of the process).

The check (--check; also at the end unless --no-check) trains one protocol in all three and
compares, per WD, seed means of accuracy, loss and last-layer NC measures (`collapse_report` on
each framework's features): |mean_jax - mean_torch| <= 3 pooled seed std + `CHECK_FLOORS`. A
speed comparison of different computations would be meaningless: exit status 1 on disagreement.

Usage:
    pip install -e ".[bench]"
    python experiments/bench_vs_torch.py --quick                  # tiny sizes: checks the script
    python experiments/bench_vs_torch.py --widths 256 --runs 21   # the target point
    python experiments/bench_vs_torch.py --out experiments/results/bench_vs_torch.json  # all
    python experiments/bench_vs_torch.py --check                  # the agreement check only
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata as md
import json
import os
import platform
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_agreement import (CHECK, CHECK_FLOORS, CHECK_QUICK, compare,  # noqa: E402,F401
                             run_check)
from bench_torch_workers import (BATCH, CLASSES, DEPTH, DIM, N_FULL, WORKERS,  # noqa: E402,F401
                                 expand)  # expand: this benchmark's grid helper, with grid
from bench_workers import run_worker, worker_main  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
#: nc_jax.config.THESIS_WEIGHT_DECAYS (not imported: this process stays free of JAX; a test
#: checks they are equal)
THESIS_WEIGHT_DECAYS = (1e-4, 3e-4, 5e-4, 1e-3, 3e-3, 7e-3, 1e-2)
FRAMEWORKS = ("jax", "torch_seq", "torch_bat")
TARGETS = {"width": 256, "k": 21, "jax_over_bat": 1.5, "jax_over_seq": 2.0, "whole": 0.9}


def grid(k: int):
    """K runs in nc-jax's order (wd-major, seed-minor): the 7 thesis WDs x K/7 seeds, or the
    first K WDs with seed 0 when K < 7."""
    if k % len(THESIS_WEIGHT_DECAYS) == 0:
        wds, seeds = THESIS_WEIGHT_DECAYS, tuple(range(k // len(THESIS_WEIGHT_DECAYS)))
    elif k < len(THESIS_WEIGHT_DECAYS):
        wds, seeds = THESIS_WEIGHT_DECAYS[:k], (0,)
    else:
        raise SystemExit(f"bench_vs_torch: K must be a multiple of 7 or below 7, got {k}")
    return list(wds), list(seeds)


def cpus() -> int:
    """The CPUs of this process (= `bench_torch.default_threads`, without importing torch)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def steps_per_epoch(n: int) -> int:
    return -(-n // BATCH)  # nc-jax keeps the partial batch, so does the DataLoader


def spawn(kind, spec, xla_flags="", timeout=7200):
    return run_worker(__file__, kind, spec, xla_flags, timeout)


# parent: timing table, check, JSON
def measure(s, data_path, log):
    rows = []
    es, el = s["epochs_short"], s["epochs_long"]
    for w in s["widths"]:
        for k in s["runs"]:
            wds, seeds = grid(k)
            steps = k * steps_per_epoch(s["n"])  # run-steps per epoch
            frameworks = s["frameworks"]
            times, cache = {fw: [] for fw in frameworks}, None
            for rep in range(s["repeats"]):
                fws = frameworks if rep % 2 == 0 else frameworks[::-1]
                for fw in fws:
                    spec = {"fw": fw, "data": data_path, "width": w, "wds": wds, "seeds": seeds,
                            "order": [es, el] if rep % 2 == 0 else [el, es],
                            "threads": s["threads"], "cache_dir": s["cache_dir"]}
                    r = spawn("time", spec, s["xla_flags"] if fw == "jax" else "")
                    times[fw].append({int(e): t for e, t in r["times_s"].items()})
                    cache = cache or r["persistent_cache"]
                    log(f"  width {w} K {k} repeat {rep + 1} {fw}: "
                        + ", ".join(f"{e} ep {t:.2f} s" for e, t in sorted(times[fw][-1].items())))

            def steady(t):
                dt = t[el] - t[es]
                return steps * (el - es) / dt if dt > 0 else None  # noise beats a tiny config

            row = {"width": w, "k": k, "n": s["n"], "steps_per_epoch_per_run": steps // k,
                   "jax_persistent_cache": cache,
                   "times_s": {fw: [{str(e): v for e, v in t.items()} for t in times[fw]]
                               for fw in frameworks}}
            for fw in FRAMEWORKS:
                if fw not in frameworks:
                    row[f"{fw}_rates"], row[fw] = [], None
                    continue
                rates = [steady(t) for t in times[fw]]
                row[f"{fw}_rates"] = rates
                row[fw] = max((r for r in rates if r), default=None)
            row["jax_whole"] = steps * el / min(t[el] for t in times["jax"])
            for name, den in (("jax_over_bat", "torch_bat"), ("jax_over_seq", "torch_seq")):
                row[name] = row["jax"] / row[den] if row["jax"] and row[den] else None
            row["whole_over_steady"] = row["jax_whole"] / row["jax"] if row["jax"] else None
            rows.append(row)
    return rows


def fmt(v, spec=".1f", suffix=""):
    return "n/a" if v is None else f"{v:{spec}}{suffix}"


def print_table(s, rows):
    cache = ("a warm persistent compilation cache" if any(r["jax_persistent_cache"] for r in rows)
             else "cold compiles")
    print(f"\nrun-steps/s, steady state from {s['epochs_short']}- and {s['epochs_long']}-epoch "
          f"calls (batch {BATCH}, {DEPTH} layers, affine BN, d={DIM}, C={CLASSES}, n={s['n']}; "
          f"best of {s['repeats']} interleaved repeats; torch threads {s['threads']})")
    head = (f"{'width':>5} {'K':>3} {'jax':>8} {'torch-seq':>9} {'torch-bat':>9} "
            f"{'jax/bat':>7} {'jax/seq':>7} {'whole':>8} {'whole/steady':>12}")
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['width']:>5} {r['k']:>3} {fmt(r['jax']):>8} {fmt(r['torch_seq']):>9} "
              f"{fmt(r['torch_bat']):>9} {fmt(r['jax_over_bat'], '.2f', 'x'):>7} "
              f"{fmt(r['jax_over_seq'], '.2f', 'x'):>7} {fmt(r['jax_whole']):>8} "
              f"{fmt(r['whole_over_steady'], '.2f'):>12}")
    print(f"(whole: jax's {s['epochs_long']}-epoch run_sweep call, {cache}, over its wall time; "
          f"per-repeat rates in the JSON)")


def targets(rows):
    """{target: (met, value)} at the target point (width 256, K = 21), when measured."""
    t = TARGETS
    r = next((r for r in rows if (r["width"], r["k"]) == (t["width"], t["k"])), None)
    at = f"at width {t['width']}, K = {t['k']}"
    return {} if r is None else {
        f"{what} {at}": (r[key] is not None and r[key] >= t[goal], fmt(r[key], ".2f"))
        for key, goal, what in (
            ("jax_over_bat", "jax_over_bat", f"nc-jax >= {t['jax_over_bat']}x torch-bat"),
            ("jax_over_seq", "jax_over_seq", f"nc-jax >= {t['jax_over_seq']}x torch-seq"),
            ("whole_over_steady", "whole", f"whole-call rate >= {t['whole']:.0%} of steady"))
        if r[key] is not None}  # a framework left out (--frameworks) measures no ratio


def frameworks(text: str) -> list:
    """--frameworks as a list in FRAMEWORKS order, jax always first; unknown names refused."""
    names = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in names if v not in FRAMEWORKS]
    if bad:
        raise SystemExit(f"bench_vs_torch: unknown framework(s) {bad}; known: {list(FRAMEWORKS)}")
    return ["jax"] + [f for f in FRAMEWORKS[1:] if f in names]


def versions():
    def v(p):
        try:
            return md.version(p)
        except md.PackageNotFoundError:
            return None
    return {p: v(p) for p in ("jax", "jaxlib", "flax", "optax", "torch", "numpy")}


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the script")
    ap.add_argument("--widths", help="comma-separated widths (default 128,256,512)")
    ap.add_argument("--runs", help="comma-separated K, multiples of 7 or < 7 (default 7,21,63)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 2)")
    ap.add_argument("--epochs-short", type=int, default=None, help="short call (default 2)")
    ap.add_argument("--epochs-long", type=int, default=None,
                    help="long call, also the whole-call rate's (default 10)")
    ap.add_argument("--n", type=int, default=None, help="samples (default 10000)")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="PyTorch threads (default: the CPUs of the process, as XLA uses)")
    ap.add_argument("--xla-flags", default="", help="XLA_FLAGS for the jax side only")
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                    help=f"comma-separated subset of {','.join(FRAMEWORKS)} to time (default all; "
                         "jax is always timed)")
    ap.add_argument("--compile-cache", action="store_true",
                    help="jax workers use a warm persistent compilation cache")
    ap.add_argument("--check", action="store_true", help="only the agreement check")
    ap.add_argument("--no-check", action="store_true", help="skip the agreement check")
    ap.add_argument("--out", help="write the results to this JSON file")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker, WORKERS)
    q = args.quick

    def ints(v, default):
        return [int(a) for a in (v or default).split(",") if a.strip()]

    s = {"widths": ints(args.widths, "16" if q else "128,256,512"),
         "runs": ints(args.runs, "2" if q else "7,21,63"),
         "repeats": args.repeats or (1 if q else 2),
         "epochs_short": args.epochs_short or (1 if q else 2),
         "epochs_long": args.epochs_long or (4 if q else 10),
         "n": args.n or (300 if q else N_FULL), "xla_flags": args.xla_flags,
         "threads": args.torch_threads or cpus(), "quick": q, "cache_dir": None,
         "frameworks": frameworks(args.frameworks)}
    if s["epochs_long"] <= s["epochs_short"]:
        raise SystemExit("bench_vs_torch: --epochs-long must exceed --epochs-short")
    if s["n"] % BATCH == 1:
        raise SystemExit("bench_vs_torch: n % 128 == 1 leaves a 1-sample batch, which "
                         "PyTorch's BatchNorm rejects in train mode")
    for k in s["runs"]:
        grid(k)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # the table and stderr's progress in order
    tmp = tempfile.mkdtemp(prefix="bench_vs_torch_")
    try:
        return _run(args, s, tmp, log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(args, s, tmp, log):
    if args.compile_cache:
        s["cache_dir"] = os.path.join(tmp, "xla_cache")
    doc = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
           "machine": {"platform": platform.platform(), "processor": platform.processor(),
                       "cpu_count": os.cpu_count(), "python": platform.python_version(),
                       "load_average_at_start": os.getloadavg(), **versions(),
                       "JAX_COMPILATION_CACHE_DIR": os.environ.get("JAX_COMPILATION_CACHE_DIR"),
                       "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " " +
                                     args.xla_flags).strip()},
           "settings": {**s, "depth": DEPTH, "dim": DIM, "classes": CLASSES, "batch": BATCH,
                        "lr": 0.0679, "momentum": 0.9, "bn": "affine",
                        "thesis_weight_decays": THESIS_WEIGHT_DECAYS}}
    print(f"# bench_vs_torch {doc['date']}  {doc['machine']['platform']}  cpus={os.cpu_count()}"
          f"  load={os.getloadavg()[0]:.2f}  jax {doc['machine']['jax']}  torch "
          f"{doc['machine']['torch']}", flush=True)
    ok = True
    if not args.check:
        data_path = os.path.join(tmp, f"data_{s['n']}.npz")
        spawn("data", {"n": s["n"], "path": data_path})
        t0 = time.perf_counter()
        rows = measure(s, data_path, log)
        doc["rows"], doc["measure_time_s"] = rows, time.perf_counter() - t0
        print_table(s, rows)
        checks = targets(rows)
        doc["targets"] = {k: {"met": m, "value": v} for k, (m, v) in checks.items()}
        if checks:
            print("\ntargets")
            for k, (m, v) in checks.items():
                print(f"  [{'met' if m else 'NOT met'}] {k}: {v}")
    if args.check or not args.no_check:
        ok, doc["check"] = run_check(CHECK_QUICK if s["quick"] else CHECK, tmp, s["threads"],
                                     args.xla_flags, log, spawn)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
