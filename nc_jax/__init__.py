"""nc-jax: Neural Collapse experiments and metrics in JAX.

    result = nc_jax.run_sweep(cfg, data, model=None, loss=None)   # one vmapped program
    runs = nc_jax.analyse(result, data, layers=False)              # one dict per run
"""
from nc_jax import config, data, losses, metrics, models, optim, sweep, task, theory, train  # noqa: F401
from nc_jax.config import SweepConfig  # noqa: F401
from nc_jax.reporting import analyse  # noqa: F401
from nc_jax.sweep import SweepResult, run_sweep  # noqa: F401
from nc_jax.task import Task, make_task  # noqa: F401

__version__ = "0.2.0"
