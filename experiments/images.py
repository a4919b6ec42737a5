"""Figure 3.1's protocol for a BN CNN and a BN ResNet on MNIST-5k with a 1000-image hold-out, and
ce vs mse vs label smoothing (experiment "images", `nc_jax.thesis`).

    python experiments/images.py --preset quick
    python experiments/images.py --preset paper-cnn-affine \\
        --out experiments/results/images/paper-cnn-affine          # also -plain, -none
    python experiments/images.py merge --preset paper-cnn \\
        --out experiments/results/images/paper-cnn \\
        experiments/results/images/paper-cnn-{affine,plain,none}
    python experiments/images.py merge --preset paper-resnet \\
        --out experiments/results/images/paper-resnet \\
        experiments/results/images/paper-resnet-{affine,plain,none}

Same flags as `nc-sweep --experiment images` (--preset, --out, --set field=value, --reanalyse,
--plot-only, ...); `merge` joins the results of per-variant presets into one results.json.
"""
import sys

from nc_jax.cli import experiment_main

if __name__ == "__main__":
    sys.exit(experiment_main("images"))
