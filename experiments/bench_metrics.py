"""Benchmark of nc_jax.metrics.collapse_report against a naive float64 NumPy reference.

Times (wall clock, best of --repeats after one warm-up call that includes compilation):
  * ``collapse_report`` (jitted, float32, inputs already JAX arrays, boundary checks included) for
    N in {1e4, 1e5} in memory, and ``collapse_report_streaming`` for N = 1e6 (10 batches of 1e5
    taken cyclically from a pool of 2 pre-generated batches, so data generation is not timed);
  * the naive reference: all N^2 pairwise cosines (one N x N float64 matrix, averaged per class
    block) and NC1 from the d x d matrices Sigma_W, Sigma_B with eigh (top C-1 eigenpairs).
    The pairwise part is skipped where the N x N matrix would not fit in memory (N >= 1e5), the
    NC1 part where N = 1e6 (streaming).
  * for the streaming rows, a bare NumPy two-pass loop over the same batches that computes only the
    class means (pass 1: ``np.add.at`` per batch, float64 across batches) and tr(Sigma_W) (pass 2),
    timed in the same run, and the ratio streaming / NumPy loop (compare ratios on a loaded machine).
The last two columns compare the results where the naive reference ran: max absolute difference of
min_intra / max_inter / mean_intra / mean_inter, and the relative difference of NC1.

Usage:  python experiments/bench_metrics.py [--quick | --streaming-only] [--repeats R] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax import metrics

COS_KEYS = ("min_intra", "max_inter", "mean_intra", "mean_inter")


def make_data(n, d, C, seed):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % C).astype(np.int32)
    rng.shuffle(y)
    mu = rng.standard_normal((C, d), dtype=np.float32) * 3.0
    h = mu[y] + rng.standard_normal((n, d), dtype=np.float32)
    return h, y


def block(tree):
    return jax.tree_util.tree_map(lambda x: x.block_until_ready(), tree)


def timed(fn, repeats):
    block(fn())  # warm-up: compilation
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        out = block(fn())
        best = min(best, time.perf_counter() - t)
    return best, out


def naive_cosines(h, y, C):
    """All N^2 pairwise cosines in float64, averaged over each class block."""
    h = h.astype(np.float64)
    U = h / np.linalg.norm(h, axis=1, keepdims=True)
    P = U @ U.T  # N x N
    Y = np.zeros((len(y), C))
    Y[np.arange(len(y)), y] = 1.0
    n = Y.sum(axis=0)
    G = (Y.T @ P @ Y) / np.outer(n, n)
    off = ~np.eye(C, dtype=bool)
    return {"min_intra": np.diag(G).min(), "max_inter": G[off].max(), "mean_intra": np.diag(G).mean(), "mean_inter": G[off].mean()}


def naive_nc1(h, y, C):
    """tr(Sigma_W Sigma_B^+)/C with d x d matrices and eigh, float64."""
    h = h.astype(np.float64)
    N = len(y)
    mu = np.stack([h[y == c].mean(axis=0) for c in range(C)])
    R = h - mu[y]
    Sw = R.T @ R / N
    M = mu - mu.mean(axis=0)
    Sb = M.T @ M / C
    evals, evecs = np.linalg.eigh(Sb)
    V, lam = evecs[:, -(C - 1):], evals[-(C - 1):]
    return float(np.trace(V.T @ Sw @ V / lam)) / C


def numpy_two_pass(batches, C, d):
    """The bare two-pass loop: class means, then tr(Sigma_W) = (1/N) sum_i ||h_i - mu_{y_i}||^2."""
    sums, counts = np.zeros((C, d)), np.zeros(C)
    for h, y in batches():
        part = np.zeros((C, d), np.float32)
        np.add.at(part, y, h)
        sums += part
        counts += np.bincount(y, minlength=C)
    means = (sums / counts[:, None]).astype(np.float32)
    total = 0.0
    for h, y in batches():
        r = h - means[y]
        total += float(np.einsum("ij,ij->", r, r))
    return means, total / counts.sum()


def run_case(n, d, C, repeats, streaming):
    if streaming:
        batch = 100_000
        host = [make_data(batch, d, C, seed) for seed in range(2)]
        pool = [tuple(map(jnp.asarray, b)) for b in host]
        nb = n // batch
        fn = lambda: metrics.collapse_report_streaming(lambda: (pool[i % 2] for i in range(nb)), C)
        # Warm-up on 2 batches compiles every per-batch program; then time the full stream.
        block(metrics.collapse_report_streaming(lambda: iter(pool), C))
        t, out = timed(fn, repeats)
        t0 = time.perf_counter()
        numpy_two_pass(lambda: (host[i % 2] for i in range(nb)), C, d)
        t_np = time.perf_counter() - t0
        return dict(ours=t, cos=None, nc1=None, cos_note="skipped (N^2)", nc1_note="skipped (streaming)",
                    numpy=t_np, ratio=t / t_np)
    h, y = make_data(n, d, C, seed=0)
    hj, yj = jnp.asarray(h), jnp.asarray(y)
    t, out = timed(lambda: metrics.collapse_report(hj, yj, C), repeats)
    row = dict(ours=t)
    if n * n * 8 <= 2e9:  # the N x N float64 cosine matrix must fit comfortably in memory
        t0 = time.perf_counter()
        ref = naive_cosines(h, y, C)
        row["cos"] = time.perf_counter() - t0
        row["dcos"] = max(abs(float(out[k]) - ref[k]) for k in COS_KEYS)
    else:
        row["cos"], row["cos_note"] = None, "skipped (N^2)"
    t0 = time.perf_counter()
    ref_nc1 = naive_nc1(h, y, C)
    row["nc1"] = time.perf_counter() - t0
    row["dnc1"] = abs(float(out["nc1"]) - ref_nc1) / abs(ref_nc1)
    return row


def fmt(x, note=None, spec="{:.3f}"):
    return note if x is None else spec.format(x)


def machine():
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except OSError:
        pass
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} CPU cores{mem}, {jax.devices()[0].platform}, jax {jax.__version__}, numpy {np.__version__}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small subset (N=1e4, d=256; streaming N=1e5)")
    ap.add_argument("--streaming-only", action="store_true",
                    help="only the streaming case N=1e6, d=512, C=100 against the NumPy two-pass loop")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", help="also write the markdown table to this file")
    args = ap.parse_args()

    if args.quick:
        cases = [(10_000, 256, C, False) for C in (10, 100)] + [(100_000, 256, 10, True)]
    elif args.streaming_only:
        cases = [(1_000_000, 512, 100, True)]
    else:
        cases = [(n, d, C, False) for n in (10_000, 100_000) for d in (256, 2048) for C in (10, 100)]
        cases += [(1_000_000, d, C, True) for d in (256, 512, 2048) for C in (10, 100)]

    lines = [
        f"Date: {datetime.date.today().isoformat()}. Machine: {machine()}.",
        "",
        "| N | d | C | mode | collapse_report (s) | naive pairwise cosines (s) | naive d x d NC1 (s) "
        "| max abs diff cosines | rel diff NC1 | NumPy two-pass loop (s) | ratio |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    for n, d, C, streaming in cases:
        r = run_case(n, d, C, args.repeats if n < 1_000_000 else 1, streaming)
        line = (
            f"| {n:.0e} | {d} | {C} | {'streaming' if streaming else 'in memory'} | {r['ours']:.3f} | "
            f"{fmt(r.get('cos'), r.get('cos_note'))} | {fmt(r.get('nc1'), r.get('nc1_note'))} | "
            f"{fmt(r.get('dcos'), '-', '{:.1e}')} | {fmt(r.get('dnc1'), '-', '{:.1e}')} | "
            f"{fmt(r.get('numpy'), '-')} | {fmt(r.get('ratio'), '-', '{:.2f}')} |"
        )
        lines.append(line)
        print(line, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
