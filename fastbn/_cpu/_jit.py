"""Numba decorators and type signatures shared by the CPU kernels.

Every kernel is compiled eagerly for float32 and float64 from explicit
signatures: inputs are typed read-only (a writable array converts to that type,
so read-only input needs no extra compilation), outputs writable, and the
per-channel vectors are float64.  ``cache=True`` makes later imports load the
machine code instead of compiling it.
"""

from numba import njit, types

from .. import _welford

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


def kernel(signature_of):
    """Compile a parallel kernel for each float dtype; ``signature_of(dtype)`` builds its signature."""
    signatures = [signature_of(dtype) for dtype in FLOATS]
    return njit(signatures, parallel=True, nogil=True, cache=True)


def device(fn):
    """An inlined helper for the kernels (no signature: typed where it is used)."""
    return njit(inline="always", nogil=True, cache=True)(fn)


chan_merge = device(_welford.chan_merge)
inverse_std = device(_welford.inverse_std)
relu = device(_welford.relu)
