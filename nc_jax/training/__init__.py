"""Training: a `Task` (model + classifier rule + loss + optimizer of one run), the optimizer
(SGD / Adam / AdamW, schedules, weight decay in the optax chain, per-group decay), the train step
and epoch (`lax.scan`), and the loop that trains a grid of runs as one vmapped program over all
local devices.

Write it for one run, vmap it for many: `train_epoch` and `evaluate` take one run's
`TrainState`; `train_runs` adds the run axis.
"""
from nc_jax.training._distributed import is_key, is_main_process, putter, to_host
from nc_jax.training._hooks import ChunkEvent, ProgressHook
from nc_jax.training._layout import RUN_AXIS, RunLayout, map_runs, run_layout
from nc_jax.training._loop import (check_run_arrays, default_record_fn, init_fn, init_states,
                                   make_chunk_fn, resolve_run_arrays, run_grid,
                                   sets_learning_rate, train_runs)
from nc_jax.training._optim import (add_group_decayed_weights, decay_mask_fn, lr_factor,
                                    make_optimizer, named_optimizer, set_hyperparams,
                                    step_schedule, steps_per_epoch)
from nc_jax.training._preempt import (SIGNALS, Preempted, PreemptionGuard, pending,
                                      raise_if_pending)
from nc_jax.training._result import RunOptions, SweepResult, SweepState
from nc_jax.training._step import (TrainState, evaluate, forward, init_state, loss_accuracy,
                                   train_epoch, train_step)
from nc_jax.training._task import Task, data_and_task, make_task, model_identity
from nc_jax.training._tx import custom_tx, grid_weight_decay, param_groups

__all__ = [
    "ChunkEvent", "Preempted", "PreemptionGuard", "ProgressHook", "RUN_AXIS", "RunLayout",
    "RunOptions", "SIGNALS", "SweepResult", "SweepState", "Task", "TrainState",
    "add_group_decayed_weights", "check_run_arrays", "custom_tx", "data_and_task",
    "decay_mask_fn", "default_record_fn", "evaluate", "forward", "grid_weight_decay", "init_fn",
    "init_state", "init_states", "is_key", "is_main_process", "loss_accuracy", "lr_factor",
    "make_chunk_fn", "make_optimizer", "make_task", "map_runs", "model_identity",
    "named_optimizer", "param_groups", "pending", "putter", "raise_if_pending",
    "resolve_run_arrays", "run_grid", "run_layout", "set_hyperparams", "sets_learning_rate",
    "step_schedule", "steps_per_epoch", "to_host", "train_epoch",
    "train_runs", "train_step",
]
