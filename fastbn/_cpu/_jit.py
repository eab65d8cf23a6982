"""Numba decorators and type signatures shared by the CPU kernels.

Every kernel has one explicit signature per float dtype: inputs are typed
read-only (a writable array converts to that type, so read-only input needs no
extra compilation), outputs writable, and the per-channel vectors are float64.
A dtype's machine code is built (or, with ``cache=True``, loaded from the cache)
the first time that kernel runs on that dtype, so a float32-only workload never
pays for the float64 compilation.
"""

import functools

import numba
import numpy as np
from numba import njit, types

from .. import _threads, _welford

F64 = types.float64
I64 = types.int64
BOOL = types.boolean
VEC = types.Array(F64, 1, "C")
VEC_IN = types.Array(F64, 1, "C", readonly=True)
PARTIALS = types.Array(F64, 3, "C")
GEOM = types.Array(I64, 1, "C", readonly=True)
PARTIALS_IN = types.Array(F64, 3, "C", readonly=True)
FLOATS = (types.float32, types.float64)


def arr(dtype, ndim, readonly=False):
    """A C-contiguous array type."""
    return types.Array(dtype, ndim, "C", readonly=readonly)


class Kernel:
    """A parallel kernel compiled per dtype of its first argument, on first use."""

    def __init__(self, fn, signature_of):
        self.py_func = fn
        self._signature_of = signature_of
        self._by_dtype = {}
        functools.update_wrapper(self, fn)

    def dispatcher(self, dtype):
        """The Numba dispatcher for ``dtype`` (float32 or float64), built once."""
        found = self._by_dtype.get(dtype)
        if found is None:
            numba_type = FLOATS[np.dtype(dtype) == np.float64]
            found = njit([self._signature_of(numba_type)], parallel=True, nogil=True,
                         cache=True)(self.py_func)
            self._by_dtype[dtype] = found
        return found

    def __call__(self, first, *rest):
        return self.dispatcher(first.dtype)(first, *rest)


def launch_threads(size):
    """Set Numba's threads for kernels over ``size`` elements; returns the count."""
    n = _threads.threads_for(size)
    numba.set_num_threads(n)
    return n


def kernel(signature_of):
    """Decorate a parallel kernel; ``signature_of(numba_float_type)`` builds its signature."""
    return lambda fn: Kernel(fn, signature_of)


def device(fn):
    """An inlined helper for the kernels (no signature: typed where it is used)."""
    return njit(inline="always", nogil=True, cache=True)(fn)


chan_merge = device(_welford.chan_merge)
inverse_std = device(_welford.inverse_std)
relu = device(_welford.relu)
