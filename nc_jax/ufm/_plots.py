"""Figures of the Theorem 2.3.1 tightness study (`experiments/ufm_tightness.py`), drawn from its
results document alone, so `--plot-only` regenerates them."""
from __future__ import annotations

import os

import numpy as np

from nc_jax._files import save_figure
from nc_jax.ufm import _solve as ufm
from nc_jax.ufm import _tightness as T

#: Deviations tau of the looseness summary (1 - intra <= tau, inter + 1/(C-1) <= tau).
TAUS = (0.01, 0.1)

SOURCE_MARKERS = {"fig3_1/paper": "o", "fig3_3/paper": "s", "fig3_3/paper-seeds": "s",
                  "real_data/paper": "^", "data_complexity/paper": "D",
                  # the theorem's own network: exact cosines, no bias folded in
                  "fig3_1/paper-peeled": "P", "fig3_1/paper-peeled-large": "*"}


def _colors(values):
    import matplotlib
    import matplotlib.colors as mcolors
    norm = mcolors.LogNorm(vmin=0.5, vmax=50)
    cmap = matplotlib.colormaps["viridis"]
    return (lambda v: cmap(norm(v))), matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)


def plot_tightness(doc, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    C = doc["config"]["num_classes"]
    fr, nets, paths = doc["frontier"], doc["networks"], doc["paths"]
    color, sm = _colors(fr["alpha_beta"])
    fig, axs = plt.subplots(2, 2, figsize=(16, 12), constrained_layout=True)
    axes = [axs[0, 0], axs[0, 1], axs[1, 1], axs[1, 0]]
    eps_grid = np.logspace(-40, 0, 400)
    for ax, tg in zip(axes[:2], ("intra", "inter")):
        d = fr[tg]
        for i, ab in enumerate(fr["alpha_beta"]):
            eps = np.array(d["eps"][i], float)
            bad = (1 - np.array(d["intra0"][i], float)) if tg == "intra" else np.array(d["inter01"][i], float) + 1 / (C - 1)
            e, env = T.envelope(eps, bad)
            keep = env > 0
            ax.plot(e[keep], env[keep], "-o", ms=3, color=color(ab), lw=1.6)
            lb = (T.log10_intra_bound if tg == "intra" else T.log10_inter_bound)(ab, C, eps_grid)
            ax.plot(eps_grid, 10.0 ** lb, "--", color=color(ab), lw=1.0)
        for j, ab in enumerate(paths["alpha_beta"]):  # typical points: descent iterates
            m = np.exp(float(ufm.log_min_loss(ab, C)))
            r = np.array(paths["rel_gap"][j], float)
            bad = 1 - np.array(paths["min_intra"][j]) if tg == "intra" else np.array(paths["max_inter"][j]) + 1 / (C - 1)
            ok = (r > 0) & (bad > 0)
            ax.plot(m * r[ok], bad[ok], ":", color=color(ab), lw=1.0, alpha=0.8)
        for src, mk in SOURCE_MARKERS.items():
            pts = [p for p in nets if p["source"] == src]
            if pts:
                y = [p["one_minus_intra"] if tg == "intra" else p["inter_dev"] for p in pts]
                ax.scatter([p["eps"] for p in pts], y, c=[color(p["alpha_beta"]) for p in pts], marker=mk, s=22,
                           edgecolors="k", linewidths=0.4, label=f"trained: {src}", zorder=5)
        ax.axhspan(1 if tg == "intra" else C / (C - 1), 1e30, color="0.85", zorder=0)
        ax.set(xscale="log", yscale="log", xlim=(1e-40, 1), ylim=(1e-4, 1e4),
               xlabel="loss gap eps = L - m(alpha, beta)",
               ylabel="1 - intra_c (worst class)" if tg == "intra" else "inter_cc' + 1/(C-1) (worst pair)")
        ax.set_title(("intra-class" if tg == "intra" else "inter-class") + ": solid = layer-peeled worst case, "
                     "dashed = theorem\n(constants 1, delta = " + ("1/C" if tg == "intra" else "1/(C(C-1))")
                     + "), dotted = descent iterates; grey = vacuous", fontsize=9)
        ax.grid(alpha=0.3, which="major")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.colorbar(sm, ax=axes[1], label="alpha beta (bias folded in for trained runs)")
    ax = axes[3]  # where trained runs sit, in units of the optimum: r = eps / m
    for i, ab in enumerate(fr["alpha_beta"]):
        e, env = T.envelope(fr["intra"]["rel_gap"][i], 1 - np.array(fr["intra"]["intra0"][i], float))
        ax.plot(e[env > 0], env[env > 0], "-", color=color(ab), lw=1.4)
    for src, mk in SOURCE_MARKERS.items():
        pts = [p for p in nets if p["source"] == src]
        if pts:
            ax.scatter([p["rel_gap"] for p in pts], [p["one_minus_intra"] for p in pts], marker=mk, s=22,
                       c=[color(p["alpha_beta"]) for p in pts], edgecolors="k", linewidths=0.4, label=src)
            ax.scatter([p["rel_gap"] for p in pts], [p["ufm_worst_intra"] for p in pts], marker="_", s=40,
                       c=[color(p["alpha_beta"]) for p in pts])
    ax.set(xscale="log", yscale="log", ylim=(1e-4, 2), xlabel="relative loss gap r = eps / m(alpha, beta)",
           ylabel="1 - intra_c (worst class)",
           title="trained runs (symbols) vs the worst case at their own alpha beta and eps (bars);\n"
                 "lines: worst case of the alpha beta grid, against r")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax = axes[2]
    curves = doc["summary"]["curves"]
    for tg, mk in (("intra", "o"), ("inter", "s")):
        for tau, ls in zip(TAUS, (":", "-")):
            cs = [c for c in curves if c["target"] == tg and c[f"orders_loose_tau{tau}"] is not None]
            if not cs:  # e.g. inter at tau = 0.01: below the search's resolution for every alpha beta
                continue
            ax.plot([c["alpha_beta"] for c in cs], [c[f"orders_loose_tau{tau}"] for c in cs], ls, marker=mk,
                    label=f"{tg}, deviation {tau}: eps_true / eps_theorem")
        if tg == "intra":
            cs = [c for c in curves if c["target"] == "intra" and c["orders_loose_proof_tau0.1"] is not None]
            ax.plot([c["alpha_beta"] for c in cs], [c["orders_loose_proof_tau0.1"] for c in cs], "-.", marker="o",
                    mfc="none", label="intra, 0.1, proof's explicit constants")
    for tg, mk in (("intra", "o"), ("inter", "s")):
        pts = [p for p in nets if p.get(f"log10_force_over_theorem_{tg}") is not None]
        ax.scatter([p["alpha_beta"] for p in pts], [p[f"log10_force_over_theorem_{tg}"] for p in pts], marker=mk,
                   s=12, alpha=0.5, label=f"trained runs ({tg}): theorem vs truth at their collapse")
        pts = [p for p in nets if p.get(f"log10_net_over_force_{tg}") is not None]
        ax.scatter([p["alpha_beta"] for p in pts], [p[f"log10_net_over_force_{tg}"] for p in pts], marker=mk,
                   s=12, alpha=0.5, facecolors="none", edgecolors="r",
                   label=f"trained runs ({tg}): their eps / eps that would force their collapse")
    ax.set(xscale="log", xlabel="alpha beta", ylabel="orders of magnitude (log10 of an eps ratio)",
           title="How loose: log10(largest eps that forces a deviation <= tau /\n eps at which the theorem guarantees it)")
    ax.axhline(0, color="k", lw=0.8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def plot_phase(doc, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ph, reg, nets = doc["phase"], doc["regularized"], doc["networks"]
    abs_ = sorted(set(ph["alpha_beta"]))
    Cs, ds = sorted(set(ph["num_classes"])), sorted(set(ph["dim"]))
    fig, axes = plt.subplots(1, len(abs_) + 1, figsize=(4.4 * (len(abs_) + 1), 4.2), constrained_layout=True)
    for ax, ab in zip(axes, abs_):
        Z = np.full((len(ds), len(Cs)), np.nan)
        for C, d, a, r in zip(ph["num_classes"], ph["dim"], ph["alpha_beta"], ph["rel_gap"]):
            if a == ab:
                Z[ds.index(d), Cs.index(C)] = np.log10(max(abs(r), 1e-8))
        im = ax.imshow(Z, origin="lower", aspect="auto", vmin=-8, vmax=2, cmap="magma",
                       extent=(-0.5, len(Cs) - 0.5, ds[0] - 0.5, ds[-1] + 0.5))
        for j, C in enumerate(Cs):  # the ETF boundary d = C - 1, drawn per column (C is categorical)
            ax.plot([j - 0.5, j + 0.5], [C - 1.5, C - 1.5], "c-", lw=1.5,
                    label="below: d < C - 1, no ETF" if j == 0 else None)
        ax.set(xticks=range(len(Cs)), xticklabels=Cs, xlabel="C", ylabel="d",
               title=f"log10 |L/m - 1|, alpha beta = {ab:g}")
    fig.colorbar(im, ax=axes[len(abs_) - 1])
    axes[0].legend(fontsize=7, loc="upper left")
    ax = axes[-1]
    ax.plot(reg["lambdas"], reg["closed_form_alpha_beta"], "k-", label="weight-decay UFM, closed form")
    ax.plot(reg["lambdas"], reg["solver_alpha_beta"], "kx", label="weight-decay UFM, solver")
    for src, mk in SOURCE_MARKERS.items():
        pts = [p for p in nets if p["source"] == src and p["weight_decay"]]
        if pts:
            ax.scatter([p["weight_decay"] for p in pts], [p["alpha_beta"] for p in pts], marker=mk, s=14,
                       alpha=0.6, label=f"trained: {src}")
    ax.set(xscale="log", yscale="log", xlabel="lambda (lambda_W = lambda_H) / weight decay",
           ylabel="alpha beta", title="optimal alpha beta vs trained runs")
    ax.legend(fontsize=6)
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def plot_all(doc, out):
    plot_tightness(doc, os.path.join(out, "ufm_tightness.png"))
    plot_phase(doc, os.path.join(out, "ufm_phase.png"))
