"""Files a run writes: atomic writes (a kill leaves the old or the new file, never a torn one)
and the guard of an output directory (never overwrite another run's results silently)."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any, Optional, Sequence

#: What a run writes into its output directory (the checkpoint is `checkpoint.npz`);
#: `prepare_out_dir(overwrite=True)` removes them so that a fresh run never sits next to a stale
#: result of the previous one.
CHECKPOINT_NAME = "checkpoint.npz"
RUN_ARTIFACTS = (CHECKPOINT_NAME, "results.json", "results.csv")
_TMP_SUFFIX = ".tmp"


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
            from nc_jax.checkpoint import check_config, read_checkpoint
            check_config(ckpt, read_checkpoint(ckpt)[0]["config"], config_dict)
        return "resume"
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    what = "a checkpoint" if os.path.exists(ckpt) else "results of another run"
    raise OutDirError(f"output directory {path} already holds {what} ({shown}); pass --overwrite "
                      f"(overwrite=True) to replace them, or choose another directory")
