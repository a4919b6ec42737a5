"""Experiment `images`: Figure 3.1's protocol for convolutional networks on real images, with a
held-out set.

Data: MNIST-5k (`DataConfig(kind="mnist", standardize=True)`, 500 digits per class, 28x28x1)
with a seeded, class-balanced hold-out of 1000 (100 per class; `DataConfig.test_size`), so every
run trains on the same 4000 images and is also measured on 1000 it never saw (`nc_jax.analysis`:
test accuracy, the collapse measures of the held-out features and NCC accuracy against the
training class means).

Groups (each one vmapped weight-decay x seed grid, SGD lr 0.0679, momentum 0.9, batch 128, LR
x0.1 at 1/3 and 2/3 of training, WD in the optimizer on every parameter, as in Section 3.1.1):

- "<model> <bn>": a BN CNN ("cnn") or a small BN ResNet ("resnet") with affine / plain / no BN;
- "cnn <loss>": the loss comparison, ce vs mse vs label_smoothing (0.1) for the affine-BN CNN.

Per-block (per-layer) measures and the effective depth are on (`layers=True`): both conv models
return the global-average-pooled output of every block as their features.

Presets: `smoke` (CI), `quick` (minutes), `paper-cnn-{affine,plain,none}`,
`paper-loss-{ce,mse,label_smoothing}` and `paper-resnet-{affine,plain,none}` (21 runs each: one
panel's 63 runs take longer than 2 hours on a 2-core CPU); `merge_results` joins per-variant
results into one document and figures.
"""
from __future__ import annotations

import os

from nc_jax.models import BN_VARIANTS
from nc_jax.config import (THESIS_WEIGHT_DECAYS, DataConfig, LossConfig, ModelConfig,
                           OptimConfig, SweepConfig)
from nc_jax.runs import Experiment, register_experiment
from nc_jax.analysis import plot_depth, plot_training_curves, plot_wd_bn

#: The compared losses, by group suffix (ce is the thesis' loss).
LOSSES = {"ce": LossConfig("ce"), "mse": LossConfig("mse"),
          "label_smoothing": LossConfig("label_smoothing", smoothing=0.1)}
#: 4000 training and 1000 held-out MNIST digits, the same for every group and seed.
IMAGES_DATA = DataConfig(kind="mnist", standardize=True, test_size=1000)
SEEDS = (0, 1, 2)
SMOKE_DATA = DataConfig(kind="mnist", standardize=True, test_size=4500)
QUICK_WDS = (1e-4, 1e-3, 1e-2)


def _sweep(model: ModelConfig, epochs: int, *, wds=THESIS_WEIGHT_DECAYS, seeds=SEEDS,
           loss: LossConfig = LossConfig(), batch_size: int = 128, record_every: int = 5,
           checkpoint_every: int = 0) -> SweepConfig:
    # vmap_runs=1: XLA:CPU's batched (grouped) convolutions are several times slower than K
    # plain ones, so the runs go one at a time through lax.map inside the compiled program
    # (docs/performance.md, "Convolutional models")
    return SweepConfig(model=model, optim=OptimConfig(epochs=epochs, batch_size=batch_size),
                       data=IMAGES_DATA, loss=loss, weight_decays=tuple(wds), seeds=tuple(seeds),
                       record_every=record_every, checkpoint_every=checkpoint_every,
                       vmap_runs=1)


def bn_groups(name: str, depth: int, width: int, epochs: int, bns=BN_VARIANTS,
              **kw) -> dict:
    """{"<name> <bn>": config} of one conv model for each BN variant in `bns`."""
    return {f"{name} {bn}": _sweep(ModelConfig(depth, width, bn, name), epochs, **kw)
            for bn in bns}


def loss_groups(depth: int, width: int, epochs: int, losses=tuple(LOSSES), **kw) -> dict:
    """{"cnn <loss>": config}: the affine-BN CNN trained with each loss in `losses`."""
    return {f"cnn {loss}": _sweep(ModelConfig(depth, width, "affine", "cnn"), epochs,
                                  loss=LOSSES[loss], **kw) for loss in losses}


# ---- the paper presets -----------------------------------------------------------------------
# Sizes are set by the cost on the 2-core CPU and by the geometry: a simplex ETF of C = 10 class
# means needs at least C - 1 = 9 feature dimensions, so no paper model ends narrower than 16.
# Measured on the idle machine with the runs mapped one at a time (`vmap_runs=1`;
# docs/performance.md, "Convolutional models"): CNN-4 width 16 trains 16.7-18.5 run-steps/s,
# ResNet-8 width 8 8.6-9.1 (an epoch of 4000 images is 32 steps), so
# - CNN-4 w16 (28x28 -> 14x14 -> 7x7, 16-d GAP feature), 30 epochs: 63 runs x 30 x ~1.8 s
#   = ~57 min of training; with the records every 3 epochs and the analysis the paper runs took
#   19 / 22 / 18 min per BN variant (affine / plain / none), one preset per BN variant like the
#   ResNet. A probe at 30 epochs reached 99.9 / 99.8 / 98.9% train accuracy at WD 1e-4 / 1e-3 /
#   1e-2 (16 channels are little capacity for 4000 digits).
# - ResNet-8 w8 (8 / 16 / 32 channels, 32-d feature), 30 epochs: 21 runs x 30 x ~3.6 s = ~38 min
#   per BN variant (63 runs ~1.9 h, too close to 2 hours of background compute, so
#   one preset per variant). The probe (30 epochs): 100 / 99.98 / 99.6%. The paper runs took
#   46 / 37 / 33 min (affine / plain / none; affine with the test suite beside it).
# `python experiments/images.py merge` joins the three ResNet parts for the Figure 3.1 panel.
CNN = dict(depth=4, width=16)
RESNET = dict(depth=8, width=8)
CNN_EPOCHS, RESNET_EPOCHS = 30, 30
CNN_SCHEDULE = dict(record_every=3, checkpoint_every=6)      # records at 3, 6, ..., 30
RESNET_SCHEDULE = dict(record_every=5, checkpoint_every=5)


def presets() -> dict:
    """{preset: () -> {group: SweepConfig}} of the experiment."""
    out = {
        # CI-sized: tiny widths, 2 epochs, 1-2 WDs, 1 seed, one group of every kind (a BN CNN,
        # a BN-free ResNet, a non-CE loss); 500 training images (test_size 4500), an epoch is
        # 16 steps of 32. The code path of the paper presets; its time is mostly XLA compiles.
        "smoke": lambda: {g: c.replace(data=SMOKE_DATA) for g, c in {
            **bn_groups("cnn", 2, 4, 2, bns=("affine",), wds=(1e-4, 1e-2), seeds=(0,),
                        record_every=1, checkpoint_every=1, batch_size=32),
            **bn_groups("resnet", 8, 2, 2, bns=("none",), wds=(1e-3,), seeds=(0,),
                        record_every=1, batch_size=32),
            **loss_groups(2, 4, 2, losses=("mse",), wds=(1e-3,), seeds=(0,),
                          record_every=1, batch_size=32)}.items()},
        # Minutes on 2 cores: 3 WDs, 1 seed, 6 epochs, narrow models (CNN-4 w12, ResNet-8 w4,
        # whose last features still have >= 12 dimensions); every group kind.
        "quick": lambda: {
            **bn_groups("cnn", 4, 12, 6, wds=QUICK_WDS, seeds=(0,), record_every=2),
            **bn_groups("resnet", 8, 4, 6, bns=("affine",), wds=QUICK_WDS, seeds=(0,),
                        record_every=2),
            **loss_groups(4, 12, 6, losses=("mse", "label_smoothing"), wds=QUICK_WDS,
                          seeds=(0,), record_every=2)},
    }
    # "cnn ce" is the config of "cnn affine" under the loss panel's name: the committed paper-loss
    # merges paper-cnn-affine with `--rename "cnn affine=cnn ce"` instead of training it again
    # (a group's name does not enter its runs; tests/thesis/test_images.py)
    for loss in LOSSES:
        out[f"paper-loss-{loss}"] = (lambda loss=loss: loss_groups(
            **CNN, epochs=CNN_EPOCHS, losses=(loss,), **CNN_SCHEDULE))
    for bn in BN_VARIANTS:
        out[f"paper-cnn-{bn}"] = (lambda bn=bn: bn_groups(
            "cnn", **CNN, epochs=CNN_EPOCHS, bns=(bn,), **CNN_SCHEDULE))
        out[f"paper-resnet-{bn}"] = (lambda bn=bn: bn_groups(
            "resnet", **RESNET, epochs=RESNET_EPOCHS, bns=(bn,), **RESNET_SCHEDULE))
    return out


# ---- figures ---------------------------------------------------------------------------------

def _split(group: str):
    """"cnn affine" -> ("cnn", "affine")."""
    model, _, variant = group.partition(" ")
    return model, variant


def _cosines_from(runs, source, prefix: str):
    """The runs that have `<prefix>min_intra` in `source(run)`, with those cosines in place of
    the training ones (the rest of the run, e.g. `converged`, unchanged)."""
    return [dict(r, min_intra=src[f"{prefix}min_intra"], max_inter=src[f"{prefix}max_inter"])
            for r in runs for src in (source(r),) if f"{prefix}min_intra" in src]


def _heldout(runs):
    """The runs with the held-out cosines in place of the training ones."""
    return _cosines_from(runs, lambda r: r, "test_")


def _centered(runs):
    """The runs with the last feature layer's cosines of *centered* features (global mean
    removed, BN in eval mode) in place of the thesis' uncentered ones. A ResNet's features are
    GAPs of ReLU outputs, hence non-negative, and their uncentered cosines cannot go below 0:
    the centered ones show the simplex geometry that the uncentered ones hide."""
    return _cosines_from(runs, lambda r: (r.get("layers") or [{}])[-1], "eval_centered_")


def plot_images(doc, out_dir):
    """Per model: Figure 3.1 (min intra / max inter vs WD per BN variant) on the training
    features, on the training features centered (`_centered`) and on the held-out features; per
    loss comparison the same with one line per loss; per group the NC training curves and the
    per-block measures (Figure 3.3 style, dotted: effective depth)."""
    runs = doc["runs"]
    c = (doc.get("data") or {}).get("num_classes") or 10
    groups = list(dict.fromkeys(r["group"] for r in runs))
    for model in dict.fromkeys(_split(g)[0] for g in groups):
        for kind, variants in (("bn", BN_VARIANTS), ("loss", tuple(LOSSES))):
            sel = [dict(r, group=_split(r["group"])[1]) for r in runs
                   if _split(r["group"])[0] == model and _split(r["group"])[1] in variants]
            if not sel:
                continue
            what = "BN variant" if kind == "bn" else "loss (affine BN)"
            stem = f"fig3_1_{model}" if kind == "bn" else f"losses_{model}"
            for rs, name, on in ((sel, stem, "training"),
                                 (_centered(sel), f"{stem}_centered",
                                  "centered (global mean removed) training"),
                                 (_heldout(sel), f"{stem}_heldout", "held-out")):
                if rs:
                    plot_wd_bn(rs, os.path.join(out_dir, f"{name}.png"), num_classes=c,
                               converged_only=False,
                               title=f"{model} on MNIST ({doc['preset']}), {on} features, "
                                     f"by {what}")
    for g in groups:
        slug = g.replace(" ", "_")
        plot_training_curves(runs, os.path.join(out_dir, f"training_curves_{slug}.png"), group=g)
        sel = [r for r in runs if r["group"] == g and r.get("layers")]
        if sel:
            plot_depth(sel, os.path.join(out_dir, f"layers_{slug}.png"),
                       title=f"{g} ({doc['preset']}): NC per block")


register_experiment(Experiment(
    name="images", plot=plot_images, layers=True, shared_data=True,
    description="Figure 3.1 for a BN CNN and a BN ResNet on MNIST-5k with a 1000-image "
                "hold-out, and ce vs mse vs label smoothing",
    presets=presets()))
