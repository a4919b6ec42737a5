"""The command line (`nc-sweep`, `python -m nc_jax.cli`): any registered experiment preset or a
custom sweep, with config overrides, your own data and model by name. Importing it registers the
thesis' experiments (`nc_jax.thesis`); the library itself never does."""
from nc_jax.cli._custom import CUSTOM, CUSTOM_FIGURES, plot_custom
from nc_jax.cli._main import (DEFAULT_CHECKPOINT_EVERY, ModuleImportError, apply_overrides,
                              build_parser, experiment_main, import_modules, main, parse_value)

__all__ = ["CUSTOM", "CUSTOM_FIGURES", "DEFAULT_CHECKPOINT_EVERY", "ModuleImportError",
           "apply_overrides", "build_parser", "experiment_main", "import_modules", "main",
           "parse_value", "plot_custom"]
