"""nc-jax: Neural Collapse experiments and metrics in JAX."""
from nc_jax import config, data, metrics, models, optim, sweep, theory, train  # noqa: F401

__version__ = "0.1.0"
