"""Figure 3.1 of the thesis: NC of the last-layer features against weight decay, for affine BN,
non-affine ("plain") BN and no BN (Section 3.1).

    python experiments/fig3_1_wd_bn.py --preset quick     # CPU, minutes
    python experiments/fig3_1_wd_bn.py --preset paper     # thesis protocol, 3 seeds

Each BN variant's weight-decay grid x seeds trains as one vmapped program; NC is recorded every
`record_every` epochs inside the compiled loop. Writes results.json / results.csv and
fig3_1.png, training_curves.png, theorem.png to --out.

The presets and figures live in `nc_jax.thesis` (experiment "fig3_1"); this script is
`nc-sweep --experiment fig3_1` and takes the same flags (--preset, --out, --set field=value,
--model, --loss, --data, --reanalyse, --plot-only, ...).
"""
import sys

from nc_jax.cli import experiment_main

if __name__ == "__main__":
    sys.exit(experiment_main("fig3_1"))
