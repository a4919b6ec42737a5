"""nc-jax: Neural Collapse experiments and metrics in JAX.

    result = nc_jax.run_sweep(cfg, data, model=None, loss=None)   # one vmapped program
    runs = nc_jax.analyse(result, data, layers=False)              # one dict per run

Subpackages, in pipeline order: `config`, `models`, `losses`, `data`, `training`, `metrics`,
`analysis`, `ufm`, `runs`; the command line is `nc_jax.cli` and the thesis' experiments `nc_jax.thesis`
(neither is imported here).
"""
from nc_jax import analysis, config, data, losses, metrics, models, runs, training, ufm
from nc_jax._version import __version__
from nc_jax.analysis import analyse
from nc_jax.config import DataConfig, LossConfig, ModelConfig, OptimConfig, SweepConfig
from nc_jax.runs import run_sweep
from nc_jax.training import RunOptions, SweepResult, Task, make_task

__all__ = [
    "DataConfig", "LossConfig", "ModelConfig", "OptimConfig", "RunOptions", "SweepConfig",
    "SweepResult", "Task", "__version__", "analyse", "analysis", "config", "data", "losses",
    "make_task", "metrics", "models", "run_sweep", "runs", "training", "ufm",
]
