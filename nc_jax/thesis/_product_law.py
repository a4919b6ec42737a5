"""Experiment `product_law`: is the collapse a function of lambda_H * lambda_W alone?

Beyond the thesis (arXiv 2309.04644). Its Theorem 2.3.1 needs BN before the last layer and weight
decay; which weight decay does the work? Two parameter groups carry the scale of the logits: the
last BN layer's scale and shift (gamma, beta), whose norm is the features' RMS alpha (Prop.
2.2.1), and the classifier head (W, b), beta = ||W||_F / sqrt(C). This experiment decays them
separately, lambda_H on the last BN layer and lambda_W on the head (`optim.decay_groups`), every
other parameter at a fixed `REST_DECAY`, on a log grid whose anti-diagonals are lines of equal
product lambda_H * lambda_W.

The prediction under test. The network's function is invariant under (gamma, beta, W) -> (a gamma,
a beta, W / a), and so is the cross-entropy. With a^2 = 1 / c this maps the regularized objective
at decays (c lambda_H, lambda_W / c) onto the one at (lambda_H, lambda_W), term by term (the head
bias b is not rescaled, so its own decay lambda_W / c is the only term that differs). So the
minimizers at every point of a line of equal product lambda_H lambda_W have the same features up
to the factor a: the same cosines, and the balance lambda_H ||(gamma, beta)||^2 = lambda_W ||W||_F^2
of the rescaling symmetry. The regularized unconstrained-features model of Zhu et al. 2021 makes
the same prediction in closed form (`nc_jax.ufm.regularized_optimum`: alpha beta* = t*(C lambda_H
lambda_W), alpha / beta = sqrt(C lambda_W / lambda_H); its lambda_H/2 (1/N) ||H||_F^2 is the
network's lambda_H/2 ||(gamma, beta)||^2 by Prop. 2.2.1). SGD need not end at a
minimizer, and its steps are not invariant under the map: the ratio lambda_H / lambda_W sets the
two groups' norms and so their effective learning rates. The verdict (`product_law_fit`) fits
each measure as a log10 lambda_H + b log10 lambda_W + c over every run and asks whether a = b,
with a bootstrap interval of a - b.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import math
import os

import numpy as np

from nc_jax._files import atomic_write_text
from nc_jax.analysis import failed, pair_fraction
from nc_jax.config import DataConfig, ModelConfig, OptimConfig, SweepConfig, decay_grid
from nc_jax.runs import Experiment, register_experiment
from nc_jax.ufm import regularized_optimum

#: The decay of every parameter outside the two groups: the geometric middle of the thesis' range
#: 1e-4 .. 1e-2, so that lambda_H = lambda_W = REST_DECAY is the thesis' protocol at WD 1e-3.
REST_DECAY = 1e-3
#: lambda_H and lambda_W: half-decade steps, so each anti-diagonal is one product.
PAPER_DECAYS = tuple(float(10.0 ** e) for e in (-4, -3.5, -3, -2.5, -2))
#: The measures whose dependence on (lambda_H, lambda_W) is fitted and drawn.
MEASURES = ("min_intra", "max_inter", "pairs_within_0.05", "alpha_beta")
PAIR_TOL = 0.05


def _sweep(model, optim, data, decays, seeds, **kw) -> SweepConfig:
    return SweepConfig(model=model, optim=dataclasses.replace(optim, decay_groups=("last_bn", "head")),
                       data=data, seeds=seeds,
                       weight_decays=decay_grid(rest=[REST_DECAY], last_bn=decays, head=decays),
                       **kw)


#: The seeds of the `paper` presets: one preset per seed, each the whole 5 x 5 grid (25 runs,
#: about 25 minutes on a 2-core CPU), joined by `merge` (75 runs).
PAPER_SEEDS = (0, 1, 2)


def _paper(kind: str, seed: int) -> dict:
    # the Figure 3.1 protocol with the schedule that fits every sample (3 decays)
    return {f"affine seed {seed}": _sweep(
        ModelConfig(depth=6, width=256, bn="affine"),
        OptimConfig(epochs=300, lr_decay_epochs=(75, 150, 225)), DataConfig(kind=kind, n=10000),
        PAPER_DECAYS, (seed,), record_every=10, checkpoint_every=10)}


# ---- the verdict -----------------------------------------------------------------------------

def value(run: dict, key: str):
    """A run's measure: `alpha_beta` = alpha * beta (feature RMS times ||W||_F / sqrt(C)),
    `log10_balance` = log10(lambda_H ||(gamma, beta)||^2 / (lambda_W ||W||_F^2)) of the last BN's
    scale and shift and the head's kernel (0 at every stationary point of the regularized
    objective: the rescaling symmetry's conserved balance),
    `pairs_within_<T>` the fraction of class pairs within T of -1/(C-1), else run[key]."""
    if key == "alpha_beta":
        return run["alpha"] * run["beta"]
    if key == "log10_balance":
        C = len(run["cosine_matrix"])
        return math.log10(run["weight_decay_last_bn"] *
                          (run["gamma_norm"] ** 2 + run["beta_norm"] ** 2) /
                          (C * run["weight_decay_head"] * run["beta"] ** 2))
    if key.startswith("pairs_within_"):
        G = run.get("cosine_matrix")
        return None if G is None else float(pair_fraction(G, float(key.rsplit("_", 1)[1])))
    return run.get(key)


def usable(runs, num_classes: int = 10) -> list:
    """The runs that did not fail (diverge or end at chance accuracy) and have both decays."""
    return [r for r in runs if not failed(r, num_classes) and
            r.get("weight_decay_last_bn") is not None and r.get("weight_decay_head") is not None]


def _lstsq(X, v):
    coef, *_ = np.linalg.lstsq(X, v, rcond=None)
    resid = v - X @ coef
    return coef, float(resid @ resid)


def product_law_fit(runs, key: str, replicates: int = 2000, seed: int = 0) -> dict:
    """Least squares `key = a log10 lambda_H + b log10 lambda_W + c` over the runs; the product
    law says a = b. Returns a, b, a - b with a bootstrap 95% interval (runs resampled with
    replacement within each (lambda_H, lambda_W) cell, NumPy seed `seed`; None with one seed per
    cell) and whether it contains 0, R^2 of this fit and of
    the product-only fit `key = p log10(lambda_H lambda_W) + c`, and the number of runs."""
    pts = [(math.log10(r["weight_decay_last_bn"]), math.log10(r["weight_decay_head"]),
            value(r, key)) for r in usable(runs)]
    pts = np.array([p for p in pts if p[2] is not None and np.isfinite(p[2])], dtype=np.float64)
    if len(pts) < 4 or len(set(map(tuple, pts[:, :2]))) < 3:
        return {"key": key, "runs": len(pts), "a": None, "b": None}
    X = np.column_stack([pts[:, 0], pts[:, 1], np.ones(len(pts))])
    v = pts[:, 2]
    coef, ss_both = _lstsq(X, v)
    _, ss_prod = _lstsq(np.column_stack([pts[:, 0] + pts[:, 1], np.ones(len(pts))]), v)
    ss_tot = float(((v - v.mean()) ** 2).sum())
    cells = collections.defaultdict(list)
    for i, p in enumerate(pts):
        cells[(p[0], p[1])].append(i)
    r2 = (lambda ss: None if ss_tot == 0 else 1.0 - ss / ss_tot)  # noqa: E731
    out = {"key": key, "runs": int(len(pts)), "a": float(coef[0]), "b": float(coef[1]),
           "a_minus_b": float(coef[0] - coef[1]), "a_minus_b_95": None,
           "product_law_holds": None, "r2_both": r2(ss_both), "r2_product_only": r2(ss_prod)}
    if max(len(ix) for ix in cells.values()) < 2:
        return out  # one seed per cell: no seed-to-seed spread to resample
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(replicates):
        idx = np.concatenate([rng.choice(ix, len(ix)) for ix in cells.values()])
        c, _ = _lstsq(X[idx], v[idx])
        diffs.append(c[0] - c[1])
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return dict(out, a_minus_b_95=[float(lo), float(hi)], product_law_holds=bool(lo <= 0.0 <= hi))


def ufm_prediction(lambda_h: float, lambda_w: float, num_classes: int) -> dict:
    """The regularized UFM's optimum at the network's decays (`regularized_optimum`: its
    lambda_H/2 (1/N) ||H||_F^2 is the network's lambda_H/2 ||(gamma, beta)||^2 by Prop. 2.2.1)."""
    o = regularized_optimum(lambda_w, lambda_h, num_classes)
    return {k: float(v) for k, v in o.items()}


def verdict(doc: dict, replicates: int = 2000) -> dict:
    """`product_law_fit` of every measure in MEASURES (and the log balance), the cell means, and the
    UFM prediction per cell."""
    runs = usable(doc["runs"])
    C = len(runs[0]["cosine_matrix"]) if runs else 10
    cells = collections.defaultdict(list)
    for r in runs:
        cells[(r["weight_decay_last_bn"], r["weight_decay_head"])].append(r)
    table = []
    for (lh, lw), rs in sorted(cells.items()):
        row = {"lambda_H": lh, "lambda_W": lw, "product": lh * lw, "seeds": len(rs),
               "converged": sum(bool(r["converged"]) for r in rs),
               "ufm_alpha_beta": ufm_prediction(lh, lw, C)["alpha_beta"]}
        for k in (*MEASURES, "log10_balance"):
            v = [value(r, k) for r in rs]
            v = [x for x in v if x is not None]
            row[k] = float(np.mean(v)) if v else None
            row[k + "_std"] = float(np.std(v)) if v else None
        table.append(row)
    return {"fits": [dict(product_law_fit(runs, k, replicates), **iso_product_spread(table, k))
                     for k in (*MEASURES, "log10_balance")],
            "cells": table, "rest_decay": REST_DECAY, "pair_tol": PAIR_TOL}


def iso_product_spread(cells, key: str) -> dict:
    """Along each line of equal product with >= 2 cells, the range (max - min) of the cell means
    of `key`: the product law says it is seed noise. Returns the largest range, the product where
    it occurs, and the median over cells of the seed standard deviation, to compare it with."""
    lines = collections.defaultdict(list)
    for c in cells:
        if c.get(key) is not None:
            lines[round(math.log10(c["product"]) * 2) / 2].append(c[key])
    ranges = {p: max(v) - min(v) for p, v in lines.items() if len(v) >= 2}
    stds = [c[key + "_std"] for c in cells if c.get(key + "_std") is not None]
    if not ranges:
        return {"iso_range_max": None, "iso_range_at_log10_product": None,
                "seed_std_median": float(np.median(stds)) if stds else None}
    p = max(ranges, key=ranges.get)
    return {"iso_range_max": float(ranges[p]), "iso_range_at_log10_product": p,
            "seed_std_median": float(np.median(stds)) if stds else None}


def _num(x) -> str:
    return "—" if x is None else f"{x:.3f}"


def render(v: dict) -> str:
    lines = ["| measure | a (log10 lambda_H) | b (log10 lambda_W) | a - b [95% interval] | "
             "R^2 two decays | R^2 product only | largest range along a line of equal product "
             "(log10 product) | median seed std | product law (a = b) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for f in v["fits"]:
        if f["a"] is None:
            lines.append(f"| {f['key']} | — | — | — | — | — | — | — | too few runs ({f['runs']}) |")
            continue
        ci = "—" if f["a_minus_b_95"] is None else "[{:+.4f}, {:+.4f}]".format(*f["a_minus_b_95"])
        law = {None: "— (one seed per cell)", True: "consistent",
               False: "**rejected**"}[f["product_law_holds"]]
        rng = "—" if f.get("iso_range_max") is None else \
            f"{f['iso_range_max']:.3f} ({f['iso_range_at_log10_product']:g})"
        lines.append(f"| {f['key']} | {f['a']:+.4f} | {f['b']:+.4f} | {f['a_minus_b']:+.4f} {ci} | "
                     f"{_num(f['r2_both'])} | {_num(f['r2_product_only'])} | {rng} | "
                     f"{_num(f.get('seed_std_median'))} | {law} |")
    lines += ["", "| lambda_H | lambda_W | product | seeds (100%) | min_intra | max_inter | "
              f"pairs within {PAIR_TOL} | alpha beta | UFM alpha beta* | log10 balance |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for c in v["cells"]:
        f = lambda k, n=3: "—" if c[k] is None else f"{c[k]:.{n}f} ± {c[k + '_std']:.{n}f}"  # noqa: E731
        lines.append(f"| {c['lambda_H']:.2g} | {c['lambda_W']:.2g} | {c['product']:.1e} | "
                     f"{c['seeds']} ({c['converged']}) | {f('min_intra')} | {f('max_inter')} | "
                     f"{f('pairs_within_0.05', 2)} | {f('alpha_beta', 2)} | "
                     f"{c['ufm_alpha_beta']:.2f} | {f('log10_balance', 2)} |")
    return "\n".join(lines)


# ---- figures -----------------------------------------------------------------------------------

def _plot(doc, out_dir):
    from nc_jax.thesis._product_law_plot import plot_product_law
    v = verdict(doc)
    atomic_write_text(os.path.join(out_dir, "product_law.json"), json.dumps(v, indent=1))
    atomic_write_text(os.path.join(out_dir, "product_law.md"), render(v) + "\n")
    plot_product_law(v, os.path.join(out_dir, "product_law.png"),
                     title=f"product law ({doc['preset']}): last BN decay lambda_H, head decay "
                           f"lambda_W, rest {REST_DECAY:g}")


register_experiment(Experiment(
    name="product_law", plot=_plot, shared_data=True,
    description="separate weight decays on the last BN layer (lambda_H) and the head (lambda_W): "
                "is the collapse a function of their product?",
    presets={
        "smoke": lambda: {"affine": _sweep(
            ModelConfig(depth=3, width=16), OptimConfig(epochs=4, batch_size=32),
            DataConfig(n=200, dim=8, num_classes=4, teacher_width=16), (1e-4, 1e-2), (0, 1))},
        "quick": lambda: {"affine": _sweep(
            ModelConfig(depth=6, width=64), OptimConfig(epochs=60, lr_decay_epochs=(15, 30, 45)),
            DataConfig(n=2000), (1e-4, 1e-3, 1e-2), (0,), record_every=10)},
        **{f"paper{suffix}-seed{seed}": (lambda kind=kind, seed=seed: _paper(kind, seed))
           for suffix, kind in (("", "teacher"), ("-conic", "conic")) for seed in PAPER_SEEDS},
    }))
