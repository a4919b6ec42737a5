"""Test the thesis' conjectures on saved results (no training):

- 3.1.1 (NC improves with WD): among converged affine-BN runs of one seed, for every pair
  lambda1 < lambda2, gap(lambda2) - gap(lambda1) >= -eps log(lambda2 / lambda1), where
  gap = min_c intra_c - max_{c != c'} inter_cc'. We report eps* = the smallest eps that makes
  every pair hold (0 = perfectly monotone) and the Spearman correlation of gap with log WD.
- 3.2.1 (NC sharpens with depth): gap(layer l+1) - gap(layer l) >= -eps for every layer l;
  eps* per run = max(0, -min_l of the difference).
- 3.2.2 (depth minimization improves with WD): the epsilon-effective depth is non-increasing in
  WD among converged runs; we count the violating pairs.

A conjecture is called "supported" when eps* <= 0.05 (a tolerance we choose and report) or, for
3.2.2, when no pair violates it. Failing on our data is a finding, reported as such.

    python experiments/conjectures.py --wd experiments/results/fig3_1/paper \
        --depth experiments/results/fig3_3/paper --out experiments/results/conjectures
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import os
import sys

import numpy as np

from nc_jax.results import load_results

TOLERANCE = 0.05


def _spearman(a, b):
    if len(a) < 3:
        return None
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def conjecture_311(runs):
    by_seed = collections.defaultdict(list)
    for r in runs:
        if r["group"] == "affine" and r["converged"]:
            by_seed[r["seed"]].append((r["weight_decay"], r["min_intra"] - r["max_inter"]))
    rows, eps_all = [], []
    for seed, pts in sorted(by_seed.items()):
        pts.sort()
        eps = 0.0
        for i in range(len(pts)):
            for j in range(i + 1, len(pts)):
                d = pts[j][1] - pts[i][1]
                eps = max(eps, -d / math.log(pts[j][0] / pts[i][0]))
        eps_all.append(eps)
        rows.append({"seed": seed, "n_converged": len(pts), "eps_star": eps,
                     "spearman_gap_vs_wd": _spearman([p[0] for p in pts], [p[1] for p in pts]),
                     "gap_by_wd": {f"{w:g}": g for w, g in pts}})
    worst = max(eps_all) if eps_all else None
    return {"conjecture": "3.1.1", "claim": "NC (min intra - max inter) grows with WD among "
            "converged affine-BN runs", "eps_star": worst,
            "supported": None if worst is None else worst <= TOLERANCE, "per_seed": rows}


def conjecture_321(runs):
    rows = []
    for r in runs:
        if not r.get("layers") or not r["converged"]:
            continue
        gap = np.array([l["min_intra"] - l["max_inter"] for l in r["layers"]])
        diffs = np.diff(gap)
        rows.append({"weight_decay": r["weight_decay"], "seed": r["seed"],
                     "eps_star": float(max(0.0, -diffs.min())) if len(diffs) else 0.0,
                     "n_decreasing_layers": int((diffs < 0).sum()),
                     "first_gap": float(gap[0]), "last_gap": float(gap[-1])})
    worst = max((x["eps_star"] for x in rows), default=None)
    return {"conjecture": "3.2.1", "claim": "per-layer (min intra - max inter) grows with depth",
            "eps_star": worst, "supported": None if worst is None else worst <= TOLERANCE,
            "per_run": rows}


def conjecture_322(runs):
    by_seed = collections.defaultdict(list)
    for r in runs:
        if r.get("effective_depth") is not None and r["converged"]:
            by_seed[r["seed"]].append((r["weight_decay"], r["effective_depth"]))
    rows, violations, pairs = [], 0, 0
    for seed, pts in sorted(by_seed.items()):
        pts.sort()
        v = sum(1 for i in range(len(pts)) for j in range(i + 1, len(pts)) if pts[j][1] > pts[i][1])
        n = len(pts) * (len(pts) - 1) // 2
        violations += v
        pairs += n
        rows.append({"seed": seed, "effective_depth_by_wd": {f"{w:g}": d for w, d in pts},
                     "violating_pairs": v, "pairs": n})
    return {"conjecture": "3.2.2", "claim": "effective depth is non-increasing in WD (converged runs)",
            "violating_pairs": violations, "pairs": pairs,
            "supported": None if pairs == 0 else violations == 0, "per_seed": rows}


def render(results) -> str:
    lines = ["| conjecture | claim | measure | supported |", "|---|---|---|---|"]
    for c in results:
        if "eps_star" in c:
            m = "no converged runs" if c["eps_star"] is None else f"eps* = {c['eps_star']:.4f} (tolerance {TOLERANCE})"
        else:
            m = f"{c['violating_pairs']} of {c['pairs']} WD pairs violate"
        s = {None: "no data", True: "yes", False: "**no**"}[c["supported"]]
        lines.append(f"| {c['conjecture']} | {c['claim']} | {m} | {s} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wd", help="results dir of fig3_1_wd_bn.py")
    ap.add_argument("--depth", help="results dir of fig3_3_depth.py")
    ap.add_argument("--out", help="write conjectures.json / conjectures.md here")
    args = ap.parse_args(argv)
    if not args.wd and not args.depth:
        print("error: give --wd and/or --depth results directories", file=sys.stderr)
        return 2
    try:
        results = []
        if args.wd:
            results.append(conjecture_311(load_results(args.wd)["runs"]))
        if args.depth:
            d = load_results(args.depth)["runs"]
            results += [conjecture_321(d), conjecture_322(d)]
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = render(results)
    print(table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "conjectures.json"), "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.join(args.out, "conjectures.md"), "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
