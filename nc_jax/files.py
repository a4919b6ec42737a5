"""Files a run writes: atomic writes (a kill leaves the old or the new file, never a torn one)
and the guard of an output directory (never overwrite another run's results silently; one
writer at a time is `nc_jax.lock`)."""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
from typing import Any, Optional, Sequence

#: What a run writes into its output directory (the checkpoint is `checkpoint.npz`);
#: `prepare_out_dir(overwrite=True)` removes them so that a fresh run never sits next to a stale
#: result of the previous one.
CHECKPOINT_NAME = "checkpoint.npz"
RUN_ARTIFACTS = (CHECKPOINT_NAME, "results.json", "results.csv")
_TMP_SUFFIX = ".tmp"


class OutDirError(RuntimeError):
    """The output directory holds results that this run must not overwrite, or cannot be used."""


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used: unreadable, corrupt, truncated, of another format, of
    another run (`CheckpointMismatchError`) or of other software (`CheckpointVersionError`)."""


def host_name() -> str:
    """This machine's name as it appears in lock and temp file names (file-name safe)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (a reused pid counts as alive,
    which only ever makes the callers more careful)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


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
    # the writer's host and pid in the name let a later run prove the file orphaned
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{host_name()}-{os.getpid()}.",
                               suffix=_TMP_SUFFIX, dir=directory)
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


def _is_temp(name: str) -> bool:
    """A temp file of `atomic_write_bytes` (in flight, or left behind by a killed writer)."""
    return name.startswith(".") and name.endswith(_TMP_SUFFIX)


_TEMP_WRITER = re.compile(r"^\.(?P<base>.+)\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.[a-z0-9_]+"
                          + re.escape(_TMP_SUFFIX) + "$")


def is_orphaned_temp(directory, name: str, artifacts: Sequence[str] = RUN_ARTIFACTS) -> bool:
    """Whether `name` in `directory` is a temp file of one of `artifacts` whose writer is provably
    gone, so that deleting it cannot break a write in progress: this process holds the
    directory's lock (so no other nc-jax run writes there), and the file names its writer, a
    process of this host that no longer exists. Anything else (another host's writer, a temp
    file of an older nc-jax that names no writer) is left alone: it costs only disk space."""
    from nc_jax.lock import holds_lock
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
    the caller holds the directory's lock, `nc_jax.lock.OutDirLock`, and the writer is dead);
    temp files and the lock file never count as results.
    """
    from nc_jax.lock import LOCK_NAME
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
            from nc_jax.checkpoint import check_config, read_checkpoint
            check_config(ckpt, read_checkpoint(ckpt)[0]["config"], config_dict)
        return "resume"
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    what = "a checkpoint" if os.path.exists(ckpt) else "results of another run"
    raise OutDirError(f"output directory {path} already holds {what} ({shown}); pass --overwrite "
                      f"(overwrite=True) to replace them, or choose another directory")
