"""Sweep checkpoints and bit-identical resume.

A checkpoint is one pickle-free `.npz` file holding the loop state of a sweep (`SweepState`)
after a compiled chunk: every `TrainState` leaf (params, BN statistics, optimizer state with its
injected hyperparameters, step, PRNG key data, divergence flag), the epoch, the training history,
the in-loop records and their epochs, the run layout, plus a JSON header (format version, the
run identity the state belongs to, the state's tree layout) and a SHA-256 of all of it. Files are
written atomically (`nc_jax.files`), so a kill at any moment leaves either the previous or the
new checkpoint on disk, never a torn one.

Saving is a hook of the sweep loop (`CheckpointHook`); resuming hands the stored `SweepState` to
`sweep.train_runs(start=...)`, which continues on the same chunk boundaries as an uninterrupted
run: the final results are bit-identical.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax.config import ConfigError, SweepConfig
from nc_jax.data import Dataset, make_dataset
from nc_jax.distributed import is_key as _is_key, is_main_process
from nc_jax.files import (CHECKPOINT_NAME, RUN_ARTIFACTS, OutDirError,  # noqa: F401
                          atomic_write_bytes, atomic_write_json, atomic_write_text,
                          prepare_out_dir)
from nc_jax.sweep import ChunkEvent, SweepResult, SweepState, init_states, resolve_run_arrays, \
    train_runs
from nc_jax.task import Task, make_task

FORMAT = "nc-jax-checkpoint"
FORMAT_VERSION = 1
#: SweepConfig fields that do not change any number of the results, so a resume may change them.
NON_RESULT_FIELDS = ("checkpoint_every",)

_META = "__meta__"
_CHECKSUM = "__sha256__"


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used: corrupt, truncated, of another format or another run."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint was written by a run whose configuration differs from the command's.

    `differences` lists (field, checkpoint value, command value)."""

    def __init__(self, message: str, differences: List[Tuple[str, Any, Any]]):
        super().__init__(message)
        self.differences = differences


# --------------------------------------------------------------------------------------------
# run identity and config comparison
# --------------------------------------------------------------------------------------------

def data_fingerprint(data: Dataset) -> dict:
    """Shape, dtype and SHA-256 of x and y: a resume against other data must be refused even when
    the DataConfig reads the same (e.g. an edited .npz file)."""
    out = {"num_classes": int(data.num_classes)}
    for name in ("x", "y"):
        a = np.ascontiguousarray(getattr(data, name))
        out[name] = {"shape": list(a.shape), "dtype": a.dtype.str,
                     "sha256": hashlib.sha256(a.tobytes()).hexdigest()}
    return out


def _callable_name(fn: Optional[Callable]) -> Optional[str]:
    if fn is None:
        return None
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def run_identity(cfg: SweepConfig, data: Dataset, *, weight_decays, seeds, learning_rates,
                 chunk_epochs: int, record_fn: Optional[Callable] = None,
                 task: Optional[Task] = None) -> dict:
    """Everything that determines the numbers of a sweep, as a JSON-able dict.

    The SweepConfig (minus fields that do not change results, like `checkpoint_every`), the
    resolved per-run arrays (they override cfg.weight_decays / cfg.seeds when passed explicitly),
    the data fingerprint, the compiled chunk length (the same boundaries make a resume
    bit-identical), the name of a custom record function (its records are in the snapshot) and
    the task's identity (model class and fields, loss, classifier rule), so a resume with
    another model or loss is refused.
    """
    cfg_d = cfg.to_dict()
    for f in NON_RESULT_FIELDS:
        cfg_d.pop(f, None)
    if not cfg_d.get("runs_per_device"):
        # automatic layout: the checkpoint header stores the layout it used and a resume keeps
        # it, so 0 is no constraint (and checkpoints older than the field stay readable)
        cfg_d.pop("runs_per_device", None)
    ident = {
        **cfg_d,
        "runs": {"weight_decay": [float(v) for v in np.asarray(weight_decays, np.float64)],
                 "seed": [int(v) for v in np.asarray(seeds, np.int64)],
                 "learning_rate": [float(v) for v in np.asarray(learning_rates, np.float64)],
                 "chunk_epochs": int(chunk_epochs),
                 "record_fn": _callable_name(record_fn)},
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


# --------------------------------------------------------------------------------------------
# checkpoint files
# --------------------------------------------------------------------------------------------

def _digest(meta_json: str, arrays: Dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    h.update(meta_json.encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"\0{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_checkpoint(path, snapshot: SweepState, config_dict: dict) -> None:
    """Atomically write a sweep's loop state to `path` (.npz, no pickle).

    `snapshot`: a `SweepState` (states with a leading run axis, host or device arrays, typed PRNG
    keys allowed). `config_dict` is the JSON-able identity of the run (`run_identity`) that
    `load_checkpoint` compares against.
    """
    leaves = jax.tree_util.tree_flatten_with_path(snapshot.states)[0]
    arrays: Dict[str, np.ndarray] = {}
    layout = []
    for i, (p, leaf) in enumerate(leaves):
        key = _is_key(leaf)
        a = np.asarray(jax.random.key_data(leaf) if key else leaf)
        arrays[f"state/{i:04d}"] = a
        layout.append({"path": jax.tree_util.keystr(p), "shape": list(np.shape(leaf)),
                       "dtype": a.dtype.str,
                       "key_impl": str(jax.random.key_impl(leaf)) if key else None,
                       "key_dtype": str(leaf.dtype) if key else None})
    for name, v in snapshot.history.items():
        arrays[f"history/{name}"] = np.asarray(v)
    for name, v in snapshot.records.items():
        arrays[f"records/{name}"] = np.asarray(v)
    arrays["record_epochs"] = np.asarray(snapshot.record_epochs, np.int64)
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "epoch": int(snapshot.epoch),
            "num_runs": int(layout[0]["shape"][0]) if layout else 0, "config": config_dict,
            "state_layout": layout, "history_keys": sorted(snapshot.history),
            "record_keys": sorted(snapshot.records),
            "runs_per_device": int(snapshot.runs_per_device)}
    meta_json = json.dumps(meta, sort_keys=True)
    payload = {**arrays, _META: np.asarray(meta_json),
               _CHECKSUM: np.asarray(_digest(meta_json, arrays))}
    buf = io.BytesIO()
    np.savez(buf, **payload)
    atomic_write_bytes(path, buf.getvalue())


def read_checkpoint(path) -> Tuple[dict, Dict[str, np.ndarray]]:
    """(header, arrays) of a checkpoint file after verifying its format and checksum.

    Raises CheckpointError naming the file when it is missing, truncated, corrupt (checksum or
    zip CRC mismatch) or of another format version."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            files = set(f.files)
            if _META not in files or _CHECKSUM not in files:
                raise CheckpointError(f"checkpoint {path} is not an nc-jax checkpoint "
                                      f"(no header or checksum; members: {sorted(files)[:8]})")
            arrays = {name: f[name] for name in files}
    except CheckpointError:
        raise
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint {path} does not exist") from e
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, KeyError) as e:
        # np.load raises any of these on a truncated zip, a torn member or a CRC failure
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated and cannot be read "
                              f"({type(e).__name__}: {e}); delete it to start afresh") from e
    meta_json = str(arrays.pop(_META))
    stored = str(arrays.pop(_CHECKSUM))
    if _digest(meta_json, arrays) != stored:
        raise CheckpointError(f"checkpoint {path} is corrupt: its SHA-256 checksum does not match "
                              f"its contents; delete it to start afresh")
    try:
        meta = json.loads(meta_json)
    except json.JSONDecodeError as e:  # only reachable if the checksum was forged as well
        raise CheckpointError(f"checkpoint {path} has an unreadable header: {e}") from e
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format {meta.get('format')!r} version "
                              f"{meta.get('version')!r}; this nc-jax reads {FORMAT!r} version "
                              f"{FORMAT_VERSION}")
    return meta, arrays


def load_checkpoint(path, template_states, config_dict: dict) -> SweepState:
    """Restore the `SweepState` written by `save_checkpoint` (states as device arrays).

    `template_states` is a TrainState pytree with the expected structure and leaf shapes/dtypes
    (arrays or `jax.ShapeDtypeStruct`s, e.g. `jax.eval_shape` of `sweep.init_states`).
    `config_dict` must equal the stored run identity; otherwise CheckpointMismatchError names the
    fields that differ. Any structural disagreement raises CheckpointError.
    """
    path = os.fspath(path)
    meta, arrays = read_checkpoint(path)
    check_config(path, meta["config"], config_dict)
    t_leaves, treedef = jax.tree_util.tree_flatten_with_path(template_states)
    layout = meta["state_layout"]
    t_paths = [jax.tree_util.keystr(p) for p, _ in t_leaves]
    c_paths = [e["path"] for e in layout]
    if t_paths != c_paths:
        missing = sorted(set(t_paths) - set(c_paths))[:5]
        extra = sorted(set(c_paths) - set(t_paths))[:5]
        raise CheckpointError(f"checkpoint {path}: the saved state has another structure than "
                              f"this model's (missing {missing}, unexpected {extra})")
    restored = []
    for i, ((p, t), entry) in enumerate(zip(t_leaves, layout)):
        a = arrays.get(f"state/{i:04d}")
        if a is None:
            raise CheckpointError(f"checkpoint {path}: state leaf {entry['path']} is missing")
        name = entry["path"]
        if tuple(entry["shape"]) != tuple(t.shape):
            raise CheckpointError(f"checkpoint {path}: {name} has shape {tuple(entry['shape'])}, "
                                  f"expected {tuple(t.shape)}")
        if _is_key(t):
            impl = entry.get("key_impl")
            if impl is None or entry.get("key_dtype") != str(t.dtype):
                raise CheckpointError(f"checkpoint {path}: {name} holds "
                                      f"{entry.get('key_dtype') or a.dtype}, expected {t.dtype}")
            try:
                leaf = jax.random.wrap_key_data(jnp.asarray(a), impl=impl)
            except Exception as e:  # wrong trailing key-data shape for the implementation
                raise CheckpointError(f"checkpoint {path}: {name} is not valid {impl} key data "
                                      f"(shape {a.shape})") from e
            if leaf.shape != tuple(t.shape):
                raise CheckpointError(f"checkpoint {path}: {name} key data has shape {a.shape}")
        else:
            if a.dtype != np.dtype(t.dtype) or a.shape != tuple(t.shape):
                raise CheckpointError(f"checkpoint {path}: {name} is {a.dtype}{list(a.shape)}, "
                                      f"expected {np.dtype(t.dtype)}{list(t.shape)}")
            leaf = jnp.asarray(a)
        restored.append(leaf)
    states = jax.tree_util.tree_unflatten(treedef, restored)
    k = int(meta["num_runs"])
    history = {n: arrays[f"history/{n}"] for n in meta["history_keys"]}
    records = {n: arrays[f"records/{n}"] for n in meta["record_keys"]}
    for name, a in [*history.items(), *records.items()]:
        if a.shape[0] != k:
            raise CheckpointError(f"checkpoint {path}: {name} has {a.shape[0]} runs, expected {k}")
    return SweepState(states, int(meta["epoch"]), history, records, arrays["record_epochs"],
                      int(meta.get("runs_per_device", 0)))


# --------------------------------------------------------------------------------------------
# resumable sweeps
# --------------------------------------------------------------------------------------------

class CheckpointHook:
    """A sweep hook saving the loop state to `path` every `every` epochs (0 = only at the end)
    and at the end; only process 0 writes. `on_checkpoint(epoch, path)` runs after each save."""

    def __init__(self, path, identity: dict, every: int,
                 on_checkpoint: Optional[Callable[[int, str], None]] = None):
        self.path, self.identity, self.every = os.fspath(path), identity, int(every)
        self.on_checkpoint = on_checkpoint

    def __call__(self, ev: ChunkEvent) -> None:
        if ev.epoch == ev.total_epochs or (self.every and ev.epoch % self.every == 0):
            snap = ev.snapshot()
            if is_main_process():
                save_checkpoint(self.path, snap, self.identity)
            if self.on_checkpoint is not None:
                self.on_checkpoint(ev.epoch, self.path)


def resumable_train_runs(task: Task, cfg: SweepConfig, data: Dataset, ckpt_path, *,
                         weight_decays=None, seeds=None, learning_rates=None,
                         record_every: Optional[int] = None, record_fn: Optional[Callable] = None,
                         epochs_per_call: int = 1, checkpoint_every: Optional[int] = None,
                         on_checkpoint: Optional[Callable[[int, str], None]] = None,
                         hooks=(), **kwargs) -> SweepResult:
    """`sweep.train_runs` that saves a checkpoint to `ckpt_path` every `checkpoint_every` epochs
    (default cfg.checkpoint_every; 0 = only at the end) and at the end, and resumes from
    `ckpt_path` when it exists. The result is bit-identical to an uninterrupted `train_runs`
    with the same arguments (wall/compile times aside).

    `checkpoint_every` must be a multiple of the compiled chunk (record_every if > 0, else
    epochs_per_call), so a resume continues on the same chunk boundaries. A checkpoint of another
    configuration, task (model, loss), per-run arrays, data or chunk length is refused with a
    CheckpointMismatchError naming the fields. `on_checkpoint(epoch, path)` runs after each save.
    """
    ckpt_path = os.fspath(ckpt_path)
    weight_decays, seeds, learning_rates = resolve_run_arrays(cfg, weight_decays, seeds,
                                                              learning_rates)
    record_every = cfg.record_every if record_every is None else record_every
    chunk = record_every if record_every else max(1, int(epochs_per_call))
    every = cfg.checkpoint_every if checkpoint_every is None else checkpoint_every
    if not isinstance(every, (int, np.integer)) or every < 0:
        raise ConfigError(f"checkpoint_every must be an integer >= 0, got {every!r}")
    if every and every % chunk:
        raise ConfigError(
            f"checkpoint_every ({every}) must be a multiple of the compiled chunk of {chunk} "
            f"epoch(s) ({'record_every' if record_every else 'epochs_per_call'}), so that a "
            f"resumed sweep keeps the chunk boundaries of an uninterrupted one")
    ident = run_identity(cfg, data, weight_decays=weight_decays, seeds=seeds,
                         learning_rates=learning_rates, chunk_epochs=chunk, record_fn=record_fn,
                         task=task)
    start = None
    if os.path.exists(ckpt_path):
        # eval_shape: the layout of k fresh states without computing (or compiling) them
        template = jax.eval_shape(lambda: init_states(task, seeds, learning_rates, weight_decays,
                                                      data.sample_shape))
        start = load_checkpoint(ckpt_path, template, ident)
        epoch = start.epoch
        if not (0 < epoch <= cfg.optim.epochs) or (epoch % chunk and epoch != cfg.optim.epochs):
            raise CheckpointError(f"checkpoint {ckpt_path} stops at epoch {epoch}, which is not a "
                                  f"chunk boundary of this run ({chunk} epochs per chunk, "
                                  f"{cfg.optim.epochs} epochs)")
    hook = CheckpointHook(ckpt_path, ident, every, on_checkpoint)
    return train_runs(task, cfg, data, weight_decays=weight_decays, seeds=seeds,
                      learning_rates=learning_rates, record_every=record_every,
                      record_fn=record_fn, epochs_per_call=epochs_per_call,
                      hooks=[*hooks, hook], start=start, **kwargs)


def checkpoint_epoch(path) -> Optional[int]:
    """The epoch a checkpoint file stops at, or None when there is none (verifies the file)."""
    if not os.path.exists(path):
        return None
    return int(read_checkpoint(path)[0]["epoch"])


def resumable_run_sweep(cfg: SweepConfig, out_dir, data: Optional[Dataset] = None, model=None,
                        loss=None, *, overwrite: bool = False, classifier=None, tx=None,
                        **kwargs) -> SweepResult:
    """`sweep.run_sweep` checkpointed to `<out_dir>/checkpoint.npz`: re-running the same call
    after a kill resumes there (see `resumable_train_runs`). `out_dir` is guarded by
    `prepare_out_dir(out_dir, overwrite, resume=True)`."""
    prepare_out_dir(out_dir, overwrite=overwrite, resume=True)
    if data is None:
        data = make_dataset(cfg.data)
    task = make_task(cfg, data, model=model, loss=loss, classifier=classifier, tx=tx)
    return resumable_train_runs(task, cfg, data, os.path.join(os.fspath(out_dir), CHECKPOINT_NAME),
                                **kwargs)
