"""Sweep checkpoints and bit-identical resume.

A checkpoint is one pickle-free `.npz` file holding the loop state of a sweep (`SweepState`)
after a compiled chunk: every `TrainState` leaf (params, BN statistics, optimizer state with its
injected hyperparameters, step, PRNG key data, divergence flag), the epoch, the training history,
the in-loop records and their epochs, the run layout, plus a JSON header (format version, the
run identity the state belongs to (`nc_jax.runs`), the software that wrote it
(`nc_jax.runs`), the state's tree layout) and a SHA-256 of all of it. Files are written
atomically (`nc_jax.runs`), so a kill at any moment leaves either the previous or the new
checkpoint on disk, never a torn one.

Saving is a hook of the sweep loop (`CheckpointHook`, which also saves when SIGTERM / SIGINT
stops the sweep, see `nc_jax.training`); resuming hands the stored `SweepState` to
`sweep.train_runs(start=...)`, which continues on the same chunk boundaries as an uninterrupted
run: the final results are bit-identical. An unfinished checkpoint is only continued by the same
software (`check_software`).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from typing import Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax.training import _preempt as preempt
from nc_jax.config import ConfigError, SweepConfig
from nc_jax.data._datasets import Dataset
from nc_jax.training._distributed import is_key as _is_key, is_main_process
from nc_jax._files import CheckpointError, ResourceError, atomic_write_bytes
from nc_jax.runs._identity import check_config, check_software, run_identity, upgrade_identity
from nc_jax.runs._provenance import software
from nc_jax.training import (ChunkEvent, RunOptions, SweepResult, SweepState, init_states,
                             resolve_run_arrays, sets_learning_rate, train_runs)
from nc_jax.training._task import Task

FORMAT = "nc-jax-checkpoint"
FORMAT_VERSION = 2
#: Versions this code reads: 1 keyed a run's identity on module paths, and is upgraded on read
#: (`upgrade_identity`); 2 keys it on registered names.
READABLE_VERSIONS = (1, 2)

_META = "__meta__"
_CHECKSUM = "__sha256__"


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


def save_checkpoint(path, snapshot: SweepState, config_dict: dict, *,
                    software_history: Optional[list] = None) -> None:
    """Atomically write a sweep's loop state to `path` (.npz, no pickle).

    `snapshot`: a `SweepState` (states with a leading run axis, host or device arrays, typed PRNG
    keys allowed). `config_dict` is the JSON-able identity of the run (`run_identity`) that
    `load_checkpoint` compares against. The header records this process' software
    (`nc_jax.runs.software`) and, in `software_history`, every distinct software that
    trained part of the run (a resume allowed across versions appends to it).
    A full disk, the file-size limit or a lack of memory is a `ResourceError`; the previous
    checkpoint at `path`, if any, is then intact.
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
            "runs_per_device": int(snapshot.runs_per_device),
            "software": software(), "software_history": _history(software_history)}
    meta_json = json.dumps(meta, sort_keys=True)
    payload = {**arrays, _META: np.asarray(meta_json),
               _CHECKSUM: np.asarray(_digest(meta_json, arrays))}
    buf = io.BytesIO()
    try:
        np.savez(buf, **payload)
        data = buf.getvalue()
    except MemoryError:
        # the archive is built in memory before the atomic write: the file on disk is untouched
        raise ResourceError("out of memory", path) from None
    atomic_write_bytes(path, data)


def _history(previous: Optional[list]) -> list:
    history = list(previous or [])
    if not history or history[-1] != software():
        history.append(software())
    return history


def _open_error(path: str, e: OSError) -> Optional[CheckpointError]:
    """The error for a file that cannot be opened: not its content's fault, so never "delete
    it" (that advice would destroy a valid checkpoint)."""
    if isinstance(e, FileNotFoundError):
        return CheckpointError(f"checkpoint {path} does not exist")
    if isinstance(e, PermissionError):
        return CheckpointError(f"checkpoint {path} cannot be read: permission denied. It may well "
                               f"be valid: fix its permissions (or run as its owner), do not "
                               f"delete it")
    if isinstance(e, IsADirectoryError):
        return CheckpointError(f"checkpoint {path} is a directory, not a checkpoint file; move "
                               f"it away")
    if e.errno is not None:
        return CheckpointError(f"checkpoint {path} cannot be read ({e.strerror}); check the disk "
                               f"or file system; the file itself may be valid")
    return None


def read_checkpoint(path) -> Tuple[dict, Dict[str, np.ndarray]]:
    """(header, arrays) of a checkpoint file after verifying its format and checksum.

    Raises CheckpointError naming the file when it is missing or unreadable (permissions: the
    message says so and does not advise deleting it), not an .npz, truncated, corrupt (checksum
    or zip CRC mismatch) or of another format version."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as e:
        raise _open_error(path, e) or CheckpointError(f"checkpoint {path} cannot be read "
                                                      f"({e})") from e
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise CheckpointError(f"checkpoint {path} is not an nc-jax checkpoint (a single .npy "
                                  f"array, not an .npz archive); move it away or choose another "
                                  f"--out")
        with loaded as f:
            files = set(f.files)
            if _META not in files or _CHECKSUM not in files:
                raise CheckpointError(f"checkpoint {path} is not an nc-jax checkpoint "
                                      f"(no header or checksum; members: {sorted(files)[:8]})")
            arrays = {name: f[name] for name in files}
    except CheckpointError:
        raise
    except OSError as e:
        err = _open_error(path, e)
        if err is not None:
            raise err from e
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated and cannot be read "
                              f"({type(e).__name__}: {e}); delete it to start afresh") from e
    except Exception as e:  # noqa: BLE001
        # whatever a damaged zip makes np.load / zipfile raise: BadZipFile, ValueError, EOFError,
        # KeyError, NotImplementedError (a flipped compression method), RuntimeError ("encrypted"
        # flag), zlib.error, struct.error, MemoryError (a flipped size), ...
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
    if meta.get("format") != FORMAT or meta.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(f"checkpoint {path} has format {meta.get('format')!r} version "
                              f"{meta.get('version')!r}; this nc-jax reads {FORMAT!r} versions "
                              f"{list(READABLE_VERSIONS)}")
    meta["config"] = upgrade_identity(meta.get("config") or {}, int(meta["version"]))
    return meta, arrays


def load_checkpoint(path, template_states, config_dict: dict) -> SweepState:
    """Restore the `SweepState` written by `save_checkpoint` (states as device arrays).

    `template_states` is a TrainState pytree with the expected structure and leaf shapes/dtypes
    (arrays or `jax.ShapeDtypeStruct`s, e.g. `jax.eval_shape` of `sweep.init_states`).
    `config_dict` must equal the stored run identity; otherwise CheckpointMismatchError names the
    fields that differ. Any structural disagreement raises CheckpointError.
    """
    return _restore(path, template_states, config_dict)[0]



def _restore(path, template_states, config_dict: dict) -> Tuple[SweepState, dict]:
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
                      int(meta.get("runs_per_device", 0))), meta


# --------------------------------------------------------------------------------------------
# resumable sweeps
# --------------------------------------------------------------------------------------------

class CheckpointHook:
    """A sweep hook saving the loop state to `path` every `every` epochs (0 = only at the end),
    at the end (unless `final` is False) and when a signal stops the sweep (`on_preempt`, see
    `nc_jax.training`); only process 0 writes. `on_checkpoint(epoch, path)` runs after each save.
    `software_history`: that of the checkpoint the sweep resumed from."""

    def __init__(self, path, identity: dict, every: int,
                 on_checkpoint: Optional[Callable[[int, str], None]] = None, *,
                 final: bool = True, software_history: Optional[list] = None):
        self.path, self.identity, self.every = os.fspath(path), identity, int(every)
        self.on_checkpoint, self.final = on_checkpoint, final
        self.software_history = software_history
        self.saved_epoch: Optional[int] = None

    def __call__(self, ev: ChunkEvent) -> None:
        end = ev.epoch == ev.total_epochs and (self.final or preempt.pending() is not None)
        if end or (self.every and ev.epoch % self.every == 0):
            self._save(ev)

    def on_preempt(self, ev: ChunkEvent) -> None:
        if self.saved_epoch != ev.epoch:
            self._save(ev)

    def _save(self, ev: ChunkEvent) -> None:
        snap = ev.snapshot()
        if is_main_process():
            save_checkpoint(self.path, snap, self.identity,
                            software_history=self.software_history)
        self.saved_epoch = ev.epoch
        if self.on_checkpoint is not None:
            self.on_checkpoint(ev.epoch, self.path)


def resumable_train_runs(task: Task, cfg: SweepConfig, data: Dataset, ckpt_path,
                         options: Optional[RunOptions] = None, *,
                         checkpoint_every: Optional[int] = None,
                         on_checkpoint: Optional[Callable[[int, str], None]] = None,
                         final_checkpoint: bool = True, allow_version_change: bool = False,
                         **overrides) -> SweepResult:
    """`train_runs` that saves a checkpoint to `ckpt_path` every `checkpoint_every` epochs
    (default cfg.checkpoint_every; 0 = only at the end) and at the end, and resumes from
    `ckpt_path` when it exists. The result is bit-identical to an uninterrupted `train_runs`
    with the same options (wall/compile times aside).

    `checkpoint_every` must be a multiple of the compiled chunk (record_every if > 0, else
    epochs_per_call), so a resume continues on the same chunk boundaries. A checkpoint of another
    configuration, task (model, loss), per-run arrays, data or chunk length is refused with a
    CheckpointMismatchError naming the fields. An unfinished checkpoint written by other
    software is refused (CheckpointVersionError, see `check_software`) unless
    `allow_version_change`. `final_checkpoint=False` with `checkpoint_every` 0 saves only when a
    signal stops the sweep (`PreemptionGuard`), and at the end of a sweep that resumed from such
    a checkpoint. `on_checkpoint(epoch, path)` runs after each save.
    """
    o = RunOptions.of(options, **overrides)
    ckpt_path = os.fspath(ckpt_path)
    weight_decays, seeds, learning_rates = resolve_run_arrays(cfg, o.weight_decays, o.seeds,
                                                              o.learning_rates)
    record_every = cfg.record_every if o.record_every is None else o.record_every
    chunk = record_every if record_every else max(1, int(o.epochs_per_call))
    every = cfg.checkpoint_every if checkpoint_every is None else checkpoint_every
    if not isinstance(every, (int, np.integer)) or every < 0:
        raise ConfigError(f"checkpoint_every must be an integer >= 0, got {every!r}")
    if every and every % chunk:
        raise ConfigError(
            f"checkpoint_every ({every}) must be a multiple of the compiled chunk of {chunk} "
            f"epoch(s) ({'record_every' if record_every else 'epochs_per_call'}), so that a "
            f"resumed sweep keeps the chunk boundaries of an uninterrupted one")
    ident = run_identity(cfg, data, weight_decays=weight_decays, seeds=seeds,
                         learning_rates=learning_rates, chunk_epochs=chunk,
                         record_fn=o.record_fn,
                         task=task)
    start, history = None, None
    if os.path.exists(ckpt_path):
        # eval_shape: the layout of k fresh states without computing (or compiling) them
        set_lr = sets_learning_rate(task, o.learning_rates is not None)
        template = jax.eval_shape(lambda: init_states(task, seeds, learning_rates, weight_decays,
                                                      data.sample_shape, set_lr))
        start, meta = _restore(ckpt_path, template, ident)
        epoch = start.epoch
        if not (0 < epoch <= cfg.optim.epochs) or (epoch % chunk and epoch != cfg.optim.epochs):
            raise CheckpointError(f"checkpoint {ckpt_path} stops at epoch {epoch}, which is not a "
                                  f"chunk boundary of this run ({chunk} epochs per chunk, "
                                  f"{cfg.optim.epochs} epochs)")
        if epoch < cfg.optim.epochs:  # a finished checkpoint is only restored: nothing mixes
            check_software(ckpt_path, meta, allow_version_change=allow_version_change)
        history = meta.get("software_history") or [meta.get("software")]
    hook = CheckpointHook(ckpt_path, ident, every, on_checkpoint,
                          final=final_checkpoint or start is not None, software_history=history)
    return train_runs(task, cfg, data, o, hooks=[*o.hooks, hook], start=start)


def checkpoint_epoch(path) -> Optional[int]:
    """The epoch a checkpoint file stops at, or None when there is none (verifies the file)."""
    if not os.path.exists(path):
        return None
    return int(read_checkpoint(path)[0]["epoch"])
