"""JAX's persistent compilation cache in a per-user directory.

A sweep's chunk function takes ~2 s to compile on a 2-core CPU and the analysis adds more; a cold
process pays this every time, which is most of a short run's wall time. With the cache, a second
process that compiles the same program (same code, shapes, flags and jax version) loads the
executable from disk instead. Numbers are unaffected: a hit loads the very executable the compiler
would have produced.

    from nc_jax.runs._compile_cache import enable_compile_cache
    enable_compile_cache()        # -> the directory used, or None

Where (first that applies): the `path` argument; `$NC_JAX_CACHE_DIR`; a directory already given
to JAX itself (`JAX_COMPILATION_CACHE_DIR` or `jax.config`), so a user's own JAX setting is never
overridden and the test suite's private cache stays private; `$XDG_CACHE_HOME/nc-jax/xla`;
`~/.cache/nc-jax/xla`. `NC_JAX_NO_COMPILE_CACHE=1` turns it off. JAX's own thresholds
(`JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`, `..._MIN_ENTRY_SIZE_BYTES`) win when set.

The cache is trusted code (JAX's warning): the default directory is private to the user.
"""
from __future__ import annotations

import os
import sys
from typing import Mapping, Optional

ENV_DIR = "NC_JAX_CACHE_DIR"
ENV_DISABLE = "NC_JAX_NO_COMPILE_CACHE"
# JAX's default (1 s) skips nc-jax's analysis programs (0.1-0.5 s each, many per experiment);
# below ~0.1 s a disk read saves nothing over compiling.
MIN_COMPILE_TIME_S = 0.1
_JAX_ENV_MIN_TIME = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"
_JAX_ENV_MIN_SIZE = "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"
_FALSY = ("", "0", "false", "no", "off")

_warned = False


def _warn_once(msg: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        print(f"nc-jax: {msg}; continuing without the persistent compilation cache",
              file=sys.stderr)


def is_disabled(environ: Optional[Mapping[str, str]] = None) -> bool:
    """True when `NC_JAX_NO_COMPILE_CACHE` is set to anything but "", 0, false, no, off."""
    env = os.environ if environ is None else environ
    return env.get(ENV_DISABLE, "").strip().lower() not in _FALSY


def default_cache_dir(environ: Optional[Mapping[str, str]] = None) -> str:
    """`$NC_JAX_CACHE_DIR`, else `$XDG_CACHE_HOME/nc-jax/xla`, else `~/.cache/nc-jax/xla`.

    A relative XDG_CACHE_HOME is ignored, as the XDG base-directory spec requires."""
    env = os.environ if environ is None else environ
    if env.get(ENV_DIR):
        return os.path.expanduser(env[ENV_DIR])
    xdg = env.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "nc-jax", "xla")
    home = env.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".cache", "nc-jax", "xla")


def resolve_cache_dir(path: Optional[str] = None, environ: Optional[Mapping[str, str]] = None,
                      jax_dir: Optional[str] = None) -> str:
    """The directory `enable_compile_cache(path)` uses; `jax_dir` is the one JAX already has."""
    env = os.environ if environ is None else environ
    if path:
        return os.path.expanduser(path)
    if env.get(ENV_DIR):
        return os.path.expanduser(env[ENV_DIR])
    if jax_dir:
        return jax_dir
    return default_cache_dir(env)


def _writable_dir(d: str) -> bool:
    try:
        os.makedirs(d, mode=0o700, exist_ok=True)
    except OSError as e:
        _warn_once(f"cannot create the compilation cache directory {d!r} ({e})")
        return False
    if not (os.path.isdir(d) and os.access(d, os.W_OK | os.X_OK)):
        _warn_once(f"the compilation cache directory {d!r} is not writable")
        return False
    return True


def enable_compile_cache(path: Optional[str] = None) -> Optional[str]:
    """Turn on JAX's persistent compilation cache; return its directory, or None when disabled
    (`NC_JAX_NO_COMPILE_CACHE`, `JAX_ENABLE_COMPILATION_CACHE=false`) or unusable (a warning
    on stderr, once per process; the program goes on without the cache). Call it before the
    first compilation you want cached; calling it again with another directory switches."""
    if is_disabled():
        return None
    try:
        import jax
        from jax.experimental.compilation_cache import compilation_cache as cc

        if not jax.config.jax_enable_compilation_cache:
            return None
        current = jax.config.jax_compilation_cache_dir
        d = os.path.abspath(resolve_cache_dir(path, jax_dir=current))
        if not _writable_dir(d):
            return None
        if current != d:
            if current:
                # JAX opens its cache once, lazily; a new directory needs a fresh start
                cc.reset_cache()
            jax.config.update("jax_compilation_cache_dir", d)
        if _JAX_ENV_MIN_TIME not in os.environ:
            jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_S)
        if _JAX_ENV_MIN_SIZE not in os.environ:
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # no size floor
        return d
    except Exception as e:  # a cache must never be the reason a run fails
        _warn_once(f"could not enable the compilation cache ({type(e).__name__}: {e})")
        return None
