import os

# Tests are CPU-only and must not grab all cores for XLA's thread pool beyond the machine's size.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
