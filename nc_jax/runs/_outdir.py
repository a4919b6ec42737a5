"""An output directory made ready for a run: created, resumed, overwritten or refused.

Temp files of atomic writes left by a killed writer are removed only when provably orphaned.
"""
from __future__ import annotations

import contextlib
import os
from typing import Optional, Sequence

from nc_jax.runs._checkpoint import read_checkpoint
from nc_jax._files import (CHECKPOINT_NAME, RUN_ARTIFACTS, _TEMP_WRITER, OutDirError,
                                _is_temp, host_name, pid_alive)
from nc_jax.runs._identity import check_config
from nc_jax.runs._lock import LOCK_NAME, holds_lock


def is_orphaned_temp(directory, name: str, artifacts: Sequence[str] = RUN_ARTIFACTS) -> bool:
    """Whether `name` in `directory` is a temp file of one of `artifacts` whose writer is provably
    gone, so that deleting it cannot break a write in progress: this process holds the
    directory's lock (so no other nc-jax run writes there), and the file names its writer, a
    process of this host that no longer exists. Anything else (another host's writer, a temp
    file of an older nc-jax that names no writer) is left alone: it costs only disk space."""
    m = _TEMP_WRITER.match(name)
    if m is None or m["base"] not in artifacts or not holds_lock(directory):
        return False
    pid = int(m["pid"])
    return m["host"] == host_name() and pid != os.getpid() and not pid_alive(pid)


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
    Temp files of atomic writes are removed only when provably orphaned (`is_orphaned_temp`:
    the caller holds the directory's lock, `nc_jax.runs.OutDirLock`, and the writer is dead);
    temp files and the lock file never count as results.
    """
    path = os.fspath(path)
    if not path:
        raise OutDirError("the output directory must be a non-empty path (got '')")
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutDirError(f"output path {path} exists and is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise OutDirError(f"cannot create output directory {path} ({e.strerror or e}); "
                          f"choose a writable one") from e
    entries = []
    for name in sorted(os.listdir(path)):
        if is_orphaned_temp(path, name, artifacts):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(path, name))
        elif not _is_temp(name) and name != LOCK_NAME:
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
