"""A user's data from an .npz archive of `x` (N, ...) and `y` (N,): every way the file can be
unusable (not an archive, damaged, pickled arrays, missing arrays, bad labels) or too large to
load is a ValueError that says what to do, raised before anything big is read.

The size check reads only the zip's directory and each array's `.npy` header: `np.load` would
allocate the declared shape first, so an archive of a few MB that declares gigabytes (a
zip bomb: zeros compress ~1000:1) would fill the memory before any other check could run.
"""
from __future__ import annotations

import dataclasses
import math
import os
import zipfile
from typing import Optional

import numpy as np

from nc_jax.data._datasets import Dataset, from_arrays

#: Environment variable that sets the largest total size (bytes) of `x` and `y` that
#: `load_npz` reads; default: a quarter of the available memory (`default_max_bytes`).
MAX_BYTES_ENV = "NC_JAX_MAX_DATA_BYTES"
_HOW = "save it with np.savez(path, x=x, y=y)"


def _available_memory() -> int:
    """MemAvailable of /proc/meminfo, else the physical memory, in bytes."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 16 << 30


def default_max_bytes() -> int:
    """The size limit of `load_npz`: `$NC_JAX_MAX_DATA_BYTES` if set, else a quarter of the
    available memory (loading holds the file's arrays, their float32 copy and, when
    standardizing, float64 statistics of the same size)."""
    env = os.environ.get(MAX_BYTES_ENV)
    if env:
        try:
            value = int(float(env))
        except ValueError:
            raise ValueError(f"{MAX_BYTES_ENV} must be a number of bytes, got {env!r}") from None
        if value <= 0:
            raise ValueError(f"{MAX_BYTES_ENV} must be > 0, got {env!r}")
        return value
    return _available_memory() // 4


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB" if n >= 1e8 else f"{n / 1e6:.3g} MB"


def _header(zf: zipfile.ZipFile, info: zipfile.ZipInfo):
    """(shape, dtype, header bytes) of a `.npy` member, from its first bytes only."""
    with zf.open(info) as fp:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            shape, _, dtype = np.lib.format._read_array_header(fp, version)  # (3, 0): utf-8
        return tuple(int(s) for s in shape), dtype, fp.tell()


def check_npz_size(path: str, max_bytes: Optional[int] = None) -> int:
    """The bytes that `x` and `y` of the archive at `path` take in memory, from the headers;
    raises ValueError when a header disagrees with the member's size in the zip directory
    (damaged or crafted) or when the total exceeds `max_bytes` (default `default_max_bytes()`).
    Members that cannot be parsed here are left to `np.load`, whose errors `load_npz` reports."""
    limit = default_max_bytes() if max_bytes is None else int(max_bytes)
    total, parts = 0, []
    with zipfile.ZipFile(path) as zf:
        for name in ("x", "y"):
            members = [i for i in zf.infolist() if i.filename in (f"{name}.npy", name)]
            if not members:
                continue
            info = members[0]
            try:
                shape, dtype, head = _header(zf, info)
            except Exception:  # noqa: BLE001  (np.load names the problem)
                continue
            if dtype.hasobject:
                continue  # refused by np.load(allow_pickle=False), with its own message
            nbytes = math.prod(shape) * dtype.itemsize
            if nbytes + head != info.file_size:
                raise ValueError(f"data file {path} is damaged: array {name} declares shape "
                                 f"{shape} of {dtype} ({_gb(nbytes)}) but the archive stores "
                                 f"{_gb(max(info.file_size - head, 0))} for it; {_HOW}")
            total += nbytes
            parts.append(f"{name}: {shape} {dtype}")
    if total > limit:
        disk = os.path.getsize(path)
        raise ValueError(
            f"data file {path} holds {_gb(total)} of arrays ({', '.join(parts)}) in "
            f"{_gb(disk)} on disk, more than the {_gb(limit)} that nc-jax reads (a quarter of "
            f"the available memory, or ${MAX_BYTES_ENV}); use a smaller data set, or set "
            f"{MAX_BYTES_ENV} to a larger number of bytes if the machine has the memory")
    return total


def load_npz(path: str, *, standardize: bool = False, num_classes: Optional[int] = None,
             max_bytes: Optional[int] = None) -> Dataset:
    """A user's data from an .npz holding arrays `x` (N, ...) and `y` (N,) of integer labels.

    `num_classes` (C): the labels must be 0..C-1, each present (what `make_dataset` passes:
    `data.num_classes` is the one source of truth); None: the distinct labels are remapped to
    0..K-1 (`from_arrays`). The arrays' declared sizes are checked against `max_bytes` (default:
    `default_max_bytes()`) before they are read (`check_npz_size`). Every way the file can be
    unusable raises a ValueError that says what to do."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except FileNotFoundError:
        raise ValueError(f"data file {path} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"data file {path} is a directory; --data needs an .npz file") from None
    except PermissionError:
        raise ValueError(f"data file {path} cannot be read: permission denied") from None
    except OSError as e:  # an over-long name, a loop of links, ...
        raise ValueError(f"data file {path} cannot be opened ({e.strerror or e})") from None
    if magic == b"\x93NUMPY":
        raise ValueError(f"data file {path} holds a single array, not an .npz archive of x and "
                         f"y; {_HOW}")
    if not magic.startswith(b"PK"):
        # np.load would call anything else a pickle and suggest unpickling it: never for data
        raise ValueError(f"data file {path} is not an .npz archive (it starts with "
                         f"{magic!r}); {_HOW}")
    try:
        check_npz_size(path, max_bytes)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError):
        pass  # np.load below reports a torn or damaged archive
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001  (a torn or damaged zip)
        raise ValueError(f"data file {path} is not a readable .npz archive ({type(e).__name__}: "
                         f"{str(e)[:200]}); {_HOW}") from None
    try:
        with loaded as f:
            missing = [k for k in ("x", "y") if k not in f.files]
            if missing:
                raise ValueError(f"{path}: missing array(s) {missing}; found {f.files}; {_HOW}")
            x, y = f["x"], f["y"]
    except ValueError as e:
        if "missing array" in str(e):
            raise
        # an object array: allow_pickle=False refuses it (a data file is never unpickled, and
        # numpy's own message would suggest doing exactly that)
        raise ValueError(f"data file {path} holds object (pickled) arrays, which cannot be "
                         f"read safely; store x and y as numeric arrays: {_HOW}") from None
    except Exception as e:  # noqa: BLE001  (a torn member, a CRC failure, ...)
        raise ValueError(f"data file {path} is damaged ({type(e).__name__}: {str(e)[:200]}); "
                         f"{_HOW}") from None
    ds = from_arrays(x, y, standardize=standardize, source=str(path), num_classes=num_classes)
    return dataclasses.replace(ds, info={**ds.info, "kind": "npz", "path": str(path)})
