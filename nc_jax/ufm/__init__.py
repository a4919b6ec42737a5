"""The unconstrained features model (UFM) behind Theorem 2.3.1 (arXiv 2309.04644): solvers for
the norm-constrained problem (`solve`, `solve_grid`) and its weight-decay form
(`solve_regularized`, `regularized_optimum`; Zhu et al. 2021), the collapse geometry of a
solution, and the study of how tight the theorem's bounds are (`tightness`, figures in `plots`).
Method and caveats: docs/ufm.md."""
from nc_jax.ufm import _plots as plots
from nc_jax.ufm import _tightness as tightness
from nc_jax.ufm._regularized import regularized_optimum, solve_regularized
from nc_jax.ufm._solve import (UFMSolution, descend, etf_attainable, geometry,
                               log_mean_cross_entropy, log_min_loss, solve, solve_grid)

__all__ = ["UFMSolution", "descend", "etf_attainable", "geometry", "log_mean_cross_entropy",
           "log_min_loss", "plots", "regularized_optimum", "solve", "solve_grid",
           "solve_regularized", "tightness"]
