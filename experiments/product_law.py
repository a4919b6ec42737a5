"""Separate weight decays on the last BN layer (lambda_H, the features' scale) and on the
classifier head (lambda_W): is the collapse a function of lambda_H * lambda_W alone, as the
rescaling symmetry of the regularized objective and the regularized unconstrained-features
model (Zhu et al. 2021) predict? (experiment "product_law", `nc_jax.thesis`)

    python experiments/product_law.py --preset quick
    python experiments/product_law.py --preset paper-seed0 --out experiments/results/product_law/paper-seed0
    ... (paper-seed1, paper-seed2: one preset per seed, each the whole grid)
    python experiments/product_law.py merge --preset paper --out experiments/results/product_law/paper \
        experiments/results/product_law/paper-seed{0,1,2}

Writes results.json / results.csv, product_law.png (the grid with its lines of equal product,
and each measure against the product), product_law.md / product_law.json (the fits and the
verdict). Same flags as `nc-sweep --experiment product_law`.
"""
import sys

from nc_jax.cli import experiment_main

if __name__ == "__main__":
    sys.exit(experiment_main("product_law"))
