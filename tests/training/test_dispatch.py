"""Nothing in an epoch leaves the device: after warm-up, the sweep's chunk function runs whole
epochs with zero host transfers (`jax.transfer_guard("disallow")`) and zero new compilations
(XLA backend-compile events from `jax.monitoring` and the jit cache size), also when the runs'
weight decays change; and `train_runs` dispatches exactly one compiled call per chunk of epochs.
"""
import contextlib
import dataclasses

import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import pytest

from nc_jax.training import steps_per_epoch
from nc_jax.training import default_record_fn, init_states, make_chunk_fn, train_runs
from tests.helpers import tiny_config, tiny_data, tiny_task

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_compiles():
    """Counts XLA backend compilations inside the block (jax.monitoring duration events)."""
    events = []

    def listener(name, secs, **kwargs):
        if name == BACKEND_COMPILE:
            events.append(secs)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def _setup(weight_decays=(1e-4, 5e-3, 1e-2), n=250):
    # n = 250 with batch 32: 7 full batches in the scan plus a remainder step of 26
    cfg = tiny_config(weight_decays=weight_decays, seeds=(0,))
    data = tiny_data(cfg)
    x_np, y_np = data.x[:n], data.y[:n]
    task = tiny_task(cfg, dataclasses.replace(data, x=x_np, y=y_np, info={}))
    k = len(weight_decays)

    def states_for(wds):
        return init_states(task, np.zeros(k, np.int64), np.full(k, cfg.optim.lr, np.float32),
                           np.asarray(wds, np.float32), x_np.shape[1:])

    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    return cfg, task, x, y, states_for


@pytest.mark.parametrize("with_record", [False, True])
def test_epoch_chunk_stays_on_device_and_compiles_once(with_record):
    cfg, task, x, y, states_for = _setup()
    record = default_record_fn(task) if with_record else None
    fn = make_chunk_fn(task, cfg.optim.batch_size, 1, record)
    states = states_for((1e-4, 5e-3, 1e-2))
    # the program holds no host callback, infeed/outfeed or send/recv: nothing inside it can
    # reach the host (on CPU the guard below cannot see device-to-host copies, which are free)
    hlo = fn.lower(states, x, y).as_text().lower()
    for op in ("callback", "outfeed", "infeed", "send", "recv"):
        assert op not in hlo, op

    states, hist, rec = fn(states, x, y)  # epoch 1: warm-up, compiles
    jax.block_until_ready(states)
    assert fn._cache_size() == 1
    steps0 = np.asarray(states.step)

    with count_compiles() as compiles, jax.transfer_guard("disallow"):
        for _ in range(2):  # epochs 2 and 3: no transfer in either direction, no compile
            states, hist, rec = fn(states, x, y)
        jax.block_until_ready((states, hist, rec))
    assert compiles == []
    assert fn._cache_size() == 1
    # the guard is live: a host array passed to the chunk is a transfer and raises
    spare = jax.tree.map(jnp.copy, states)
    with jax.transfer_guard("disallow"), pytest.raises(Exception, match="[Dd]isallowed"):
        fn(spare, np.asarray(x), y)
    spe = steps_per_epoch(x.shape[0], cfg.optim.batch_size)
    np.testing.assert_array_equal(np.asarray(states.step), steps0 + 2 * spe)
    assert np.all(np.isfinite(np.asarray(hist["loss"])))


def test_new_weight_decays_reuse_the_compiled_chunk():
    cfg, task, x, y, states_for = _setup()
    fn = make_chunk_fn(task, cfg.optim.batch_size, 1, None)
    a, b = states_for((1e-4, 5e-3, 1e-2)), states_for((0.0, 3e-2, 7e-3))
    jax.block_until_ready((a, b))
    a, hist_a, _ = fn(a, x, y)
    jax.block_until_ready(a)
    with count_compiles() as compiles, jax.transfer_guard("disallow"):
        b, hist_b, _ = fn(b, x, y)
        jax.block_until_ready(b)
    assert compiles == []
    assert fn._cache_size() == 1
    # same seeds, different weight decays: the runs really differ (the WD is live data)
    assert not np.allclose(np.asarray(a.params["head"]["kernel"]),
                           np.asarray(b.params["head"]["kernel"]))
    hp = np.asarray(b.opt_state.hyperparams["weight_decay"])
    np.testing.assert_allclose(hp, [0.0, 3e-2, 7e-3])


def test_aot_compiled_chunk_runs_epochs_without_transfers():
    """The object `train_runs` calls: `.lower(...).compile()` of the chunk function."""
    cfg, task, x, y, states_for = _setup()
    fn = make_chunk_fn(task, cfg.optim.batch_size, 2, default_record_fn(task))
    states = states_for((1e-4, 5e-3, 1e-2))
    compiled = fn.lower(states, x, y).compile()
    states, _, _ = compiled(states, x, y)
    jax.block_until_ready(states)
    other = states_for((2e-4, 1e-3, 0.0))
    jax.block_until_ready(other)
    with count_compiles() as compiles, jax.transfer_guard("disallow"):
        states, hist, rec = compiled(states, x, y)
        other, _, _ = compiled(other, x, y)
        jax.block_until_ready((states, other, hist, rec))
    assert compiles == []
    assert hist["loss"].shape == (3, 2)


@pytest.mark.parametrize("epochs_per_call", [1, 3])
def test_train_runs_dispatches_one_call_per_chunk(epochs_per_call):
    cfg = tiny_config(weight_decays=(1e-4, 1e-2), seeds=(0,)).replace(record_every=0)
    cfg = cfg.replace(optim=dataclasses.replace(cfg.optim, epochs=6))
    data = tiny_data(cfg)
    calls = []
    res = train_runs(tiny_task(cfg, data), cfg, data, progress=False,
                     epochs_per_call=epochs_per_call, hooks=[lambda ev: calls.append(ev.epoch)])
    assert calls == list(range(epochs_per_call, 7, epochs_per_call))
    assert res.history["loss"].shape == (2, 6)
