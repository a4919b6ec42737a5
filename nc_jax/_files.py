"""Files a run writes: atomic writes (a kill leaves the old or the new file, never a torn one)
and the guard of an output directory (never overwrite another run's results silently; one
writer at a time is `nc_jax.runs`)."""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import socket
import tempfile
from typing import Any, Optional

#: What a run writes into its output directory (the checkpoint is `checkpoint.npz`, the results
#: files those of `nc_jax.runs.write_results`); `prepare_out_dir(overwrite=True)` removes them so
#: that a fresh run never sits next to a stale result of the previous one.
CHECKPOINT_NAME = "checkpoint.npz"
RESULT_FILES = ("results.json", "results.csv", "curves.csv", "layers.csv")
RUN_ARTIFACTS = (CHECKPOINT_NAME, *RESULT_FILES)
_TMP_SUFFIX = ".tmp"


class OutDirError(RuntimeError):
    """The output directory holds results that this run must not overwrite, or cannot be used."""


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used: unreadable, corrupt, truncated, of another format, of
    another run (`CheckpointMismatchError`) or of other software (`CheckpointVersionError`)."""


#: errno values of a write that cannot succeed until the machine has more room: what happened
DISK_FULL = {
    errno.ENOSPC: "the disk is full (no space left on device)",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EFBIG: "the file-size limit was reached (ulimit -f, or the largest file the file "
                 "system allows)",
}


class ResourceError(RuntimeError):
    """Writing `path` failed for want of a resource of the machine: disk space or quota, the
    file-size limit (OSError ENOSPC / EDQUOT / EFBIG) or memory (MemoryError). The file at `path`
    is unchanged (writes are atomic) and the temp file is removed; `what` says what ran out."""

    def __init__(self, what: str, path):
        self.what, self.path = what, os.fspath(path)
        super().__init__(f"{what} while writing {self.path}")


def resource_fault(exc: BaseException) -> Optional[str]:
    """What ran out, if `exc` is a lack of disk space, quota, file size or memory; else None."""
    if isinstance(exc, MemoryError):
        return "out of memory"
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        return DISK_FULL[exc.errno]
    return None


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
    flush + fsync, `os.replace`, fsync of the directory. The parent directory must exist. A full
    disk, quota or file-size limit, or a lack of memory, is a `ResourceError` naming `path`
    (the old file intact, the temp file removed)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        # the writer's host and pid in the name let a later run prove the file orphaned
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{host_name()}-"
                                          f"{os.getpid()}.", suffix=_TMP_SUFFIX, dir=directory)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        what = resource_fault(e)
        if what is not None:
            raise ResourceError(what, path) from e
        raise
    _fsync_dir(directory)


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> None:
    """`atomic_write_bytes` of `text` encoded with `encoding`."""
    atomic_write_bytes(path, text.encode(encoding))


def save_figure(fig, path, **savefig_kwargs) -> None:
    """A matplotlib figure written like every other output: rendered in memory, then
    `atomic_write_bytes` (a temp file and a rename), so a kill never leaves half a PNG and a
    symlink at `path` is replaced, never written through. The format is `path`'s suffix."""
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, **savefig_kwargs)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_json(path, obj: Any, *, indent: Optional[int] = 1, **dump_kwargs) -> None:
    """`atomic_write_text` of `json.dumps(obj, indent=indent, **dump_kwargs)` plus a newline."""
    atomic_write_text(path, json.dumps(obj, indent=indent, **dump_kwargs) + "\n")


def _is_temp(name: str) -> bool:
    """A temp file of `atomic_write_bytes` (in flight, or left behind by a killed writer)."""
    return name.startswith(".") and name.endswith(_TMP_SUFFIX)


_TEMP_WRITER = re.compile(r"^\.(?P<base>.+)\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.[a-z0-9_]+"
                          + re.escape(_TMP_SUFFIX) + "$")
