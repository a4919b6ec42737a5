"""Analysis of trained runs: per-run NC reports (`analyse`, held-out NC too with `test=`;
reporters evaluated inside the compiled loop with `record_fn`), held-out NC, the theorem's
quantities (`theory`), the theorem's class-pair statement (`pair_fraction`), rank
correlations over runs (`spearman`) and figures."""
from nc_jax.analysis import _theory as theory
from nc_jax.analysis._analyse import analyse
from nc_jax.analysis._heldout import (heldout_report, heldout_runs, heldout_values,
                                      ncc_train_means_reporter)
from nc_jax.analysis._pairs import pair_cosines, pair_fraction, pair_quantiles, simplex_cosine
from nc_jax.analysis._plotting import (BN_STYLE, LAYER_MODES, failed, plot_depth, plot_groups,
                                       plot_layer_modes, plot_pairs, plot_theorem, plot_training_curves,
                                       plot_wd_bn, seed_stats)
from nc_jax.analysis._reporting import (CONVERGED_ACCURACY, DEFAULT_REPORTERS,
                                        EFFECTIVE_DEPTH_EPS, LAYER_REPORTERS, RunView, collapse,
                                        cosine_matrix, layer_spectrum, loss_accuracy, per_layer,
                                        prop221, py,
                                        record_fn, run_report, sweep_reports, theorem_bounds,
                                        theory_quantities)
from nc_jax.analysis._stats import spearman

__all__ = [
    "BN_STYLE", "CONVERGED_ACCURACY", "EFFECTIVE_DEPTH_EPS", "LAYER_MODES", "RunView", "analyse",
    "DEFAULT_REPORTERS", "LAYER_REPORTERS", "collapse", "layer_spectrum", "cosine_matrix", "failed", "heldout_report", "heldout_runs", "heldout_values", "loss_accuracy",
    "ncc_train_means_reporter", "pair_cosines", "pair_fraction", "pair_quantiles", "per_layer", "plot_depth", "plot_groups", "plot_layer_modes", "plot_pairs",
    "plot_theorem", "plot_training_curves", "plot_wd_bn", "prop221", "py", "record_fn",
    "run_report", "seed_stats", "simplex_cosine", "spearman", "sweep_reports", "theorem_bounds", "theory", "theory_quantities",
]
