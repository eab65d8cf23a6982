"""The decorator of the CUDA kernels: ``cuda.jit`` with fastbn's source-stamped disk cache."""

from numba import config, cuda

from .._jit_cache import enable_package_cache


def kernel(fn):
    """A CUDA kernel compiled on first launch, its PTX cached on disk (see ``fastbn._jit_cache``).

    The CUDA simulator interprets kernels in Python: it compiles nothing, so
    there is nothing to cache.
    """
    dispatcher = cuda.jit(fn)
    if config.ENABLE_CUDASIM:
        return dispatcher
    from numba.cuda.dispatcher import CUDACache  # absent from the simulator's numba.cuda
    return enable_package_cache(dispatcher, CUDACache)
