"""Figure 3.3 of the thesis: NC across the layers of a 15-layer affine-BN MLP for each weight
decay ("depth minimization", Section 3.2), with the epsilon-effective depth (Definition 3.2.2).

    python experiments/fig3_3_depth.py --preset quick
    python experiments/fig3_3_depth.py --preset paper
    python experiments/fig3_3_depth.py --preset paper-seeds   # 3 seeds: error bars

Per run and per hidden layer (post-BN output of every block, BN in eval mode, whole training
set): NCC accuracy, min intra-class and max inter-class cosine, and the full report. Writes
results.json / results.csv, fig3_3.png, training_curves.png and theorem.png.

The presets and figures live in `nc_jax.thesis` (experiment "fig3_3"); this script is
`nc-sweep --experiment fig3_3` and takes the same flags (--preset, --out, --set field=value,
--model, --loss, --data, --reanalyse, --plot-only, ...).
"""
import sys

from nc_jax.cli import experiment_main

if __name__ == "__main__":
    sys.exit(experiment_main("fig3_3"))
