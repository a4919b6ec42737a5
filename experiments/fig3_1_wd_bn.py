"""Figure 3.1 of the thesis: NC of the last-layer features against weight decay, for affine BN,
non-affine ("plain") BN and no BN (Section 3.1).

    python experiments/fig3_1_wd_bn.py --preset quick     # CPU, minutes
    python experiments/fig3_1_wd_bn.py --preset paper     # thesis protocol, 3 seeds

Each BN variant's weight-decay grid x seeds trains as one vmapped program; NC is recorded every
`record_every` epochs inside the compiled loop. Writes results.json / results.csv and
fig3_1.png, training_curves.png, theorem.png to --out.
"""
from __future__ import annotations

import os
import sys

from nc_jax.config import THESIS_WEIGHT_DECAYS, DataConfig, ModelConfig, OptimConfig, SweepConfig
from nc_jax.data import make_dataset
from nc_jax.experiment import experiment_main, run_groups
from nc_jax.plotting import plot_theorem, plot_training_curves, plot_wd_bn

NAME = "fig3_1"
BN_VARIANTS = ("affine", "plain", "none")


def _grid(base: SweepConfig):
    return {bn: base.replace(model=ModelConfig(base.model.depth, base.model.width, bn))
            for bn in BN_VARIANTS}


PRESETS = {
    # 2000 samples, width 64, 60 epochs: the thesis' grid in a few minutes on a 2-core CPU.
    "quick": lambda: _grid(SweepConfig(
        model=ModelConfig(depth=6, width=64), optim=OptimConfig(epochs=60),
        data=DataConfig(n=2000), weight_decays=THESIS_WEIGHT_DECAYS, seeds=(0,),
        record_every=10)),
    # Section 3.1.1: 6 layers, 10000 teacher samples, lr 0.0679, momentum 0.9, batch 128,
    # 300 epochs, LR x0.1 at epochs 100 and 200; three seeds for error bars.
    "paper": lambda: _grid(SweepConfig(
        model=ModelConfig(depth=6, width=256), optim=OptimConfig(epochs=300),
        data=DataConfig(n=10000), weight_decays=THESIS_WEIGHT_DECAYS, seeds=(0, 1, 2),
        record_every=10, checkpoint_every=10)),
    # A CI-sized smoke preset (seconds): the same code path, tiny sizes.
    "smoke": lambda: _grid(SweepConfig(
        model=ModelConfig(depth=3, width=16), optim=OptimConfig(epochs=4, batch_size=32),
        data=DataConfig(n=200, dim=8, num_classes=4, teacher_width=16),
        weight_decays=(1e-4, 1e-2), seeds=(0,), record_every=2)),
}


def run(configs, out_dir, progress):
    # the data depend only on DataConfig, shared by all groups: generate once
    data = make_dataset(next(iter(configs.values())).data)
    runs, timing = run_groups(configs, data=data, progress=progress, out_dir=out_dir)
    return runs, {"timing": timing, "data_info": {k: v for k, v in data.info.items()
                                                  if k != "selected_indices"}}


def plot(doc, out_dir):
    runs = doc["runs"]
    c = next(iter(doc["configs"].values()))["data"]["num_classes"]
    plot_wd_bn(runs, os.path.join(out_dir, "fig3_1.png"), num_classes=c,
               title=f"Figure 3.1 ({doc['preset']}): last-layer cosine vs WD and BN")
    plot_training_curves(runs, os.path.join(out_dir, "training_curves.png"), group="affine")
    plot_theorem(runs, os.path.join(out_dir, "theorem.png"), num_classes=c)


if __name__ == "__main__":
    sys.exit(experiment_main(NAME, PRESETS, run, plot))
