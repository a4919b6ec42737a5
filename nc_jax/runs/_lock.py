"""One writer per output directory: an exclusive lock held for the whole run.

Two sweeps started with the same `--out` would otherwise both train, both print their tables and
overwrite each other's checkpoint and results, leaving one grid's numbers and no error. The lock
is `fcntl.flock` on `DIR/.nc-jax.lock`, a file that also names the holder (pid, host, command,
start time) so that a refused run can say who has the directory. The kernel releases a flock
when its process dies, however it dies, so a lock left by a killed run is never stale: the next
run simply takes it. Where the file system has no flock (some network mounts), the recorded pid
decides instead: a holder on this host whose process is gone is stale and replaced.

Taking the lock also proves, before any training, that the directory can be created and written.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shlex
import stat
import sys
import time
from typing import Dict, Optional

from nc_jax._files import OutDirError, ResourceError, host_name, pid_alive, resource_fault

LOCK_NAME = ".nc-jax.lock"


class OutDirBusyError(OutDirError):
    """Another process holds the output directory's lock. `holder`: what its lock file says."""

    def __init__(self, message: str, holder: dict):
        super().__init__(message)
        self.holder = holder


def _describe(holder: dict) -> str:
    if not holder.get("pid"):
        return "another process (it has not recorded itself yet)"
    since = f", since {holder['started']}" if holder.get("started") else ""
    cmd = f", command: {holder['command']}" if holder.get("command") else ""
    return f"pid {holder['pid']} on host {holder.get('host', '?')}{since}{cmd}"


#: Bytes a run's files may add to its directory's path: the longest name it writes is an atomic
#: write's temp file, `.checkpoint_<group>.npz.<host, 40>-<pid>.<8 random>.tmp`.
NAME_ROOM = 128


def _too_long(path: str, why: str) -> str:
    shown = path if len(path) <= 160 else f"{path[:80]}...{path[-60:]}"
    return (f"output directory {shown} ({len(os.fsencode(path))} bytes) cannot be used: {why} "
            f"(ENAMETOOLONG); nothing was run: choose a shorter --out")


def _check_path_room(path: str) -> None:
    """Every file the run writes must fit the system's path limit: found out before training,
    not when the first checkpoint is written (the temp files are written by absolute path)."""
    full = os.fsencode(os.path.abspath(path))
    try:
        limit = os.pathconf(path, "PC_PATH_MAX")
    except (OSError, ValueError):
        limit = 4096
    if len(full) + 1 + NAME_ROOM >= limit:
        raise OutDirError(_too_long(path, f"the files written in it need up to {NAME_ROOM} "
                                          f"bytes more than its absolute path, and the system "
                                          f"limits a path to {limit} bytes"))


def _read_holder(fd: int) -> dict:
    with contextlib.suppress(OSError, ValueError):
        raw = os.pread(fd, 65536, 0)
        holder = json.loads(raw.decode() or "{}")
        if isinstance(holder, dict):
            return holder
    return {}


class OutDirLock:
    """`with OutDirLock(path):` holds `path`'s lock (creating the directory) or raises
    OutDirBusyError naming the holder, or OutDirError when the directory cannot be created or
    written. Re-entrant within a process; the lock file is removed on release."""

    def __init__(self, path, command: Optional[str] = None):
        self.path = os.fspath(path)
        self.command = command if command is not None else shlex.join(sys.argv)
        self.file = os.path.join(self.path, LOCK_NAME)
        self._key = None
        self._fd: Optional[int] = None

    def __enter__(self) -> "OutDirLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> "OutDirLock":
        if not self.path:
            raise OutDirError("the output directory must be a non-empty path (got '')")
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise OutDirError(f"output path {self.path} exists and is not a directory; choose "
                              f"another --out")
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as e:
            if e.errno == errno.ENAMETOOLONG:
                raise OutDirError(_too_long(self.path, "a name in it is longer than the file "
                                                       "system allows (usually 255 bytes)")) from e
            raise OutDirError(f"cannot create output directory {self.path} ({e.strerror or e}); "
                              f"nothing was run: choose a writable --out") from e
        _check_path_room(self.path)
        self._key = os.path.realpath(self.path)
        held = _HELD.get(self._key)
        if held is not None:
            held[1] += 1
            self._fd = held[0]
            return self
        fd = self._lock_file()
        info = {"pid": os.getpid(), "host": host_name(), "command": self.command,
                "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        data = json.dumps(info).encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        except OSError as e:
            os.close(fd)
            what = resource_fault(e)
            if what is not None:
                raise ResourceError(what, self.file) from e
            raise OutDirError(f"cannot write the lock file {self.file} ({e.strerror or e}); "
                              f"nothing was run") from e
        _HELD[self._key] = [fd, 1]
        self._fd = fd
        return self

    def _lock_file(self) -> int:
        while True:
            try:
                # O_NOFOLLOW: a symlink planted as the lock file must not redirect the write
                fd = os.open(self.file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                             0o666)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise OutDirError(f"lock file {self.file} is a symbolic link; nc-jax never "
                                      f"writes through one: remove it") from e
                raise OutDirError(f"output directory {self.path} is not writable "
                                  f"({e.strerror or e}); nothing was run: choose another --out "
                                  f"or make it writable") from e
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise OutDirError(f"lock file {self.file} is not a regular file; remove it")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise OutDirBusyError(
                    f"output directory {self.path} is in use by another nc-jax run "
                    f"({_describe(holder)}); wait for it to finish, or choose another --out",
                    holder) from None
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    os.close(fd)
                    raise
                self._check_recorded_holder(fd)
                return fd
            # The previous holder removes the file on release: if it did so between our open and
            # our flock, we hold a lock on a deleted file that nobody else would see. Retry.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.file))
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)

    def _check_recorded_holder(self, fd: int) -> None:
        """No flock on this file system: trust the pid the lock file records."""
        holder = _read_holder(fd)
        pid, host = holder.get("pid"), holder.get("host")
        if not pid or (host == host_name() and (pid == os.getpid() or not pid_alive(int(pid)))):
            return  # free, ours, or left by a dead process on this machine
        os.close(fd)
        raise OutDirBusyError(
            f"output directory {self.path} is in use by another nc-jax run ({_describe(holder)}; "
            f"this file system has no file locks, so the lock file decides); wait for it to "
            f"finish, or, if that run is gone, delete {self.file}", holder)

    def release(self) -> None:
        held = _HELD.get(self._key) if self._key is not None else None
        if held is None or self._fd is None:
            return
        held[1] -= 1
        if held[1] == 0:
            # unlink while still holding the lock, so no one can take a lock on a file that is
            # about to disappear (the retry in _lock_file covers the other order)
            with contextlib.suppress(OSError):
                os.unlink(self.file)
            os.close(held[0])
            del _HELD[self._key]
        self._fd = None


#: realpath of a locked directory -> [fd, depth] for the locks this process holds.
_HELD: Dict[str, list] = {}


def holds_lock(path) -> bool:
    """Whether this process holds the lock of directory `path`."""
    return os.path.realpath(os.fspath(path)) in _HELD
