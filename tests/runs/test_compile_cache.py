"""nc_jax.runs: where the persistent compilation cache goes, and that it changes no
number."""
import os

import jax
import jax.monitoring as mon
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache as cc

from nc_jax.runs import _compile_cache as compile_cache
from nc_jax.runs import default_cache_dir, enable_compile_cache, resolve_cache_dir

_KEYS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
         "jax_persistent_cache_min_entry_size_bytes")


@pytest.fixture
def restore_jax_config():
    saved = {k: getattr(jax.config, k) for k in _KEYS}
    yield
    for k, v in saved.items():
        jax.config.update(k, v)
    cc.reset_cache()  # reopened lazily, at the restored directory


def test_dir_resolution_order():
    env = {"HOME": "/home/u", "XDG_CACHE_HOME": "/xdg", "NC_JAX_CACHE_DIR": "/nc"}
    assert resolve_cache_dir("/given", env, jax_dir="/jax") == "/given"
    assert resolve_cache_dir(None, env, jax_dir="/jax") == "/nc"
    del env["NC_JAX_CACHE_DIR"]
    assert resolve_cache_dir(None, env, jax_dir="/jax") == "/jax"  # the user's JAX setting
    assert resolve_cache_dir(None, env) == "/xdg/nc-jax/xla"
    assert default_cache_dir({"HOME": "/home/u", "XDG_CACHE_HOME": "rel"}) == \
        "/home/u/.cache/nc-jax/xla"  # a relative XDG_CACHE_HOME is invalid (XDG spec)
    assert default_cache_dir({"HOME": "/home/u"}) == "/home/u/.cache/nc-jax/xla"


@pytest.mark.parametrize("value,disabled", [("1", True), ("true", True), ("yes", True),
                                            ("0", False), ("", False), ("false", False)])
def test_disable_variable(monkeypatch, tmp_path, value, disabled):
    monkeypatch.setenv("NC_JAX_NO_COMPILE_CACHE", value)
    assert compile_cache.is_disabled() is disabled
    if disabled:
        assert enable_compile_cache(str(tmp_path / "c")) is None
        assert not (tmp_path / "c").exists()


def test_unusable_dir_warns_once_and_returns_none(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("NC_JAX_NO_COMPILE_CACHE", raising=False)
    monkeypatch.setattr(compile_cache, "_warned", False)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    before = jax.config.jax_compilation_cache_dir
    assert enable_compile_cache(str(blocker / "sub")) is None
    assert enable_compile_cache(str(blocker / "sub2")) is None
    assert capsys.readouterr().err.count("continuing without") == 1
    assert jax.config.jax_compilation_cache_dir == before


def test_cache_hit_gives_identical_results(monkeypatch, tmp_path, restore_jax_config):
    monkeypatch.delenv("NC_JAX_NO_COMPILE_CACHE", raising=False)
    monkeypatch.delenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", raising=False)

    def f(x, w):
        for _ in range(3):
            x = jnp.tanh(x @ w) + jnp.sin(x)
        return jnp.sum(x * x, axis=0)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 64)).astype(np.float32)
    w = rng.standard_normal((64, 64)).astype(np.float32) / 8
    jax.config.update("jax_compilation_cache_dir", None)
    cc.reset_cache()
    reference = np.asarray(jax.jit(f)(x, w))  # no persistent cache

    d = tmp_path / "cache"
    assert enable_compile_cache(str(d)) == str(d)
    # the threshold (0.1 s) would skip this tiny program; the mechanism is what is tested
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    hits = []
    listener = lambda name, **kw: hits.append(name)  # noqa: E731
    mon.register_event_listener(listener)
    try:
        jax.clear_caches()
        written = np.asarray(jax.jit(f)(x, w))
        assert os.listdir(d), "nothing was written to the cache"
        n_hits = hits.count("/jax/compilation_cache/cache_hits")
        jax.clear_caches()  # forget the in-memory executable: the next compile reads the disk
        loaded = np.asarray(jax.jit(f)(x, w))
        assert hits.count("/jax/compilation_cache/cache_hits") > n_hits
    finally:
        mon.unregister_event_listener(listener)
    assert np.array_equal(written, reference) and np.array_equal(loaded, reference)
