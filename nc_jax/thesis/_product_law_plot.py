"""The product-law figure (experiment `product_law`): each measure over the (lambda_H, lambda_W)
grid with its lines of equal product, and against the product alone, colored by the ratio."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nc_jax._files import save_figure  # noqa: E402

_HEATMAPS = (("min_intra", "min intra-class cosine"), ("max_inter", "max inter-class cosine"),
             ("pairs_within_0.05", "fraction of class pairs\nwithin 0.05 of -1/(C-1)"))


def _grid(cells, key):
    lh = sorted({c["lambda_H"] for c in cells})
    lw = sorted({c["lambda_W"] for c in cells})
    Z = np.full((len(lw), len(lh)), np.nan)
    for c in cells:
        if c.get(key) is not None:
            Z[lw.index(c["lambda_W"]), lh.index(c["lambda_H"])] = c[key]
    return lh, lw, Z


def _heatmap(ax, cells, key, label):
    lh, lw, Z = _grid(cells, key)
    im = ax.imshow(Z, origin="lower", cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(lh)), [f"{x:.0e}" for x in lh], rotation=45, fontsize=7)
    ax.set_yticks(range(len(lw)), [f"{x:.0e}" for x in lw], fontsize=7)
    ax.set_xlabel("lambda_H (last BN)")
    ax.set_ylabel("lambda_W (head)")
    for i in range(len(lw)):
        for j in range(len(lh)):
            if np.isfinite(Z[i, j]):
                ax.text(j, i, f"{Z[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="w" if Z[i, j] < np.nanmean(Z) else "k")
    # lines of equal product: the anti-diagonals i + j = s of a grid with equal log steps
    x = np.array([-0.5, len(lh) - 0.5])
    for s in range(len(lh) + len(lw) - 1):
        ax.plot(x, s - x, color="w", lw=0.6, ls="--", alpha=0.6)
    ax.set_xlim(-0.5, len(lh) - 0.5)
    ax.set_ylim(-0.5, len(lw) - 0.5)
    ax.set_title(label, fontsize=9)
    plt.colorbar(im, ax=ax, fraction=0.046)


def _against_product(ax, cells, key, label):
    ratios = [math.log10(c["lambda_H"] / c["lambda_W"]) for c in cells]
    norm = plt.Normalize(min(ratios), max(ratios)) if len(set(ratios)) > 1 else None
    cmap = plt.get_cmap("coolwarm")
    for c, r in zip(cells, ratios):
        if c.get(key) is None:
            continue
        col = cmap(norm(r)) if norm else "tab:blue"
        ax.errorbar(c["product"], c[key], yerr=c[key + "_std"], fmt="o", ms=4, color=col,
                    mec="k" if c["converged"] == c["seeds"] else col, capsize=2)
    ax.set_xscale("log")
    ax.set_xlabel("lambda_H * lambda_W")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    if norm:
        sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
        plt.colorbar(sm, ax=ax, fraction=0.046, label="log10(lambda_H / lambda_W)")


def plot_product_law(v: dict, path: str, title: str = "") -> None:
    """Top: min intra, max inter and the pair fraction over the grid (cell means over seeds;
    dashed: lines of equal lambda_H lambda_W). Bottom: min intra and max inter against the product
    (one marker per cell, colored by log10 of the ratio: if the product law holds, markers of one
    product coincide whatever their color; black edge: every seed at 100% train accuracy), and the
    network's alpha beta against the regularized UFM's alpha beta* (Zhu et al. 2021)."""
    cells = v["cells"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 9))
    for ax, (k, lab) in zip(axes[0], _HEATMAPS):
        _heatmap(ax, cells, k, lab)
    _against_product(axes[1, 0], cells, "min_intra", "min intra-class cosine")
    _against_product(axes[1, 1], cells, "max_inter", "max inter-class cosine")
    ax = axes[1, 2]
    _against_product(ax, cells, "alpha_beta", "alpha beta (network)")
    p = sorted({c["product"] for c in cells})
    ax.plot(p, [next(c["ufm_alpha_beta"] for c in cells if c["product"] == q) for q in p],
            "k-", lw=1, label="regularized UFM optimum alpha beta*")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
