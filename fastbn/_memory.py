"""Where fastbn's full-size CPU outputs come from: a bounded cache of freed blocks.

A training step writes new outputs (y, dx, the residual's gradient) every
call.  Memory fresh from the operating system is page-faulted and zeroed by
the kernel on its first write, which on the development VM cost 1.5-1.8 ms
per 38.7 MB output, a fifth of a LayerNorm training step; glibc hands blocks
that large back to the system on every free.  The compiled extension's NumPy
memory handler (``fastbn/_ext/_output_cache.h``) keeps freed blocks of at
least 1 MiB, up to a byte limit, and gives one back to the next request of
exactly its size.  The arrays are ordinary NumPy arrays that own their data;
only the arrays allocated here use the handler.

Without the compiled extension (a source checkout without ``build_ext``)
outputs come from ``np.empty`` and nothing is cached (``output_cache_info``
says so).
"""

import math

import numpy as np

from . import _config

try:
    from ._ext import _output_cache as _cache
except ImportError:  # not built
    _cache = None

if _cache is not None:
    _cache.set_limit(_config.OUTPUT_CACHE_BYTES)


def empty(shape, dtype):
    """``np.empty(shape, dtype)``, from the cache when it is large and a freed block fits."""
    if _cache is None or np.dtype(dtype).itemsize * math.prod(shape) < _cache.MIN_BYTES:
        return np.empty(shape, dtype)
    return _cache.allocate(np.empty, shape, dtype)


def empty_like(a):
    """``np.empty_like(a)`` (same shape, dtype and memory order), from the cache likewise.

    Anything but a NumPy array goes to ``np.empty_like`` alone.
    """
    if _cache is None or type(a) is not np.ndarray or a.nbytes < _cache.MIN_BYTES:
        return np.empty_like(a)
    return _cache.allocate(np.empty_like, a)


def set_output_cache_limit(nbytes):
    """Keep at most ``nbytes`` of freed outputs for reuse (0 keeps none).

    Lowering the limit frees the oldest cached blocks at once.  The default is
    ``fastbn._config.OUTPUT_CACHE_BYTES`` (256 MiB).

    Raises
    ------
    TypeError
        If ``nbytes`` is not an int.
    ValueError
        If ``nbytes`` is negative.
    RuntimeError
        Without the compiled extension, which holds the cache.
    """
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)):
        raise TypeError(f"nbytes must be an int, got {nbytes!r}")
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes!r}")
    if _cache is None:
        raise RuntimeError("the output cache needs fastbn's compiled extension, which this "
                           "install lacks (build it with `pip install .`)")
    _cache.set_limit(int(nbytes))


def empty_output_cache():
    """Free every cached block now (the limit stays)."""
    if _cache is not None:
        limit = _cache.stats()[0]
        _cache.set_limit(0)
        _cache.set_limit(limit)


def output_cache_info():
    """A dict: ``limit``, cached ``blocks`` and ``bytes``, reuse ``hits`` and ``misses``.

    ``available`` is False (and the rest 0) without the compiled extension.
    """
    if _cache is None:
        return dict(available=False, limit=0, blocks=0, bytes=0, hits=0, misses=0)
    limit, blocks, nbytes, hits, misses = _cache.stats()
    return dict(available=True, limit=limit, blocks=blocks, bytes=nbytes, hits=hits,
                misses=misses)
