"""Figure 3.3 of the thesis: NC across the layers of a 15-layer affine-BN MLP for each weight
decay ("depth minimization", Section 3.2), with the epsilon-effective depth (Definition 3.2.2).

    python experiments/fig3_3_depth.py --preset quick
    python experiments/fig3_3_depth.py --preset paper
    python experiments/fig3_3_depth.py --preset paper-seeds   # 3 seeds: error bars

Per run and per hidden layer (post-BN output of every block, BN in eval mode, whole training
set): NCC accuracy, min intra-class and max inter-class cosine, and the full report. Writes
results.json / results.csv, fig3_3.png, training_curves.png and theorem.png.
"""
from __future__ import annotations

import os
import sys

from nc_jax.config import THESIS_WEIGHT_DECAYS, DataConfig, ModelConfig, OptimConfig, SweepConfig
from nc_jax.experiment import experiment_main, run_groups
from nc_jax.plotting import plot_depth, plot_theorem, plot_training_curves

NAME = "fig3_3"

PRESETS = {
    "quick": lambda: {"affine": SweepConfig(
        model=ModelConfig(depth=15, width=64, bn="affine"), optim=OptimConfig(epochs=60),
        data=DataConfig(n=2000), weight_decays=THESIS_WEIGHT_DECAYS, seeds=(0,),
        record_every=10)},
    # Section 3.2.1: depth 15, affine BN, otherwise the protocol of Figure 3.1. One seed, as in
    # the thesis (a 15-layer run costs 3.2x a 6-layer one on CPU).
    "paper": lambda: {"affine": SweepConfig(
        model=ModelConfig(depth=15, width=256, bn="affine"), optim=OptimConfig(epochs=300),
        data=DataConfig(n=10000), weight_decays=THESIS_WEIGHT_DECAYS, seeds=(0,),
        record_every=10, checkpoint_every=10)},
    # beyond the thesis: the same protocol with 3 seeds (21 runs in one sweep), for error bars on
    # every per-layer curve and on the conjectures' margins
    "paper-seeds": lambda: {"affine": SweepConfig(
        model=ModelConfig(depth=15, width=256, bn="affine"), optim=OptimConfig(epochs=300),
        data=DataConfig(n=10000), weight_decays=THESIS_WEIGHT_DECAYS, seeds=(0, 1, 2),
        record_every=10, checkpoint_every=10)},
    "smoke": lambda: {"affine": SweepConfig(
        model=ModelConfig(depth=5, width=16, bn="affine"),
        optim=OptimConfig(epochs=4, batch_size=32),
        data=DataConfig(n=200, dim=8, num_classes=4, teacher_width=16),
        weight_decays=(1e-4, 1e-2), seeds=(0,), record_every=2, checkpoint_every=2)},
}


def run(configs, out_dir, progress):
    runs, timing = run_groups(configs, layers=True, progress=progress, out_dir=out_dir)
    return runs, {"timing": timing}


def plot(doc, out_dir):
    runs = doc["runs"]
    c = next(iter(doc["configs"].values()))["data"]["num_classes"]
    plot_depth(runs, os.path.join(out_dir, "fig3_3.png"),
               title=f"Figure 3.3 ({doc['preset']}): NC across layers, depth "
                     f"{runs[0]['depth']}, affine BN")
    plot_training_curves(runs, os.path.join(out_dir, "training_curves.png"), group="affine")
    plot_theorem(runs, os.path.join(out_dir, "theorem.png"), num_classes=c)


if __name__ == "__main__":
    sys.exit(experiment_main(NAME, PRESETS, run, plot))
