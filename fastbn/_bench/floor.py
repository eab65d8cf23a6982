"""The memory floor: a parallel copy of the same array at the same thread count.

A normalization reads its input at least once and writes its output once, so a
copy (one read, one write) of the same bytes is the fastest it could possibly
be.  On the CPU the copy runs on the compiled extension's threads
(``fastbn._inference.parallel_copy``); without the extension, on a Numba
``prange`` loop.  Both follow ``fastbn.set_num_threads``.
"""

import numba
import numpy as np

from fastbn import _inference, _threads


@numba.njit(parallel=True, nogil=True, cache=True)
def _prange_copy(src, dst):
    for i in numba.prange(src.size):
        dst[i] = src[i]


def _numba_copy(src, dst):
    """The fallback copy: Numba ``prange`` at fastbn's thread count."""
    numba.set_num_threads(_threads.get_num_threads())
    _prange_copy(src, dst)


def cpu_copy(x):
    """A zero-argument callable copying contiguous NumPy ``x`` into a preallocated 1-D array.

    The callable returns that array.
    """
    src = x.reshape(-1)
    dst = np.empty_like(src)
    copy = _inference.parallel_copy if _inference.available() else _numba_copy

    def run():
        copy(src, dst)
        return dst
    return run


def cuda_copy(d_x):
    """A zero-argument callable doing a device-to-device copy of Numba device array ``d_x``."""
    from numba import cuda

    dst = cuda.device_array_like(d_x)
    return lambda: dst.copy_to_device(d_x)
