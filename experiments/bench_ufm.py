"""Speed of the layer-peeled solver nc_jax.ufm: (alpha, beta) problems per second, vmapped.

Setting: C = 10 classes, n = 100 samples per class (N = 1000), feature dimension d (default 10 and
256, the trained networks' width), the solver's defaults (1000 Riemannian BB steps, 250-step
alpha beta continuation, equality constraints), alpha beta spread log-uniformly over [0.5, 50].
A batch of B problems is ONE compiled call ``jit(vmap(solve))`` over (alpha, beta, key); the
timing is the best of --repeats calls after a warm-up call that compiles (compile time reported
separately). Every batch is checked: the largest |L/m - 1| and the worst cosines are printed, so a
fast but wrong solver would show.

    python experiments/bench_ufm.py [--dims 10,256] [--batches 1,16,64,256] [--repeats 2] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax import ufm

C, N_PER = 10, 100


def run(d, B, repeats, steps):
    ab = np.exp(np.linspace(np.log(0.5), np.log(50.0), B)).astype(np.float32)
    alpha = np.sqrt(ab).astype(np.float32)
    keys = jax.random.split(jax.random.key(0), B)

    def one(a, b, k):
        s = ufm.solve(a, b, num_classes=C, dim=d, n_per_class=N_PER, key=k, steps=steps)
        g = ufm.geometry(s.h, s.W, s.y)
        return s.rel_gap, g["min_intra"], g["max_inter"], g["min_inter"]

    f = jax.jit(jax.vmap(one))
    args = (jnp.asarray(alpha), jnp.asarray(ab / alpha), keys)
    t = time.perf_counter()
    compiled = f.lower(*args).compile()
    t_compile = time.perf_counter() - t
    jax.block_until_ready(compiled(*args))
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - t)
    rel, mi, mx, mn = (np.asarray(o) for o in out)
    inter_err = max(np.abs(mx + 1 / (C - 1)).max(), np.abs(mn + 1 / (C - 1)).max())
    return dict(dim=d, batch=B, compile_s=t_compile, run_s=best, problems_per_s=B / best,
                steps_per_s=B * steps / best, max_abs_rel_gap=float(np.abs(rel).max()),
                max_one_minus_intra=float((1 - mi).max()), max_inter_error=float(inter_err))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dims", default="10,256")
    ap.add_argument("--batches", default="1,16,64,256")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--out", help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    env = dict(jax=jax.__version__, backend=jax.default_backend(), machine=platform.machine(),
               cpu_count=os.cpu_count(), date=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    print(f"nc_jax.ufm.solve, C={C}, n={N_PER}/class (N={C * N_PER}), {args.steps} steps, "
          f"alpha beta in [0.5, 50]; {env}")
    print(f"{'d':>4} {'B':>5} {'compile s':>10} {'run s':>8} {'problems/s':>11} {'steps/s':>10} "
          f"{'max|L/m-1|':>11} {'max 1-intra':>12} {'max|inter+1/9|':>15}")
    rows = []
    for d in (int(x) for x in args.dims.split(",")):
        for B in (int(x) for x in args.batches.split(",")):
            r = run(d, B, args.repeats, args.steps)
            rows.append(r)
            print(f"{d:>4} {B:>5} {r['compile_s']:>10.2f} {r['run_s']:>8.3f} {r['problems_per_s']:>11.1f} "
                  f"{r['steps_per_s']:>10.0f} {r['max_abs_rel_gap']:>11.1e} {r['max_one_minus_intra']:>12.1e} "
                  f"{r['max_inter_error']:>15.1e}", flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(dict(environment=env, C=C, n_per_class=N_PER, steps=args.steps, rows=rows), fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
