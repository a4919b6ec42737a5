"""Test the thesis' conjectures on saved results (no training):

- 3.1.1 (NC improves with WD): among the converged runs of one seed of a network with BN
  before the last layer (affine and plain BN, each tested on its own), for every pair
  lambda1 < lambda2, gap(lambda2) - gap(lambda1) >= -eps log(lambda2 / lambda1), where
  gap = min_c intra_c - max_{c != c'} inter_cc'. We report eps* = the smallest eps that makes
  every pair hold (0 = perfectly monotone) and the Spearman correlation of gap with log WD.
- 3.2.1 (NC sharpens with depth): gap(layer l+1) - gap(layer l) >= -eps for every layer l;
  eps* per run = max(0, -min_l of the difference).
- 3.2.2 (depth minimization improves with WD): the epsilon-effective depth is non-increasing in
  WD among converged runs; we count the violating pairs.

A conjecture is called "supported" when eps* <= 0.05 (a tolerance we choose and report) or, for
3.2.2, when no pair violates it. Failing on our data is a finding, reported as such. The verdict
of 3.1.1 depends on that tolerance and on which runs count as converged, so `--sensitivity`
adds its eps* under the filters 100% / >= 99.9% / >= 99% train accuracy and the verdict under the
tolerances 0.01 / 0.05 / 0.1, and eps* of the seed-mean gap curve with a bootstrap 95% interval
(seeds resampled with replacement at each WD, `--bootstrap` replicates, NumPy seed 0).

    python experiments/conjectures.py --wd experiments/results/fig3_1/paper \
        --depth experiments/results/fig3_3/paper --sensitivity --out experiments/results/conjectures

`--wd` and `--depth` take several directories; every conjecture is tested per data set and
preset (a directory's protocol).
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import os
import sys

import numpy as np

from nc_jax.analysis import spearman
from nc_jax.runs import load_results

TOLERANCE = 0.05
#: The convergence filters (train accuracy, BN eval mode, whole training set) and the tolerances of
#: the sensitivity table.
FILTERS = (1.0, 0.999, 0.99)
TOLERANCES = (0.01, 0.05, 0.1)


def counts(run: dict, min_accuracy: float = 1.0) -> bool:
    """Whether a run enters a test: `converged` (exactly 100% train accuracy) at the thesis' rule,
    else train accuracy >= min_accuracy and not diverged."""
    if min_accuracy >= 1.0:
        return bool(run["converged"])
    acc = run.get("train_accuracy")
    return acc is not None and acc >= min_accuracy and not run.get("diverged", False)


def eps_star_by_wd(pts):
    """pts: [(wd, gap)] of one network and seed, any order. For each WD lambda_2 the smallest eps
    with gap(lambda_2) - gap(lambda_1) >= -eps log(lambda_2 / lambda_1) for every lambda_1 <
    lambda_2 (Conjecture 3.1.1), 0 when none is violated; returns {wd: eps*}."""
    pts = sorted(pts)
    out = {}
    for j in range(len(pts)):
        e = 0.0
        for i in range(j):
            e = max(e, -(pts[j][1] - pts[i][1]) / math.log(pts[j][0] / pts[i][0]))
        out[pts[j][0]] = e
    return out


def by_data(dirs) -> dict:
    """{"<data kind> (<preset>)": runs} over the results directories, in order of first
    appearance: each conjecture is tested on each data set and protocol separately (3.1.1 and
    3.2.1 are stated for the conic-hull data; the thesis' figures use teacher data; two presets
    of one data set, e.g. 3 and 5 seeds, are two protocols)."""
    out = {}
    for d in dirs:
        doc = load_results(d)
        for r in doc["runs"]:
            out.setdefault(f"{r.get('data') or 'teacher'} ({doc.get('preset')})", []).append(r)
    return out


def _gap_cells(runs, min_accuracy=1.0):
    """{(group, seed): [(wd, min intra - max inter)]} of the runs with BN before the last layer
    that pass the filter."""
    cells = collections.defaultdict(list)
    for r in runs:
        if r.get("group") != "none" and counts(r, min_accuracy) and r.get("bn", r.get("group")) != "none":
            cells[(r["group"], r["seed"])].append((r["weight_decay"], r["min_intra"] - r["max_inter"]))
    return cells


def mean_curve_eps(runs, group, min_accuracy=1.0, replicates=2000, seed=0):
    """eps* of the seed-mean gap curve of `group` (mean over the seeds that pass the filter at each
    WD) and a bootstrap 95% interval: the seeds of every WD resampled with replacement, eps* of
    each resampled mean curve, its 2.5% and 97.5% quantiles. Returns (eps*, lo, hi, n_wds)."""
    by_wd = collections.defaultdict(list)
    for (g, _), pts in _gap_cells(runs, min_accuracy).items():
        if g == group:
            for w, gap in pts:
                by_wd[w].append(gap)
    wds = sorted(by_wd)
    if len(wds) < 2:
        return None, None, None, len(wds)
    point = max(eps_star_by_wd([(w, float(np.mean(by_wd[w]))) for w in wds]).values())
    rng = np.random.default_rng(seed)
    boot = [max(eps_star_by_wd([(w, float(np.mean(rng.choice(by_wd[w], len(by_wd[w])))))
                                for w in wds]).values()) for _ in range(replicates)]
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return point, float(lo), float(hi), len(wds)


def sensitivity(runs, replicates=2000) -> list:
    """Conjecture 3.1.1 per group under every filter of FILTERS: worst-seed eps*, the verdict at
    each tolerance of TOLERANCES, and the mean-curve eps* with its bootstrap interval."""
    rows = []
    cells = {f: _gap_cells(runs, f) for f in FILTERS}  # once per filter, not per group
    for g in sorted({g for g, _ in cells[min(FILTERS)]}):
        for f in FILTERS:
            mine = [p for (gg, _), p in cells[f].items() if gg == g]
            worst = max((max(eps_star_by_wd(p).values()) for p in mine), default=None)
            point, lo, hi, n = mean_curve_eps(runs, g, f, replicates)
            rows.append({"group": g, "min_accuracy": f, "runs": sum(len(p) for p in mine),
                "eps_star": worst, "holds": {t: None if worst is None else worst <= t
                                             for t in TOLERANCES},
                "mean_curve_eps_star": point, "bootstrap_95": None if lo is None else [lo, hi],
                "wds": n})
    return rows


def render_sensitivity(data, rows) -> list:
    lines = ["", f"Conjecture 3.1.1 on {data}: sensitivity to the convergence filter and the "
             "tolerance (eps* worst over seeds; the verdict per tolerance; eps* of the seed-mean "
             "gap curve with its bootstrap 95% interval):", "",
             "| group | filter | runs | eps* (worst seed) | " +
             " | ".join(f"tol {t:g}" for t in TOLERANCES) + " | eps* of the mean | 95% interval |",
             "|---|---|---|---|" + "---|" * len(TOLERANCES) + "---|---|"]
    for r in rows:
        e = "—" if r["eps_star"] is None else f"{r['eps_star']:.3f}"
        v = ["—" if h is None else ("yes" if h else "**no**") for h in r["holds"].values()]
        m = "—" if r["mean_curve_eps_star"] is None else f"{r['mean_curve_eps_star']:.3f}"
        ci = "—" if r["bootstrap_95"] is None else "[{:.3f}, {:.3f}]".format(*r["bootstrap_95"])
        filt = "100%" if r["min_accuracy"] >= 1 else f">= {100 * r['min_accuracy']:g}%"
        lines.append(f"| {r['group']} | {filt} | {r['runs']} | {e} | " + " | ".join(v) +
                     f" | {m} | {ci} |")
    return lines


def conjecture_311(runs, min_accuracy=1.0):
    """Every network with BN before the last layer (all groups but "none"), per seed: eps* per
    WD over the runs that pass the filter (`counts`), and the worst of them."""
    cells = _gap_cells(runs, min_accuracy)
    rows, worst_by_group = [], collections.defaultdict(float)
    for (group, seed), pts in sorted(cells.items()):
        by_wd = eps_star_by_wd(pts)
        eps = max(by_wd.values())
        worst_by_group[group] = max(worst_by_group[group], eps)
        rows.append({"group": group, "seed": seed, "n_converged": len(pts), "eps_star": eps,
                     "eps_star_by_wd": {f"{w:g}": e for w, e in sorted(by_wd.items())},
                     "spearman_gap_vs_wd": spearman([p[0] for p in sorted(pts)],
                                                    [p[1] for p in sorted(pts)]),
                     "gap_by_wd": {f"{w:g}": g for w, g in sorted(pts)}})
    worst = max(worst_by_group.values()) if worst_by_group else None
    return {"conjecture": "3.1.1", "claim": "NC (min intra - max inter) grows with WD among "
            "converged runs with BN before the last layer", "eps_star": worst,
            "eps_star_by_group": dict(worst_by_group),
            "supported": None if worst is None else worst <= TOLERANCE, "per_seed": rows}


def conjecture_321(runs):
    """Per converged run: eps* over consecutive layers l -> l+1 for l in [L-1], the last
    transition being hidden layer L-1 -> the output (logits) when the run recorded it."""
    rows = []
    for r in runs:
        if not r.get("layers") or not r["converged"]:
            continue
        gap = [l["min_intra"] - l["max_inter"] for l in r["layers"]]
        intra = [l["min_intra"] for l in r["layers"]]
        has_output = r.get("output_min_intra") is not None
        if has_output:
            gap.append(r["output_min_intra"] - r["output_max_inter"])
        diffs = np.diff(np.array(gap))
        depth = r.get("depth") or len(r["layers"]) + 1  # runs without the field: hidden + head
        rows.append({"weight_decay": r["weight_decay"], "seed": r["seed"],
                     "network": f"{r.get('group', 'affine')}, depth {depth}",
                     "eps_star": float(max(0.0, -diffs.min())) if len(diffs) else 0.0,
                     "eps_star_hidden": float(max(0.0, -diffs[:len(r["layers"]) - 1].min()))
                     if len(r["layers"]) > 1 else 0.0,
                     "output_transition": float(diffs[-1]) if has_output else None,
                     "n_decreasing_layers": int((diffs < 0).sum()),
                     # the thesis claims monotone growth: how far the last hidden layer's min
                     # intra falls below its peak over the layers
                     "peak_min_intra": float(max(intra)), "peak_layer": int(np.argmax(intra)) + 1,
                     "last_min_intra": float(intra[-1]),
                     "first_gap": float(gap[0]), "last_gap": float(gap[-1])})
    worst = max((x["eps_star"] for x in rows), default=None)
    return {"conjecture": "3.2.1", "claim": "per-layer (min intra - max inter) grows with depth",
            "eps_star": worst, "supported": None if worst is None else worst <= TOLERANCE,
            "output_included": any(x["output_transition"] is not None for x in rows),
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


def worst_by_wd(results) -> list:
    """One row per (conjecture, data set, network) of 3.1.1 and 3.2.1: at each WD the largest
    eps* over its converged seeds and their number, [(conjecture, data, network, {wd: (eps*,
    n)})]. 3.1.1's eps* at a WD compares it with the smaller WDs of the same seed."""
    rows = []
    for c in results:
        if c["conjecture"] == "3.1.1":
            per = [(r["group"], float(w), e) for r in c["per_seed"]
                   for w, e in r["eps_star_by_wd"].items()]  # keys written with :g
        elif c["conjecture"] == "3.2.1":
            per = [(r["network"], float(f"{r['weight_decay']:g}"), r["eps_star"])
                   for r in c["per_run"]]
        else:
            continue
        cells = {}
        for net, w, e in per:
            worst, n = cells.setdefault(net, {}).get(w, (0.0, 0))
            cells[net][w] = (max(worst, e), n + 1)
        rows += [(c["conjecture"], c["data"], net, v) for net, v in cells.items()]
    return rows


def render_by_wd(results) -> list:
    """Markdown lines of `worst_by_wd`: a column per WD, "eps* (converged seeds)"."""
    rows = worst_by_wd(results)
    if not rows:
        return []
    wds = sorted({w for *_, v in rows for w in v})
    lines = ["", "eps* per WD and data set (the largest over converged seeds; their number in "
             "brackets; — = no converged run):", "",
             "| conjecture | data | network | " + " | ".join(f"{w:g}" for w in wds) + " |",
             "|---|---|---|" + "---|" * len(wds)]
    for conj, data, net, v in rows:
        lines.append(f"| {conj} | {data} | {net} | " + " | ".join(
            f"{v[w][0]:.3f} ({v[w][1]})" if w in v else "—" for w in wds) + " |")
    return lines


def render(results) -> str:
    lines = ["| conjecture | data | claim | measure | supported |", "|---|---|---|---|---|"]
    verdict = {None: "no data", True: "yes", False: "**no**"}
    for c in results:
        if c["conjecture"] == "3.1.1" and c.get("eps_star_by_group"):
            # one row per network: a verdict pooled over BN variants would blame one for another
            for g, e in sorted(c["eps_star_by_group"].items()):
                lines.append(f"| 3.1.1 | {c['data']} | {c['claim']}: {g} | eps* = {e:.4f} "
                             f"(tolerance {TOLERANCE}) | {verdict[e <= TOLERANCE]} |")
            continue
        if "eps_star" in c:
            m = "no converged runs" if c["eps_star"] is None else f"eps* = {c['eps_star']:.4f} (tolerance {TOLERANCE})"
        else:
            m = f"{c['violating_pairs']} of {c['pairs']} WD pairs violate"
        lines.append(f"| {c['conjecture']} | {c['data']} | {c['claim']} | {m} | "
                     f"{verdict[c['supported']]} |")
    lines += render_by_wd(results)
    for c in results:
        if c["conjecture"] == "3.1.1" and c["per_seed"]:
            wds = sorted({float(w) for r in c["per_seed"] for w in r["eps_star_by_wd"]})
            lines += ["", f"Conjecture 3.1.1 on {c['data']}, eps* per WD (largest over "
                      "smaller WDs) and seed:", "",
                      "| group | seed | " + " | ".join(f"{w:g}" for w in wds) + " |",
                      "|---|---|" + "---|" * len(wds)]
            for r in c["per_seed"]:
                cells = [r["eps_star_by_wd"].get(f"{w:g}") for w in wds]
                lines.append(f"| {r['group']} | {r['seed']} | " + " | ".join(
                    "—" if e is None else f"{e:.3f}" for e in cells) + " |")
        if c["conjecture"] == "3.2.1" and c["per_run"]:
            lines += ["", f"Conjecture 3.2.1 on {c['data']}, eps* per run (hidden layers; "
                      "with the output layer when recorded) and the last hidden layer's min intra "
                      "against its peak over the layers:", "",
                      "| WD | seed | eps* hidden | eps* with output | output - layer L-1 | "
                      "min intra: peak (layer) | last | drop |", "|---|---|---|---|---|---|---|---|"]
            for r in sorted(c["per_run"], key=lambda r: (r["weight_decay"], r["seed"])):
                o = r["output_transition"]
                lines.append(f"| {r['weight_decay']:g} | {r['seed']} | {r['eps_star_hidden']:.3f} | "
                             f"{r['eps_star']:.3f} | {'—' if o is None else f'{o:+.3f}'} | "
                             f"{r['peak_min_intra']:.3f} ({r['peak_layer']}) | "
                             f"{r['last_min_intra']:.3f} | "
                             f"{r['peak_min_intra'] - r['last_min_intra']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wd", nargs="+", metavar="DIR", help="results dirs of fig3_1_wd_bn.py")
    ap.add_argument("--depth", nargs="+", metavar="DIR", help="results dirs of fig3_3_depth.py")
    ap.add_argument("--out", help="write conjectures.json / conjectures.md here")
    ap.add_argument("--sensitivity", action="store_true",
                    help="3.1.1 under every convergence filter and tolerance, with bootstrap "
                         "intervals of the mean curve's eps*")
    ap.add_argument("--bootstrap", type=int, default=2000, metavar="B",
                    help="bootstrap replicates (default 2000)")
    args = ap.parse_args(argv)
    if args.bootstrap < 1:
        print(f"error: --bootstrap must be >= 1, got {args.bootstrap}", file=sys.stderr)
        return 2
    if not args.wd and not args.depth:
        print("error: give --wd and/or --depth results directories", file=sys.stderr)
        return 2
    try:
        results = []
        for dirs, tests in ((args.wd, (conjecture_311,)),
                            (args.depth, (conjecture_321, conjecture_322))):
            for data, runs in by_data(dirs or ()).items():
                results += [dict(test(runs), data=data) for test in tests]
        sens = {data: sensitivity(runs, args.bootstrap)
                for data, runs in by_data(args.wd or ()).items()} if args.sensitivity else {}
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = "\n".join([render(results)] + [line for data, rows in sens.items()
                                            for line in render_sensitivity(data, rows)])
    for c in results:
        if c["conjecture"] == "3.1.1" and c["data"] in sens:
            c["sensitivity"] = sens[c["data"]]
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
