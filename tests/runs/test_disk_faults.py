"""A write that fails for want of disk space, file size or memory is a ResourceError naming the
file, and leaves the previous file as it was and no temp file behind."""
import errno
import os

import pytest

from nc_jax import _files
from nc_jax.runs import ResourceError, atomic_write_bytes


@pytest.mark.parametrize("code, what", [
    (errno.ENOSPC, "the disk is full"), (errno.EDQUOT, "the disk quota is exhausted"),
    (errno.EFBIG, "the file-size limit was reached")])
def test_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch, code, what):
    target = tmp_path / "results.json"
    target.write_bytes(b"old")
    real_fsync = os.fsync

    def fsync(fd):  # some file systems report a full disk only when the data is flushed
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            raise OSError(code, os.strerror(code))
        return real_fsync(fd)
    monkeypatch.setattr(_files.os, "fsync", fsync)
    with pytest.raises(ResourceError, match=f"^{what}.* while writing {target}$") as info:
        atomic_write_bytes(target, b"new" * 1000)
    assert info.value.path == str(target) and info.value.__cause__.errno == code
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["results.json"]


def test_other_os_errors_pass_unchanged(tmp_path, monkeypatch):
    def fsync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    monkeypatch.setattr(_files.os, "fsync", fsync)
    with pytest.raises(OSError) as info:
        atomic_write_bytes(tmp_path / "f", b"x")
    assert not isinstance(info.value, ResourceError) and info.value.errno == errno.EIO
    assert os.listdir(tmp_path) == []
