"""Moving sweep arrays between the host and a mesh that may span several processes.

With one process these are `jax.device_put` / `jax.device_get`. When `jax.distributed` is
initialised, the run axis is sharded over every process' devices: inputs are built from the
host copy that every process holds (`jax.make_array_from_callback`, so no process needs the
others' memory), results are gathered on every process (`process_allgather`), and only process
0 writes files (`is_main_process`).

Typed PRNG keys cannot live in NumPy: they travel as their uint32 key data and are re-wrapped.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import numpy as np
from jax.sharding import NamedSharding


def is_main_process() -> bool:
    """True on the process that prints progress and writes files (process 0)."""
    return jax.process_index() == 0


def is_key(x: Any) -> bool:
    """A typed PRNG key array (or its `jax.ShapeDtypeStruct`)."""
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _global(a, sharding: NamedSharding):
    if is_key(a):
        impl = jax.random.key_impl(a)
        data = _global(np.asarray(jax.random.key_data(a)), sharding)
        return jax.random.wrap_key_data(data, impl=impl)
    host = np.asarray(a)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def putter(mesh: Optional[jax.sharding.Mesh], spec) -> Callable:
    """A function placing a pytree on `mesh` with PartitionSpec `spec` (None mesh: one device)."""
    if mesh is None:
        return lambda tree: jax.tree.map(jax.numpy.asarray, tree)
    sharding = NamedSharding(mesh, spec)
    if sharding.is_fully_addressable:
        return lambda tree: jax.device_put(tree, sharding)
    return lambda tree: jax.tree.map(lambda a: _global(a, sharding), tree)


def _leaf_to_host(a):
    if not isinstance(a, jax.Array):
        return np.asarray(a)
    if is_key(a):
        impl = jax.random.key_impl(a)
        return jax.random.wrap_key_data(_leaf_to_host(jax.random.key_data(a)), impl=impl)
    if a.is_fully_addressable:
        return np.asarray(a)
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(a, tiled=True))


def to_host(tree):
    """Every leaf as a NumPy array on this process (gathered from all processes when the array
    spans several); typed keys stay keys (on the host's default device)."""
    return jax.tree.map(_leaf_to_host, tree)
