"""The custom sweep of the command line (no `--experiment`): one group built from a config preset
(`nc_jax.config.PRESETS`) or a `--config` file, and its figures, drawn like the thesis'
experiments draw theirs (`nc_jax.analysis` plots) for any model and loss."""
from __future__ import annotations

import functools
import os

from nc_jax.analysis import plot_depth, plot_theorem, plot_training_curves, plot_wd_bn
from nc_jax.config import PRESETS
from nc_jax.runs import CHECKPOINT_NAME, Experiment


#: The figures a custom sweep draws into --out (`plot_custom`); --overwrite removes them too.
CUSTOM_FIGURES = ("nc_vs_weight_decay.png", "training_curves.png", "theorem.png",
                  "layers.png")


def plot_custom(doc: dict, out_dir: str) -> None:
    """The figures of a custom sweep (one group, any model and loss), from its results document:
    min intra / max inter of the last-layer features against weight decay (Figure 3.1's
    drawing); with in-loop records (`record_every`) the NC curves during training; with
    cross-entropy Theorem 2.3.1's distance to collapse against the loss gap; with --layers NC
    across the layers (Figure 3.3's drawing). A figure without data to draw is skipped."""
    runs = doc["runs"]
    if not runs:
        return
    cfg = next(iter(doc["configs"].values()))
    c = (doc.get("data") or {}).get("num_classes") or cfg["data"]["num_classes"]
    r0 = runs[0]
    what = (f"{r0.get('model')} depth {r0.get('depth')} width {r0.get('width')}, BN "
            f"{r0.get('bn')}, loss {r0.get('loss')}")
    path = functools.partial(os.path.join, out_dir)
    plot_wd_bn(runs, path(CUSTOM_FIGURES[0]), num_classes=c,
               title=f"NC vs weight decay ({doc.get('preset')}: {what})")
    curves = next((r["curves"] for r in runs if r.get("curves")), None)
    if curves:
        keys = [k for k in ("min_intra", "max_inter", "nc1") if k in curves] or \
            [k for k in curves if k != "epoch"]
        plot_training_curves(runs, path(CUSTOM_FIGURES[1]), group=r0["group"], keys=keys,
                             title=f"NC during training ({what})")
    if any(r.get("loss_gap") is not None for r in runs):
        plot_theorem(runs, path(CUSTOM_FIGURES[2]), num_classes=c)
    if any(r.get("layers") for r in runs):
        plot_depth(runs, path(CUSTOM_FIGURES[3]), num_classes=c,
                   title=f"NC across layers ({what}; dotted: effective depth)")


#: A custom sweep: one group built from a config preset (`nc_jax.config.PRESETS`) or a file.
CUSTOM = Experiment(name="sweep", plot=plot_custom, default_preset="demo",
                    checkpoint_name=lambda group: CHECKPOINT_NAME,
                    presets={k: (lambda v=v: {"sweep": v}) for k, v in PRESETS.items()},
                    description="a custom weight-decay x seed sweep")
