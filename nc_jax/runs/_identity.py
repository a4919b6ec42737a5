"""What a checkpoint belongs to, and the refusal to resume one that belongs to something else:
the run identity (configuration, per-run arrays, data fingerprint, chunk length, task) and the
software that wrote it (`nc_jax.runs`)."""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from nc_jax.runs import _provenance as provenance
from nc_jax.config import SweepConfig, canonical_dict
from nc_jax.data._datasets import Dataset
from nc_jax._files import CheckpointError
from nc_jax._naming import callable_name
from nc_jax.training._task import Task

#: SweepConfig fields that do not change any number of the results, so a resume may change them.
#: data.path: the data fingerprint (SHA-256 of x and y) compares the data itself, so the same
#: file named by a relative or an absolute path, or moved, is the same run.
NON_RESULT_FIELDS = ("checkpoint_every", "data.path")


class CheckpointVersionError(CheckpointError):
    """The checkpoint was written by other software (nc-jax source, JAX, ...) and its training
    is not finished: continuing it would mix versions. `differences`: (field, stored, current)."""

    def __init__(self, message: str, differences: List[Tuple[str, Any, Any]]):
        super().__init__(message)
        self.differences = differences


class CheckpointMismatchError(CheckpointError):
    """The checkpoint was written by a run whose configuration differs from the command's.

    `differences` lists (field, checkpoint value, command value)."""

    def __init__(self, message: str, differences: List[Tuple[str, Any, Any]]):
        super().__init__(message)
        self.differences = differences


def data_fingerprint(data: Dataset) -> dict:
    """Shape, dtype and SHA-256 of x and y: a resume against other data must be refused even when
    the DataConfig reads the same (e.g. an edited .npz file)."""
    out = {"num_classes": int(data.num_classes)}
    for name in ("x", "y"):
        a = np.ascontiguousarray(getattr(data, name))
        out[name] = {"shape": list(a.shape), "dtype": a.dtype.str,
                     "sha256": hashlib.sha256(a.tobytes()).hexdigest()}
    return out


def run_identity(cfg: SweepConfig, data: Dataset, *, weight_decays, seeds, learning_rates,
                 chunk_epochs: int, record_fn: Optional[Callable] = None,
                 task: Optional[Task] = None) -> dict:
    """Everything that determines the numbers of a sweep, as a JSON-able dict.

    The SweepConfig (minus fields that do not change results, like `checkpoint_every`), the
    resolved per-run arrays (they override cfg.weight_decays / cfg.seeds when passed explicitly),
    the data fingerprint, the compiled chunk length (the same boundaries make a resume
    bit-identical), the name of the record function (its records are in the snapshot) and the
    task's identity (model name and fields, loss, classifier rule), so a resume with another
    model or loss is refused. Functions and models nc-jax provides are named by their registered
    names (`callable_name`), never by module paths, so moving code keeps checkpoints valid.
    """
    # fields added after checkpoints were first written are left out at their implicit value
    # (automatic layout, all runs vmapped, no hold-out, SGD with step decays, one weight decay
    # per run), so older checkpoints keep matching; the header stores the layout a run used
    cfg_d = canonical_dict(cfg.to_dict())
    cfg_d.pop("checkpoint_every", None)
    wd = np.asarray(weight_decays, np.float64)
    ident = {
        **cfg_d,
        "runs": {"weight_decay": wd.tolist(),
                 "seed": [int(v) for v in np.asarray(seeds, np.int64)],
                 "learning_rate": [float(v) for v in np.asarray(learning_rates, np.float64)],
                 "chunk_epochs": int(chunk_epochs),
                 "record_fn": callable_name(record_fn)},
        "data_fingerprint": data_fingerprint(data),
    }
    if task is not None:
        ident["task"] = task.identity()
    # JSON round trip: tuples become lists, so a stored and a fresh identity compare equal.
    return json.loads(json.dumps(ident))


def _flatten(d: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(d, dict):
        out: Dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


_ABSENT = "<absent>"


def config_differences(stored: dict, current: dict) -> List[Tuple[str, Any, Any]]:
    """(dotted field, stored value, current value) for every field that differs."""
    a = _flatten(json.loads(json.dumps(stored)))
    b = _flatten(json.loads(json.dumps(current)))
    for f in NON_RESULT_FIELDS:  # older checkpoints stored some of them
        a.pop(f, None)
        b.pop(f, None)
    return [(k, a.get(k, _ABSENT), b.get(k, _ABSENT))
            for k in sorted(set(a) | set(b)) if a.get(k, _ABSENT) != b.get(k, _ABSENT)]


def _short(v: Any, limit: int = 80) -> str:
    s = json.dumps(v) if not isinstance(v, str) else v
    return s if len(s) <= limit else s[:limit - 3] + "..."


def check_config(path, stored: dict, current: dict) -> None:
    """Raise CheckpointMismatchError naming every differing field (values shortened)."""
    diffs = config_differences(stored, current)
    if diffs:
        lines = "\n".join(f"  {k}: checkpoint {_short(a)}, command {_short(b)}"
                          for k, a, b in diffs)
        raise CheckpointMismatchError(
            f"checkpoint {os.fspath(path)} belongs to a different configuration and cannot be "
            f"resumed ({len(diffs)} field(s) differ):\n{lines}\n"
            f"Delete it, write to another output directory, or pass --overwrite to start afresh.",
            diffs)


def check_software(path, meta: dict, *, allow_version_change: bool = False) -> Optional[str]:
    """Refuse (CheckpointVersionError) to continue training a checkpoint written by other
    software (`nc_jax.runs.COMPARED`), or by an nc-jax that recorded none. With
    `allow_version_change` the difference is returned as a message instead; None: same software."""
    stored, current = meta.get("software"), provenance.software()
    diffs = (provenance.differences(stored, current) if stored else
             [("software", None, provenance.describe(current))])
    if not diffs:
        return None
    what = ("records no software versions (it was written before nc-jax recorded them)"
            if not stored else "was written by other software:\n" + "\n".join(
                f"  {k}: checkpoint {_short(a)}, now {_short(b)}" for k, a, b in diffs))
    msg = (f"checkpoint {os.fspath(path)} {what}\nContinuing its training with "
           f"{provenance.describe(current)} would mix versions in one run's numbers.")
    if allow_version_change:
        return msg
    raise CheckpointVersionError(
        f"{msg}\nPass --allow-version-change (allow_version_change=True) to continue anyway (the "
        f"checkpoint then lists both in its software_history), --overwrite to start afresh, or "
        f"use the code that wrote it.", diffs)


#: How format-1 checkpoints named nc-jax's own functions (module paths) -> their registered names.
_V1_NAMES = {
    "nc_jax.models.head_classifier": "head",
    "nc_jax.reporting.record_fn.<locals>.record": "record:collapse",
    "nc_jax.sweep.default_record_fn.<locals>.record": "loss_accuracy",
}


def upgrade_identity(ident: dict, version: int) -> dict:
    """A run identity stored by checkpoint format `version`, in today's form (format 2).

    Format 1 named nc-jax's models, classifier rule and record functions by module path; format
    2 keys them on registered names, so the paths are replaced by the names (and a built-in
    model's class path dropped). User code keeps its `module.qualname` in both formats."""
    if version >= 2:
        return ident
    ident = json.loads(json.dumps(ident))
    task = ident.get("task")
    if isinstance(task, dict):
        model = task.get("model")
        if isinstance(model, dict) and str(model.get("class", "")).startswith("nc_jax."):
            model.pop("class")
        if task.get("classifier") in _V1_NAMES:
            task["classifier"] = _V1_NAMES[task["classifier"]]
    runs = ident.get("runs")
    if isinstance(runs, dict) and runs.get("record_fn") in _V1_NAMES:
        runs["record_fn"] = _V1_NAMES[runs["record_fn"]]
    return ident
