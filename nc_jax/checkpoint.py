"""Atomic result files, sweep checkpoints and bit-identical resume.

A checkpoint is one pickle-free `.npz` file holding the whole host-side snapshot of a sweep after
a compiled chunk: every `TrainState` leaf (params, BN statistics, optimizer state with its
injected hyperparameters, step, PRNG key data, divergence flag), the epoch, the training history,
the in-loop records and their epochs, plus a JSON header (format version, the run identity the
snapshot belongs to, the state's tree layout) and a SHA-256 of all of it. Files are written to a
temporary file in the same directory, fsynced and renamed over the old one, so a kill at any
moment leaves either the previous or the new checkpoint on disk, never a torn one.

Resuming restores the snapshot and hands it to `sweep.train_runs(start=...)`, which continues on
the same chunk boundaries as an uninterrupted run: the final results are bit-identical.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import zipfile
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax.config import ConfigError, SweepConfig
from nc_jax.data import Dataset, make_dataset
from nc_jax.models import MLP
from nc_jax.optim import make_optimizer
from nc_jax import sweep as _sweep
from nc_jax.sweep import SweepResult, init_states, resolve_run_arrays, train_runs
from nc_jax.train import steps_per_epoch

FORMAT = "nc-jax-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.npz"
#: Files a run writes into its output directory; `prepare_out_dir(overwrite=True)` removes them
#: so that a fresh run never sits next to a stale result of the previous one.
RUN_ARTIFACTS = (CHECKPOINT_NAME, "results.json", "results.csv")
#: SweepConfig fields that do not change any number of the results, so a resume may change them.
NON_RESULT_FIELDS = ("checkpoint_every",)

_META = "__meta__"
_CHECKSUM = "__sha256__"
_TMP_SUFFIX = ".tmp"


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used: corrupt, truncated, of another format or another run."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint was written by a run whose configuration differs from the command's.

    `differences` lists (field, checkpoint value, command value)."""

    def __init__(self, message: str, differences: List[Tuple[str, Any, Any]]):
        super().__init__(message)
        self.differences = differences


class OutDirError(RuntimeError):
    """The output directory holds results that this run must not overwrite."""


# --------------------------------------------------------------------------------------------
# atomic files
# --------------------------------------------------------------------------------------------

def _current_umask() -> int:
    # mkstemp creates 0600 files; results should get the permissions a plain open() would give.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _fsync_dir(directory: str) -> None:
    # The rename itself must reach the disk too, or a power cut can resurrect the old file.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write `data` to `path` so that readers (and a crash) see the old or the new file, never a
    partial one: temp file in the same directory (same file system, so the rename is atomic),
    flush + fsync, `os.replace`, fsync of the directory. The parent directory must exist."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=_TMP_SUFFIX,
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> None:
    """`atomic_write_bytes` of `text` encoded with `encoding`."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path, obj: Any, *, indent: Optional[int] = 1, **dump_kwargs) -> None:
    """`atomic_write_text` of `json.dumps(obj, indent=indent, **dump_kwargs)` plus a newline."""
    atomic_write_text(path, json.dumps(obj, indent=indent, **dump_kwargs) + "\n")


def _is_stale_temp(name: str) -> bool:
    """Temp files of `atomic_write_bytes` that a killed process left behind."""
    return name.startswith(".") and name.endswith(_TMP_SUFFIX)


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
                 chunk_epochs: int, record_fn: Optional[Callable] = None) -> dict:
    """Everything that determines the numbers of a sweep, as a JSON-able dict.

    The SweepConfig (minus fields that do not change results, like `checkpoint_every`), the
    resolved per-run arrays (they override cfg.weight_decays / cfg.seeds when passed explicitly),
    the data fingerprint, the compiled chunk length (the same boundaries make a resume
    bit-identical) and the name of a custom record function (its records are in the snapshot).
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
        "runs": {"weight_decay": [float(v) for v in np.asarray(weight_decays, np.float32)],
                 "seed": [int(v) for v in np.asarray(seeds, np.int64)],
                 "learning_rate": [float(v) for v in np.asarray(learning_rates, np.float32)],
                 "chunk_epochs": int(chunk_epochs),
                 "record_fn": _callable_name(record_fn)},
        "data_fingerprint": data_fingerprint(data),
    }
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

def _is_key(x) -> bool:
    return jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _digest(meta_json: str, arrays: Dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    h.update(meta_json.encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"\0{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_checkpoint(path, snapshot: dict, config_dict: dict) -> None:
    """Atomically write a sweep snapshot to `path` (.npz, no pickle).

    `snapshot`: {"states": TrainState with a leading run axis (host or device arrays; typed PRNG
    keys allowed), "epoch": int, "history": {name: (K, E)}, "records": {name: (K, R, ...)},
    "record_epochs": (R,), optional "runs_per_device": the run layout that wrote it}. `config_dict` is the JSON-able identity of the run (`run_identity`)
    that `load_checkpoint` compares against.
    """
    leaves = jax.tree_util.tree_flatten_with_path(snapshot["states"])[0]
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
    for name, v in snapshot["history"].items():
        arrays[f"history/{name}"] = np.asarray(v)
    for name, v in snapshot["records"].items():
        arrays[f"records/{name}"] = np.asarray(v)
    arrays["record_epochs"] = np.asarray(snapshot["record_epochs"], np.int64)
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "epoch": int(snapshot["epoch"]),
            "num_runs": int(layout[0]["shape"][0]) if layout else 0, "config": config_dict,
            "state_layout": layout, "history_keys": sorted(snapshot["history"]),
            "record_keys": sorted(snapshot["records"]),
            "runs_per_device": int(snapshot.get("runs_per_device", 0))}
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


def load_checkpoint(path, template_states, config_dict: dict) -> dict:
    """Restore a snapshot written by `save_checkpoint` (the same dict, states as device arrays).

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
    return {"states": states, "epoch": int(meta["epoch"]), "history": history,
            "records": records, "record_epochs": arrays["record_epochs"],
            "runs_per_device": int(meta.get("runs_per_device", 0))}


# --------------------------------------------------------------------------------------------
# resumable sweeps
# --------------------------------------------------------------------------------------------

def _snapshot_from_parts(epoch, states, hist_parts, rec_parts, rec_epochs, k: int) -> dict:
    """train_runs' chunk_callback arguments -> a snapshot of the first k (non-padding) runs.

    Slicing copies the states; the snapshot must be written before the next chunk anyway, since
    that chunk donates (reuses) the state buffers."""
    host = jax.tree.map(lambda a: a[:k], states)
    history = ({n: np.concatenate([np.asarray(h[n]) for h in hist_parts], axis=1)[:k]
                for n in hist_parts[0]} if hist_parts else {})
    records = ({n: np.stack([np.asarray(r[n]) for r in rec_parts], axis=1)[:k]
                for n in rec_parts[0]} if rec_parts else {})
    return {"states": host, "epoch": int(epoch), "history": history, "records": records,
            "record_epochs": np.asarray(rec_epochs, np.int64)}


def _pad_runs(a, padded: int):
    """Repeat the last run up to `padded` runs: train_runs pads the grid with copies of the last
    run (same seed, LR and WD), so the copies are exactly what an uninterrupted run holds."""
    k = a.shape[0]
    if padded == k:
        return a
    xp = jnp if isinstance(a, jax.Array) else np
    return xp.concatenate([a, xp.repeat(a[-1:], padded - k, axis=0)], axis=0)


def _start_from_snapshot(snap: dict, padded: int) -> dict:
    """A snapshot (k runs) -> train_runs' `start` (padded runs, history/record parts)."""
    states = jax.tree.map(lambda a: _pad_runs(a, padded), snap["states"])
    history = [{n: _pad_runs(v, padded) for n, v in snap["history"].items()}] \
        if snap["history"] else []
    r = len(snap["record_epochs"])
    records = [{n: _pad_runs(v[:, j], padded) for n, v in snap["records"].items()}
               for j in range(r)]
    return {"states": states, "epoch": snap["epoch"], "history": history, "records": records,
            "record_epochs": [int(e) for e in snap["record_epochs"]]}


def resumable_train_runs(model: MLP, cfg: SweepConfig, data: Dataset, ckpt_path, *,
                         weight_decays=None, seeds=None, learning_rates=None,
                         record_every: Optional[int] = None, record_fn: Optional[Callable] = None,
                         epochs_per_call: int = 1, checkpoint_every: Optional[int] = None,
                         chunk_callback: Optional[Callable] = None,
                         on_checkpoint: Optional[Callable[[int, str], None]] = None,
                         **kwargs) -> SweepResult:
    """`sweep.train_runs` that saves a checkpoint to `ckpt_path` every `checkpoint_every` epochs
    (default cfg.checkpoint_every; 0 = only at the end) and at the end, and resumes from
    `ckpt_path` when it exists. The result is bit-identical to an uninterrupted `train_runs`
    with the same arguments (wall/compile times aside).

    `checkpoint_every` must be a multiple of the compiled chunk (record_every if > 0, else
    epochs_per_call), so a resume continues on the same chunk boundaries. A checkpoint of another
    configuration, other per-run arrays, other data or another chunk length is refused with a
    CheckpointMismatchError naming the fields. `on_checkpoint(epoch, path)` runs after each save.
    """
    ckpt_path = os.fspath(ckpt_path)
    weight_decays, seeds, learning_rates = resolve_run_arrays(cfg, weight_decays, seeds,
                                                              learning_rates)
    k = len(weight_decays)
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
                         learning_rates=learning_rates, chunk_epochs=chunk, record_fn=record_fn)

    rpd = kwargs.pop("runs_per_device", None)
    rpd = cfg.runs_per_device if rpd is None else rpd
    snap = None
    if os.path.exists(ckpt_path):
        tx = make_optimizer(cfg.optim, steps_per_epoch(data.n, cfg.optim.batch_size))
        # eval_shape: the layout of k fresh states without computing (or compiling) them
        template = jax.eval_shape(lambda: init_states(model, tx, seeds, learning_rates,
                                                      weight_decays, data.dim))
        snap = load_checkpoint(ckpt_path, template, ident)
        epoch = snap["epoch"]
        if not (0 < epoch <= cfg.optim.epochs) or (epoch % chunk and epoch != cfg.optim.epochs):
            raise CheckpointError(f"checkpoint {ckpt_path} stops at epoch {epoch}, which is not a "
                                  f"chunk boundary of this run ({chunk} epochs per chunk, "
                                  f"{cfg.optim.epochs} epochs)")
        if not rpd:
            # the automatic layout depends on the device count: keep the one that wrote the
            # checkpoint, so a resume on another number of devices stays bit-identical
            rpd = snap["runs_per_device"]

    total = cfg.optim.epochs
    layout, _ = _sweep.run_layout(k, kwargs.get("devices"), rpd)
    start = None if snap is None else _start_from_snapshot(snap, layout.padded)

    def save(epoch, states, hist_parts, rec_parts, rec_epochs):
        if epoch == total or (every and epoch % every == 0):
            snap = _snapshot_from_parts(epoch, states, hist_parts, rec_parts, rec_epochs, k)
            snap["runs_per_device"] = layout.runs_per_device
            save_checkpoint(ckpt_path, snap, ident)
            if on_checkpoint is not None:
                on_checkpoint(epoch, ckpt_path)
        if chunk_callback is not None:
            chunk_callback(epoch, states, hist_parts, rec_parts, rec_epochs)

    return train_runs(model, cfg, data, weight_decays=weight_decays, seeds=seeds,
                      learning_rates=learning_rates, record_every=record_every,
                      record_fn=record_fn, epochs_per_call=epochs_per_call,
                      chunk_callback=save, start=start, runs_per_device=layout.runs_per_device,
                      **kwargs)


def checkpoint_epoch(path) -> Optional[int]:
    """The epoch a checkpoint file stops at, or None when there is none (verifies the file)."""
    if not os.path.exists(path):
        return None
    return int(read_checkpoint(path)[0]["epoch"])


def prepare_out_dir(path, overwrite: bool = False, resume: bool = True, *,
                    checkpoint_name: str = CHECKPOINT_NAME,
                    artifacts: Sequence[str] = RUN_ARTIFACTS,
                    config_dict: Optional[dict] = None) -> str:
    """Make `path` ready for a run and say how: "new", "resume" or "overwrite".

    - missing or empty directory: created, "new";
    - holds `checkpoint_name` and `resume`: "resume" (with `config_dict`, the checkpoint's run
      identity is checked now, so a mismatch fails before any work);
    - holds anything else (another run's results): OutDirError, unless `overwrite`, which deletes
      the run artifacts (`artifacts`: checkpoint, results.json/csv) so the new run starts afresh
      and no stale result survives next to it; other files are left alone.
    Temp files of atomic writes that a killed process left behind are removed in every case.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutDirError(f"output path {path} exists and is not a directory")
    os.makedirs(path, exist_ok=True)
    entries = []
    for name in sorted(os.listdir(path)):
        if _is_stale_temp(name) and any(name.startswith(f".{a}.") for a in artifacts):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(path, name))
        else:
            entries.append(name)
    if not entries:
        return "new"
    if overwrite:
        for name in artifacts:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(path, name))
        return "overwrite"
    ckpt = os.path.join(path, checkpoint_name)
    if resume and os.path.exists(ckpt):
        if config_dict is not None:
            check_config(ckpt, read_checkpoint(ckpt)[0]["config"], config_dict)
        return "resume"
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    what = "a checkpoint" if os.path.exists(ckpt) else "results of another run"
    raise OutDirError(f"output directory {path} already holds {what} ({shown}); pass --overwrite "
                      f"(overwrite=True) to replace them, or choose another directory")


def resumable_run_sweep(cfg: SweepConfig, out_dir, data: Optional[Dataset] = None, *,
                        overwrite: bool = False, **kwargs) -> SweepResult:
    """`sweep.run_sweep` checkpointed to `<out_dir>/checkpoint.npz`: re-running the same call
    after a kill resumes there (see `resumable_train_runs`). `out_dir` is guarded by
    `prepare_out_dir(out_dir, overwrite, resume=True)`."""
    prepare_out_dir(out_dir, overwrite=overwrite, resume=True)
    if data is None:
        data = make_dataset(cfg.data)
    model = MLP(depth=cfg.model.depth, width=cfg.model.width, num_classes=data.num_classes,
                bn=cfg.model.bn)
    return resumable_train_runs(model, cfg, data, os.path.join(os.fspath(out_dir), CHECKPOINT_NAME),
                                **kwargs)
