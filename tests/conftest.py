import os
import tempfile

# Tests are CPU-only.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# The tests build many identical tiny programs (each sweep makes fresh closures, so jit's
# in-memory cache cannot reuse them, and subprocess tests start cold). A persistent compilation
# cache private to one pytest run deduplicates those compilations and roughly halves the suite's
# wall time; it is inherited by the subprocesses the tests start and by pytest-xdist's workers
# (`-n auto`), which share it. Numbers are unaffected: a cache hit loads the very executable the
# compiler would have produced, and an entry read while another worker writes it is an error
# that JAX answers by compiling (jax._src.compiler._cache_read).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="nc_jax_test_cache_")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
