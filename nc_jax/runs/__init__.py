"""Runs on disk: `run_sweep` (the training entry point; with `out_dir` it locks the directory,
checkpoints and resumes), the checkpoint format and its run identity, provenance, atomic files,
the directory lock, results files, the compile cache and named experiments (`Experiment`).

Rules every writer here follows: files are written atomically (temp file + rename), an output
directory is locked by the process that writes it, and an unfinished checkpoint is only continued
by the software that wrote it (unless allowed).
"""
from nc_jax.runs._checkpoint import (FORMAT, FORMAT_VERSION, CheckpointHook, checkpoint_epoch,
                                     load_checkpoint, read_checkpoint, resumable_train_runs,
                                     save_checkpoint)
from nc_jax.runs._compile_cache import (default_cache_dir, enable_compile_cache, is_disabled,
                                        resolve_cache_dir)
from nc_jax.runs._experiment import (EXPERIMENTS, Experiment, check_reanalysable, checkpoint_name,
                                     data_summary, get_experiment, register_experiment, run_experiment,
                                     run_group)
from nc_jax._files import (CHECKPOINT_NAME, RESULT_FILES, RUN_ARTIFACTS, CheckpointError,
                                OutDirError, ResourceError, atomic_write_bytes, atomic_write_json,
                                atomic_write_text, host_name, pid_alive)
from nc_jax.runs._identity import (NON_RESULT_FIELDS, CheckpointMismatchError,
                                   CheckpointVersionError, check_config, check_software,
                                   config_differences, data_fingerprint, run_identity)
from nc_jax.runs._lock import LOCK_NAME, OutDirBusyError, OutDirLock, holds_lock
from nc_jax.runs._outdir import is_orphaned_temp, prepare_out_dir
from nc_jax.runs._provenance import COMPARED, describe, software, source_sha256
from nc_jax.runs._results import (CURVES_COLUMNS, LAYERS_COLUMNS, environment, load_results,
                                  runs_table, write_results)
from nc_jax.runs._sweep import run_sweep

__all__ = [
    "CHECKPOINT_NAME", "COMPARED", "CURVES_COLUMNS", "CheckpointError", "CheckpointHook",
    "CheckpointMismatchError", "CheckpointVersionError", "EXPERIMENTS", "Experiment", "FORMAT",
    "FORMAT_VERSION", "LAYERS_COLUMNS", "LOCK_NAME", "NON_RESULT_FIELDS", "OutDirBusyError",
    "OutDirError", "OutDirLock", "RESULT_FILES", "ResourceError", "RUN_ARTIFACTS",
    "atomic_write_bytes",
    "atomic_write_json", "atomic_write_text", "check_config",
    "check_reanalysable", "check_software", "checkpoint_epoch", "checkpoint_name",
    "config_differences", "data_fingerprint", "data_summary", "default_cache_dir", "describe",
    "enable_compile_cache", "environment", "get_experiment", "holds_lock", "host_name",
    "is_disabled", "is_orphaned_temp", "load_checkpoint", "load_results", "pid_alive",
    "prepare_out_dir", "read_checkpoint", "register_experiment", "resolve_cache_dir",
    "resumable_train_runs", "run_experiment", "run_group", "run_identity", "run_sweep",
    "runs_table", "save_checkpoint", "software", "source_sha256", "write_results",
]
