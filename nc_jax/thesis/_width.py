"""Experiment `width`: why does max inter rise in the middle layers, and does width remove it?

Beyond the thesis (arXiv 2309.04644). Its Figure 3.3 shows max inter-class cosine rising in the
middle layers of a 15-layer affine-BN MLP although NCC accuracy is perfect there (ours: 0.4-0.7 at
WD 5e-4 to 3e-3, `fig3_3`). Two readings: the class means of those layers span fewer than C-1
well-separated directions (a rank deficit a wider layer might not need), or the rise is the
common mean mu_G that uncentred cosines see. This experiment trains the 15-layer network at
widths 128 / 256 / 512 at one weight decay (`WIDTH_WD`, where the rise is largest among the
runs that fit every sample), 3 seeds each, and records per layer (`analysis.per_layer`,
`analysis.layer_spectrum`): max inter uncentred and centred, the singular spectrum of the
centred class-mean matrix and its effective rank (C - 1 for a simplex ETF), and that of the raw
class means. A 6-layer MLP
without BN at the same WD gives the centred cosines of a network whose features are post-ReLU
(every uncentred cosine >= 0 by construction).

Writes width.png (per layer, mean +- std over seeds, one line per group), width.md / width.json
(per group: the mid-layer peak of max inter, raw and centred, where it is, the effective rank
there and at the last layer; and the rank correlation of the peak with width over runs).
"""
from __future__ import annotations

import json
import os

import numpy as np

from nc_jax._files import atomic_write_text
from nc_jax.analysis import failed, spearman
from nc_jax.config import DataConfig, ModelConfig, OptimConfig, SweepConfig
from nc_jax.runs import Experiment, register_experiment

#: The weight decay of the width study: among Figure 3.3's WDs where every seed fits every
#: sample (1e-4 .. 1e-3 in `fig3_3 paper-seeds`), the one with the largest mid-layer rise (0.63).
WIDTH_WD = 1e-3
PAPER_WIDTHS = (128, 256, 512)
#: The per-layer keys summarised: (results key, label).
LAYER_KEYS = (("max_inter", "max inter (raw)"), ("eval_centered_max_inter", "max inter (centred)"),
              ("effective_rank", "effective rank, centred means"),
              ("raw_effective_rank", "effective rank, raw means"))


def _deep(width, epochs, n, seeds, record_every=10, checkpoint_every=0, depth=15,
          **data) -> SweepConfig:
    return SweepConfig(model=ModelConfig(depth=depth, width=width, bn="affine"),
                       optim=OptimConfig(epochs=epochs), data=DataConfig(n=n, **data),
                       weight_decays=(WIDTH_WD,), seeds=seeds, record_every=record_every,
                       checkpoint_every=checkpoint_every)


def _no_bn(width, epochs, n, seeds, record_every=10, checkpoint_every=0, **data) -> SweepConfig:
    return SweepConfig(model=ModelConfig(depth=6, width=width, bn="none"),
                       optim=OptimConfig(epochs=epochs), data=DataConfig(n=n, **data),
                       weight_decays=(WIDTH_WD,), seeds=seeds, record_every=record_every,
                       checkpoint_every=checkpoint_every)


def _paper(widths, no_bn: bool, seeds=(0, 1, 2), suffix: str = "") -> dict:
    # the Figure 3.3 protocol (Section 3.1.1: 10000 teacher samples, 300 epochs, 2 LR decays)
    groups = {f"width {w}{suffix}": _deep(w, 300, 10000, seeds, checkpoint_every=10)
              for w in widths}
    if no_bn:
        groups["no BN, depth 6"] = _no_bn(256, 300, 10000, seeds, checkpoint_every=10)
    return groups


# ---- the summary -------------------------------------------------------------------------------

def _layers(run, key):
    return np.array([np.nan if l.get(key) is None else l[key] for l in run["layers"]], float)


def label(run) -> str:
    """The summary's group of a run: its network (parts merged by seed join again here)."""
    if run["bn"] == "none":
        return f"no BN, depth {run['depth']}, width {run['width']}"
    return f"width {run['width']}" + (f", depth {run['depth']}" if run["depth"] != 15 else "")


def summary(doc) -> dict:
    """Per group (runs that did not fail, with per-layer results): the peak over the hidden
    layers before the last two of max inter, raw and centred (mean +- std over seeds), the layer
    of the raw peak, the effective rank of the centred class means there and at the last layer,
    and the Spearman correlation of the raw peak with width over the affine runs."""
    runs = [r for r in doc["runs"] if r.get("layers") and not failed(r)
            and "effective_rank" in r["layers"][0]]
    groups: dict = {}
    for r in runs:
        groups.setdefault(label(r), []).append(r)
    rows = []
    peaks, widths, ranks = [], [], []
    for g, rs in groups.items():
        L = len(rs[0]["layers"])
        # the last two layers are where the network separates the classes for the head; the
        # "rise" is what happens before them (all layers for a network of <= 3 layers)
        mid = slice(0, L - 2 if L > 3 else L)
        raw = np.stack([_layers(r, "max_inter") for r in rs])
        cen = np.stack([_layers(r, "eval_centered_max_inter") for r in rs])
        er = np.stack([_layers(r, "effective_rank") for r in rs])
        at = [int(np.nanargmax(x[mid])) for x in raw]
        peak_raw = [float(np.nanmax(x[mid])) for x in raw]
        row = {"group": g, "width": float(rs[0]["width"]), "depth": L, "bn": rs[0]["bn"],
               "seeds": len(rs), "converged": sum(bool(r.get("converged")) for r in rs),
               "train_accuracy_min": float(min(r["train_accuracy"] for r in rs)),
               "peak_max_inter": _ms(peak_raw),
               "peak_layer": [a + 1 for a in at],
               "peak_centered_max_inter": _ms([float(np.nanmax(x[mid])) for x in cen]),
               "effective_rank_at_peak": _ms([float(e[a]) for e, a in zip(er, at)]),
               "min_effective_rank": _ms([float(np.nanmin(e[mid])) for e in er]),
               "last_effective_rank": _ms([float(e[-1]) for e in er]),
               "last_max_inter": _ms([float(x[-1]) for x in raw]),
               "last_centered_max_inter": _ms([float(x[-1]) for x in cen])}
        rows.append(row)
        if rs[0]["bn"] != "none":
            peaks += peak_raw
            widths += [row["width"]] * len(rs)
            ranks += [float(e[a]) for e, a in zip(er, at)]
    return {"weight_decay": WIDTH_WD, "groups": rows, "runs": len(peaks),
            "spearman_peak_vs_width": spearman(widths, peaks),
            "spearman_peak_vs_effective_rank": spearman(ranks, peaks)}


def _ms(v) -> list:
    return [float(np.mean(v)), float(np.std(v))]


def render(s: dict) -> str:
    f = lambda p, n=3: f"{p[0]:.{n}f} ± {p[1]:.{n}f}"  # noqa: E731
    lines = [f"Weight decay {s['weight_decay']:g}; mean ± std over seeds. Peak = maximum over the "
             "layers before the last two.", "",
             "| group | seeds (100%) | min train acc | peak max inter raw | peak layer | "
             "peak max inter centred | effective rank at the peak | lowest effective rank | "
             "last layer: effective rank | last layer: max inter raw / centred |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in s["groups"]:
        lines.append(
            f"| {r['group']} | {r['seeds']} ({r['converged']}) | {r['train_accuracy_min']:.4f} | "
            f"{f(r['peak_max_inter'])} | {', '.join(map(str, r['peak_layer']))} | "
            f"{f(r['peak_centered_max_inter'])} | {f(r['effective_rank_at_peak'], 2)} | "
            f"{f(r['min_effective_rank'], 2)} | {f(r['last_effective_rank'], 2)} | "
            f"{f(r['last_max_inter'])} / {f(r['last_centered_max_inter'])} |")
    rho = {k: "—" if s[k] is None else f"{s[k]:+.2f}"
           for k in ("spearman_peak_vs_width", "spearman_peak_vs_effective_rank")}
    lines += ["", f"Spearman correlation of the raw peak over the {s['runs']} BN runs: with width "
                  f"{rho['spearman_peak_vs_width']}, with the effective rank at the peak's layer "
                  f"{rho['spearman_peak_vs_effective_rank']}."]
    return "\n".join(lines)


def _plot(doc, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nc_jax._files import save_figure
    s = summary(doc)
    atomic_write_text(os.path.join(out_dir, "width.json"), json.dumps(s, indent=1))
    atomic_write_text(os.path.join(out_dir, "width.md"), render(s) + "\n")
    runs = [r for r in doc["runs"] if r.get("layers") and not failed(r)
            and "effective_rank" in r["layers"][0]]
    if not runs:
        return
    C = len(runs[0]["layers"][0].get("spectrum") or []) or 10
    fig, axes = plt.subplots(1, len(LAYER_KEYS), figsize=(4.2 * len(LAYER_KEYS), 3.8))
    for g in dict.fromkeys(label(r) for r in runs):
        sel = [r for r in runs if label(r) == g]
        for ax, (key, name) in zip(axes, LAYER_KEYS):
            v = np.stack([_layers(r, key) for r in sel])
            x = np.arange(1, v.shape[1] + 1)
            line, = ax.plot(x, v.mean(0), marker=".", label=f"{g} ({len(sel)})")
            ax.fill_between(x, v.mean(0) - v.std(0), v.mean(0) + v.std(0),
                            color=line.get_color(), alpha=0.2)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("layer")
    # a simplex ETF's centred class means have effective rank C - 1
    axes[2].axhline(C - 1, color="gray", ls=":", lw=1)
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"width ({doc['preset']}): per-layer NC at WD {WIDTH_WD:g}")
    fig.tight_layout()
    save_figure(fig, os.path.join(out_dir, "width.png"))
    plt.close(fig)


register_experiment(Experiment(
    name="width", plot=_plot, layers=True, shared_data=True,
    description="the mid-layer rise of max inter at widths 128 / 256 / 512 (depth 15, affine "
                "BN), with the class means' spectrum, and a no-BN MLP's centred cosines",
    presets={
        "smoke": lambda: {f"width {w}": _deep(w, 3, 200, (0, 1), 1, depth=5, dim=8,
                                              num_classes=4, teacher_width=16) for w in (8, 16)},
        "quick": lambda: {**{f"width {w}": _deep(w, 60, 2000, (0,)) for w in (32, 64, 128)},
                          "no BN, depth 6": _no_bn(64, 60, 2000, (0,))},
        # one preset per part so that each trains within an hour on a 2-core CPU; `merge`
        # joins them into `paper`
        "paper-width128-256": lambda: _paper((128, 256), no_bn=True),
        # width 512 costs ~4x width 256: one seed per preset (distinct groups, for `merge`)
        **{f"paper-width512-seed{s}": (lambda s=s: _paper((512,), no_bn=False, seeds=(s,),
                                                          suffix=f" seed {s}"))
           for s in (0, 1, 2)},
    }))
