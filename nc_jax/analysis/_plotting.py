"""Matplotlib figures of the thesis' experiments, drawn from saved result dicts (never from
live training), so every figure can be regenerated from `results.json` alone."""
from __future__ import annotations

import collections
from typing import Dict, List, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nc_jax._files import save_figure  # noqa: E402
from nc_jax.analysis._pairs import pair_cosines, pair_fraction  # noqa: E402

BN_STYLE = {"affine": ("tab:blue", "affine BN"), "plain": ("tab:orange", "non-affine BN"),
            "none": ("tab:green", "no BN")}


def failed(r: dict, num_classes: int = 10) -> bool:
    """A run that diverged or ended at chance level (<= 2/C train accuracy, e.g. the zero network
    that no-BN runs at large WD collapse to): its cosines describe no learned geometry."""
    acc = r.get("train_accuracy")
    return bool(r.get("diverged")) or acc is None or acc <= 2.0 / num_classes


def seed_stats(runs: Sequence[dict], key: str, by=("group", "weight_decay"),
               converged_only: bool = True, num_classes: int = 10) -> Dict[tuple, tuple]:
    """{(group, wd): (mean, std, n)} of `key` over the converged (or, with
    converged_only=False, all not `failed`) runs (seeds) of each cell."""
    cells = collections.defaultdict(list)
    for r in runs:
        ok = r.get("converged") if converged_only else not failed(r, num_classes)
        if ok and r.get(key) is not None:
            cells[tuple(r[b] for b in by)].append(r[key])
    return {k: (float(np.mean(v)), float(np.std(v)), len(v)) for k, v in cells.items()}


def _save(fig, path):
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def _weight_decay_axis(ax, wds) -> None:
    """A log weight-decay axis; with WD 0 among the values a symlog one, linear below the
    smallest positive WD, so that 0 is drawn too (a log axis cannot show it); linear when no WD
    is positive."""
    pos = [w for w in wds if w > 0]
    if len(pos) == len(wds):
        ax.set_xscale("log")
    elif pos:
        ax.set_xscale("symlog", linthresh=min(pos))


def plot_wd_bn(runs: List[dict], path: str, num_classes: int = 10, title: str = "",
               converged_only: bool = False) -> None:
    """Figure 3.1: min intra-class and max inter-class cosine of the last-layer features against
    weight decay, one color per BN variant; mean +- std over the seeds of every run that did not
    fail (diverge or end at chance accuracy, see `failed`). A filled marker: every seed of the cell reached 100% train accuracy (BN eval mode,
    whole training set), the thesis' rule; a hollow marker: at least one seed did not (the cell
    is kept, not dropped). `converged_only=True` draws the thesis' figure: converged runs only."""
    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    intra = seed_stats(runs, "min_intra", converged_only=converged_only, num_classes=num_classes)
    inter = seed_stats(runs, "max_inter", converged_only=converged_only, num_classes=num_classes)
    conv = seed_stats(runs, "min_intra", converged_only=True)
    groups = [g for g in BN_STYLE if any(k[0] == g for k in intra)]
    groups += sorted({k[0] for k in intra} - set(groups))
    others = [g for g in groups if g not in BN_STYLE]
    for g in groups:
        # a group that is no BN variant gets a color of its own after the BN variants' three,
        # the same for its min intra, max inter and their markers
        color, label = BN_STYLE[g] if g in BN_STYLE else (f"C{3 + others.index(g)}", g)
        for stats, ls, what in ((intra, "-", "min intra"), (inter, "--", "max inter")):
            keys = sorted(k for k in stats if k[0] == g)
            if not keys:
                continue
            x = np.array([k[1] for k in keys])
            m = np.array([stats[k][0] for k in keys])
            s = [stats[k][1] for k in keys]
            ax.errorbar(x, m, yerr=s, fmt=ls, color=color, capsize=3, label=f"{label}: {what}")
            full = np.array([conv.get(k, (0, 0, 0))[2] == stats[k][2] for k in keys])
            ax.plot(x[full], m[full], "o", color=color, ms=5)
            ax.plot(x[~full], m[~full], "o", mfc="white", mec=color, ms=6, mew=1.3)
    ax.plot([], [], "o", color="gray", ms=5, label="all seeds at 100% train acc.")
    ax.plot([], [], "o", mfc="white", mec="gray", ms=6, mew=1.3, label="some seed below 100%")
    ax.axhline(1.0, color="gray", lw=0.6)
    ax.axhline(-1.0 / (num_classes - 1), color="gray", lw=0.6, ls=":",
               label=f"-1/(C-1) = {-1 / (num_classes - 1):.3f}")
    if groups:  # a log axis without a single point makes matplotlib's layout raise
        _weight_decay_axis(ax, [k[1] for k in intra])
    ax.set_xlabel("weight decay")
    ax.set_ylabel("cosine similarity (last-layer features)")
    rule = ("converged runs only (100% train accuracy, the thesis' rule)" if converged_only else
            "mean +- std over seeds; hollow: some seed below 100% train accuracy; diverged or "
            "chance-level runs omitted")
    ax.set_title((title or "Intra / inter-class cosine vs weight decay and BN") + f"\n({rule})",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)


def plot_depth(runs: List[dict], path: str, title: str = "", num_classes: int = 10) -> None:
    """Figure 3.3: per-layer NCC accuracy (green), min intra (blue), max inter (yellow) against
    layer index, one panel per weight decay: mean +- std over the seeds that did not fail (as
    Figure 3.1: a diverged or chance-level run, e.g. the zero network, has no geometry to
    average); the title counts the seeds at 100% train accuracy and names failed ones."""
    wds = sorted({r["weight_decay"] for r in runs})
    ncol = min(4, len(wds))
    nrow = int(np.ceil(len(wds) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 3.0 * nrow), squeeze=False)
    for ax, wd in zip(axes.flat, wds):
        cell = [r for r in runs if r["weight_decay"] == wd and r.get("layers")]
        sel = [r for r in cell if not failed(r, num_classes)]
        n_conv, n_fail = sum(bool(r["converged"]) for r in cell), len(cell) - len(sel)
        if sel:
            for key, color, label in (("ncc_accuracy", "tab:green", "NCC accuracy"),
                                      ("min_intra", "tab:blue", "min intra"),
                                      ("max_inter", "gold", "max inter")):
                vals = np.array([[lay[key] for lay in r["layers"]] for r in sel], float)
                layers = np.arange(1, vals.shape[1] + 1)
                ax.errorbar(layers, vals.mean(0), yerr=vals.std(0) if len(sel) > 1 else None,
                            color=color, marker="o", ms=3, label=label, capsize=2)
            eds = [r["effective_depth"] for r in sel]
            ax.axvline(np.mean(eds), color="gray", ls=":", lw=1)
        ax.set_title(f"WD {wd:g}: {n_conv}/{len(cell)} converged"
                     + (f", {n_fail} failed" if n_fail else ""), fontsize=9)
        ax.set_xlabel("layer")
        ax.set_ylim(-1.05, 1.05)
    for ax in list(axes.flat)[len(wds):]:
        ax.axis("off")
    axes.flat[0].set_ylabel("value")
    drawn = [ax for ax in axes.flat if ax.containers]  # a panel whose seeds all failed is empty
    if drawn:
        drawn[0].legend(fontsize=7)
    fig.suptitle(title or "NC across layers (dotted: effective depth)")
    _save(fig, path)


def plot_training_curves(runs: List[dict], path: str, group: str = "affine",
                         keys=("min_intra", "max_inter", "nc1"), title: str = "") -> None:
    """NC during training: each key against epoch, one line per weight decay (seed 0);
    `title` (default: the group as a BN variant) is followed by the seed drawn."""
    sel = [r for r in runs if r.get("group") == group and r.get("curves")]
    seeds = sorted({r["seed"] for r in sel})
    sel = [r for r in sel if r["seed"] == (seeds[0] if seeds else None)]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
    cmap = plt.get_cmap("viridis")
    wds = sorted({r["weight_decay"] for r in sel})
    for ax, key in zip(axes.flat, keys):
        for r in sel:
            c = cmap(wds.index(r["weight_decay"]) / max(1, len(wds) - 1))
            ax.plot(r["curves"]["epoch"], r["curves"][key], color=c, label=f"WD {r['weight_decay']:g}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        if key == "nc1" and sel and min(min(r["curves"][key]) for r in sel) > 0:
            ax.set_yscale("log")
    axes.flat[0].legend(fontsize=7)
    seed = seeds[0] if seeds else "-"
    fig.suptitle(f"{title}, seed {seed}" if title else
                 f"NC during training ({group} BN, seed {seed})")
    _save(fig, path)


def plot_theorem(runs: List[dict], path: str, num_classes: int = 10) -> None:
    """Theorem 2.3.1 on trained runs: 1 - min intra and max inter + 1/(C-1) against the loss gap
    epsilon and against the theorem's rate term (log-log), colored by group."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    groups = sorted({r["group"] for r in runs})
    for g in groups:
        for ax, xkey in zip(axes, ("loss_gap", "rate")):
            # a run without the value (the rate of the zero network, alpha beta = 0, is
            # undefined: None in results.json) is left out, not drawn at a made-up value
            sel = [r for r in runs if r["group"] == g and not r["diverged"]
                   and r.get(xkey) is not None and r.get("min_intra") is not None]
            if not sel:
                continue
            color = BN_STYLE.get(g, (None,))[0]
            x = np.array([max(r[xkey], 1e-12) for r in sel])
            ax.scatter(x, [max(1 - r["min_intra"], 1e-6) for r in sel], marker="o", color=color,
                       s=14, label=f"{g}: 1 - min intra")
            ax.scatter(x, [max(r["max_inter"] + 1 / (num_classes - 1), 1e-6) for r in sel],
                       marker="x", color=color, s=14, label=f"{g}: max inter + 1/(C-1)")
    for ax, xl in zip(axes, ("loss gap epsilon = L - m(alpha, beta)",
                             "rate exp(C/(C-1) ab)/(ab) sqrt(eps/delta), delta=0.1")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel("distance to collapse")
    axes[1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("Theorem 2.3.1 on trained networks")
    _save(fig, path)


def plot_groups(runs: List[dict], path: str, keys=("min_intra", "max_inter", "nc1"),
                title: str = "") -> None:
    """One panel per key, one point (mean +- std over seeds) per group; for comparisons such as
    data complexity at a fixed weight decay. All non-diverged runs count (the title says how
    many reached 100% train accuracy)."""
    groups = list(dict.fromkeys(r["group"] for r in runs))
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        st = seed_stats(runs, key, by=("group",), converged_only=False)
        xs = [i for i, g in enumerate(groups) if (g,) in st]
        ax.errorbar(xs, [st[(groups[i],)][0] for i in xs], yerr=[st[(groups[i],)][1] for i in xs],
                    fmt="o", capsize=4)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups, rotation=20, fontsize=8)
        ax.set_ylabel(key)
        if key == "nc1" and st and min(v[0] for v in st.values()) > 0:
            ax.set_yscale("log")
    n_conv = sum(bool(r.get("converged")) for r in runs)
    fig.suptitle(f"{title} [{n_conv}/{len(runs)} runs at 100% train accuracy]")
    _save(fig, path)


LAYER_MODES = (("", "BN eval, raw"), ("eval_centered_", "BN eval, centered"),
               ("train_", "BN train, raw"), ("train_centered_", "BN train, centered"))


def plot_layer_modes(runs: List[dict], path: str, title: str = "") -> None:
    """What the mid-layer "instability" survives: per layer, mean over seeds of
    max inter and min intra with BN in eval / train mode, uncentered / centered (global mean
    removed), and NC1 = tr(Sigma_W Sigma_B^+)/C against the pseudo-inverse-free
    tr(Sigma_W)/tr(Sigma_B); one column per weight decay (runs that did not fail)."""
    runs = [r for r in runs if r.get("layers") and not failed(r)
            and "train_max_inter" in r["layers"][0]]
    if not runs:
        return
    wds = sorted({r["weight_decay"] for r in runs})
    fig, axes = plt.subplots(3, len(wds), figsize=(3.6 * len(wds) + 1, 8.5), squeeze=False)
    for j, wd in enumerate(wds):
        sel = [r for r in runs if r["weight_decay"] == wd]
        layers = np.arange(1, len(sel[0]["layers"]) + 1)

        def mean(key):
            return np.mean([[l[key] for l in r["layers"]] for r in sel], axis=0)

        for i, stat in enumerate(("max_inter", "min_intra")):
            ax = axes[i, j]
            for (prefix, label), ls in zip(LAYER_MODES, ("-", "--", ":", "-.")):
                ax.plot(layers, mean(prefix + stat), ls, marker=".", label=label)
            ax.set_ylabel(stat.replace("_", " "))
        ax = axes[2, j]
        for key, label in (("nc1", "NC1 (eval)"), ("train_nc1", "NC1 (train)"),
                           ("eval_nc1_trace", "tr W / tr B (eval)"),
                           ("train_nc1_trace", "tr W / tr B (train)")):
            ax.semilogy(layers, mean(key), marker=".", label=label)
        ax.set_xlabel("layer")
        axes[0, j].set_title(f"WD {wd:g} ({len(sel)} seed{'s' if len(sel) > 1 else ''})")
    axes[0, 0].legend(fontsize=7)
    axes[2, 0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_pairs(runs: List[dict], path: str, num_classes: int = 10, tol: float = 0.05,
               title: str = "") -> None:
    """Theorem 2.3.1's class-pair statement per group and weight decay, from each run's
    `cosine_matrix`: left, the 10% / 50% / 90% quantiles of the C(C-1)/2 inter-class cosines
    (pooled over the seeds that did not fail; the band spans 10-90%) against -1/(C-1); right,
    the fraction of pairs within `tol` of -1/(C-1) (mean +- std over seeds)."""
    cells = collections.defaultdict(list)
    for r in runs:
        if r.get("cosine_matrix") is not None and not failed(r, num_classes):
            cells[(r["group"], r["weight_decay"])].append(np.asarray(r["cosine_matrix"]))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.6))
    groups = [g for g in BN_STYLE if any(k[0] == g for k in cells)]
    groups += sorted({k[0] for k in cells} - set(groups))
    for i, g in enumerate(groups):
        color, label = BN_STYLE.get(g, (f"C{3 + i}", g))
        keys = sorted(k for k in cells if k[0] == g)
        x = np.array([k[1] for k in keys])
        q = np.array([np.quantile(pair_cosines(np.stack(cells[k])).ravel(), [0.1, 0.5, 0.9])
                      for k in keys])
        ax.plot(x, q[:, 1], "o-", color=color, label=f"{label}: median pair")
        ax.fill_between(x, q[:, 0], q[:, 2], color=color, alpha=0.2)
        f = [pair_fraction(np.stack(cells[k]), tol) for k in keys]
        bx.errorbar(x, [np.mean(v) for v in f], yerr=[np.std(v) for v in f], fmt="o-",
                    color=color, capsize=3, label=label)
    ax.axhline(-1.0 / (num_classes - 1), color="gray", lw=0.8, ls=":",
               label=f"-1/(C-1) = {-1 / (num_classes - 1):.3f}")
    ax.set_ylabel("inter-class cosine over class pairs\n(median; band 10-90%)")
    bx.set_ylabel(f"fraction of pairs within {tol:g} of -1/(C-1)")
    bx.set_ylim(-0.02, 1.02)
    for a in (ax, bx):
        if cells:
            _weight_decay_axis(a, [k[1] for k in cells])
        a.set_xlabel("weight decay")
        a.legend(fontsize=7)
    fig.suptitle(title or "Theorem 2.3.1's class pairs (seeds pooled; failed runs omitted)",
                 fontsize=10)
    _save(fig, path)
