"""Data complexity (thesis Section 1.4): data of lower complexity collapses more.

Compares, at a fixed weight decay with affine BN, three label functions of the same Gaussian
inputs: the conic-hull data (bias-free linear teacher, Section 3.1.2), the thesis' 3-layer
teacher and a deeper 6-layer teacher.

    python experiments/data_complexity.py --preset quick
    python experiments/data_complexity.py --preset paper

The presets and figures live in `nc_jax.thesis` (experiment "data_complexity"); this script is
`nc-sweep --experiment data_complexity` and takes the same flags (--preset, --out, --set field=value,
--model, --loss, --data, --reanalyse, --plot-only, ...).
"""
import sys

from nc_jax.cli import experiment_main

if __name__ == "__main__":
    sys.exit(experiment_main("data_complexity"))
