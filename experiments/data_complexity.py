"""Data complexity (thesis Section 1.4): data of lower complexity collapses more.

Compares, at a fixed weight decay with affine BN, three label functions of the same Gaussian
inputs: the conic-hull data (bias-free linear teacher, Section 3.1.2), the thesis' 3-layer
teacher and a deeper 6-layer teacher.

    python experiments/data_complexity.py --preset quick
    python experiments/data_complexity.py --preset paper
"""
from __future__ import annotations

import os
import sys

from nc_jax.config import DataConfig, ModelConfig, OptimConfig, SweepConfig
from nc_jax.experiment import experiment_main, run_groups
from nc_jax.plotting import plot_groups, plot_theorem

NAME = "data_complexity"
WEIGHT_DECAY = 5e-3


def _groups(model, optim, n, seeds, record_every, checkpoint_every=0, dim=32, classes=10, tw=256):
    def cfg(kind, depth):
        return SweepConfig(model=model, optim=optim,
                           data=DataConfig(kind=kind, n=n, dim=dim, num_classes=classes,
                                           teacher_depth=depth, teacher_width=tw),
                           weight_decays=(WEIGHT_DECAY,), seeds=seeds, record_every=record_every,
                           checkpoint_every=checkpoint_every)
    return {"conic hull": cfg("conic", 3), "teacher depth 3": cfg("teacher", 3),
            "teacher depth 6": cfg("teacher", 6)}


PRESETS = {
    "quick": lambda: _groups(ModelConfig(6, 64, "affine"), OptimConfig(epochs=60), 2000, (0, 1, 2), 10),
    "paper": lambda: _groups(ModelConfig(6, 256, "affine"), OptimConfig(epochs=300), 10000,
                             (0, 1, 2), 10, 10),
    "smoke": lambda: _groups(ModelConfig(3, 16, "affine"), OptimConfig(epochs=3, batch_size=32), 200,
                             (0,), 3, dim=8, classes=4, tw=16),
}


def run(configs, out_dir, progress):
    runs, timing = run_groups(configs, progress=progress, out_dir=out_dir)
    return runs, {"timing": timing, "weight_decay": WEIGHT_DECAY}


def plot(doc, out_dir):
    plot_groups(doc["runs"], os.path.join(out_dir, "data_complexity.png"),
                keys=("min_intra", "max_inter", "nc1", "ncc_accuracy"),
                title=f"NC vs data complexity ({doc['preset']}, affine BN, WD {WEIGHT_DECAY:g})")
    c = next(iter(doc["configs"].values()))["data"]["num_classes"]
    plot_theorem(doc["runs"], os.path.join(out_dir, "theorem.png"), num_classes=c)


if __name__ == "__main__":
    sys.exit(experiment_main(NAME, PRESETS, run, plot))
