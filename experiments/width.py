"""Why max inter-class cosine rises in the middle layers of a deep BN MLP, and whether width
removes it: depth 15, affine BN, widths 128 / 256 / 512 at one weight decay, 3 seeds, with the
singular spectrum and effective rank of the class means per layer; and the centred cosines of a
6-layer MLP without BN (experiment "width", `nc_jax.thesis`).

    python experiments/width.py --preset quick
    python experiments/width.py --preset paper-width128-256 --out experiments/results/width/paper-width128-256
    python experiments/width.py --preset paper-width512-seed0 --out experiments/results/width/paper-width512-seed0
    ... (paper-width512-seed1, -seed2: width 512 costs ~4x width 256, one seed per preset)
    python experiments/width.py merge --preset paper --out experiments/results/width/paper \\
        experiments/results/width/paper-width128-256 experiments/results/width/paper-width512-seed{0,1,2}

Writes results.json / results.csv, width.png (per layer: max inter raw and centred, effective
rank of the centred and raw class means; mean +- std over seeds), width.md / width.json (the
mid-layer peak per network and its rank correlation with width). Same flags as
`nc-sweep --experiment width`.
"""
import sys

from nc_jax.cli import experiment_main

if __name__ == "__main__":
    sys.exit(experiment_main("width"))
