"""One place that turns ``None`` / ``n`` into a thread count for every backend."""

import os

from . import _config

_requested = None


def default_num_threads():
    """Threads this process may use: ``NUMBA_NUM_THREADS`` if set, else the CPU affinity."""
    env = os.environ.get("NUMBA_NUM_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def get_num_threads():
    """Threads fastbn's CPU kernels use now (Numba and the Cython inference path)."""
    return _requested if _requested is not None else default_num_threads()


def threads_for(size):
    """Threads for a kernel over ``size`` elements: one below ``PARALLEL_MIN_ELEMENTS``."""
    return 1 if size < _config.PARALLEL_MIN_ELEMENTS else get_num_threads()


def set_num_threads(n):
    """Set the threads used by fastbn's CPU kernels (``None`` restores the default).

    Backends read it at each call, so it takes effect on the next call.

    Raises
    ------
    ValueError
        If ``n`` is not None and not an integer in ``[1, default_num_threads()]``.
    """
    global _requested
    if n is not None and (isinstance(n, bool) or not isinstance(n, int)
                          or not 1 <= n <= default_num_threads()):
        raise ValueError(
            f"n must be an int in [1, {default_num_threads()}] or None, got {n!r}")
    _requested = n
