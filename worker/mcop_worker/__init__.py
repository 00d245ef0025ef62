"""The Monte Carlo engine, the worker runtime and the `mcop` command line."""

from mcop_worker.numba_cache import use_keyed_cache_dir

# Before anything imports numba: its kernel cache goes to a folder named after the engine's
# sources, so no process ever loads kernels compiled from another version (numba_cache.py).
use_keyed_cache_dir()
