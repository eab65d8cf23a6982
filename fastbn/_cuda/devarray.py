"""The CUDA backend's own device arrays: a pointer, a shape, byte strides and a dtype.

Numba's ``DeviceNDArray`` costs 15-30 us of host time to create (and
``cuda.device_array`` 27 us, ``copy_to_host`` of one value 76 us, measured on
an H200), and a call makes a dozen: on small and medium batches that, not the
GPU, set the time.  A :class:`DeviceArray` is a plain view (about 1 us); new
memory comes from CUDA's stream-ordered allocator (``cuMemAllocAsync``, about
2 us, freed with ``cuMemFreeAsync`` when the last view goes), and small
transfers are single driver calls.

Under Numba's CUDA simulator "device" memory is host memory: the same class
then points into NumPy buffers, so every view, offset and stride computation
below runs in the simulator tests too; only allocation and transfers differ.
"""

import functools
import threading
import warnings
import weakref

import numpy as np
from numba.core import config


class DeviceArray:
    """A strided view of device memory (``strides`` in bytes; ``ptr`` is the first element's).

    Views of the caller's arrays may have negative strides (a reversed CuPy
    array); the backend copies those to a dense array before any kernel runs.

    ``owner`` keeps the memory alive: an allocation, the caller's array
    (a torch tensor, a CuPy or Numba array) or, in the simulator, a NumPy
    buffer.  Exposes ``__cuda_array_interface__`` (version 3), so PyTorch,
    CuPy and Numba can wrap it without a copy.
    """

    __slots__ = ("ptr", "shape", "strides", "dtype", "owner", "size", "c_contiguous")

    def __init__(self, ptr, shape, strides, dtype, owner, c_contiguous=None):
        self.ptr = ptr
        self.shape = shape = tuple(shape)
        self.strides = strides = tuple(strides)
        self.dtype = dtype
        self.owner = owner
        size = 1
        for n in shape:
            size *= n
        self.size = size
        if c_contiguous is None:
            c_contiguous = size <= 1 or strides == c_strides(shape, dtype.itemsize)
        self.c_contiguous = c_contiguous

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "strides": self.strides, "data": (self.ptr, False),
                "typestr": self.dtype.str, "version": 3, "stream": None}

    def view(self, shape, strides, offset=0, c_contiguous=None):
        """Another view of the same memory, ``offset`` bytes in."""
        return DeviceArray(self.ptr + offset, shape, strides, self.dtype, self.owner, c_contiguous)

    def reshape(self, *shape):
        """The C-contiguous array viewed in another shape of as many elements."""
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], tuple) else shape
        if not self.c_contiguous:
            raise ValueError("only a C-contiguous device array can be reshaped without a copy")
        return self.view(shape, c_strides(shape, self.dtype.itemsize), c_contiguous=True)

    def __getitem__(self, i):
        """The sub-array at integer index ``i`` of axis 0 (the only indexing the backend uses)."""
        if not 0 <= i < self.shape[0]:
            raise IndexError(f"index {i} out of range for axis 0 of size {self.shape[0]}")
        return self.view(self.shape[1:], self.strides[1:], i * self.strides[0])

    def copy_to_host(self):
        """A NumPy copy of the values."""
        return to_host(self)

    def __array__(self, dtype=None, copy=None):
        """NumPy's view of a device array is a host copy (as for Numba's device arrays)."""
        return to_host(self) if dtype is None else to_host(self).astype(dtype)

    def __repr__(self):
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype})"


def c_strides(shape, itemsize):
    """Byte strides of a C-contiguous array of ``shape``."""
    strides = []
    step = itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def span_bytes(shape, strides, itemsize):
    """Bytes from the first element to the end of the last one (0 when empty)."""
    if any(n == 0 for n in shape):
        return 0
    return itemsize + sum((n - 1) * s for n, s in zip(shape, strides))


class _Allocation:
    """Device memory from the stream-ordered allocator, freed stream-ordered when unreferenced."""

    __slots__ = ("ptr", "__weakref__")

    def __init__(self, nbytes, context):
        cu = driver()
        err, ptr = cu.cuMemAllocAsync(nbytes, 0)
        if err != cu.CUresult.CUDA_SUCCESS:
            if err == cu.CUresult.CUDA_ERROR_OUT_OF_MEMORY:
                raise MemoryError(f"CUDA out of memory allocating {nbytes} bytes")
            raise RuntimeError(f"cuMemAllocAsync({nbytes}) failed: {err.name}")
        self.ptr = int(ptr)
        free = weakref.finalize(self, _free, ptr, context)
        free.atexit = False  # the context may be gone at exit; the driver frees it all then


def _free(ptr, context):
    """Return ``ptr`` to its pool, from whichever thread drops the last view of it.

    The garbage collector can run this in a thread where another context, or
    none, is current (a worker that never used the GPU); the default stream
    then belongs to no context and the free would fail, leaking the memory.
    So the allocating context is made current for the call.
    """
    cu = driver()
    switch = int(cu.cuCtxGetCurrent()[1]) != int(context)
    if switch:
        cu.cuCtxPushCurrent(context)
    try:
        err, = cu.cuMemFreeAsync(ptr, 0)
    finally:
        if switch:
            cu.cuCtxPopCurrent()
    if err != cu.CUresult.CUDA_SUCCESS:
        warnings.warn(f"fastbn: cuMemFreeAsync failed ({err.name}); device memory leaked",
                      ResourceWarning, stacklevel=1)


def simulated():
    """Whether Numba's CUDA simulator stands in for the GPU (``NUMBA_ENABLE_CUDASIM=1``)."""
    return bool(config.ENABLE_CUDASIM)


@functools.cache
def driver():
    """``cuda.bindings.driver``, the CUDA driver API (a dependency of numba-cuda)."""
    from cuda.bindings import driver
    return driver


_thread = threading.local()


def ensure_context():
    """The current device's primary context (Numba's), made current in this thread.

    Numba's ``get_context`` takes 17 us (measured on an H200); one
    ``cuCtxGetCurrent`` (about 1 us) confirms the context this thread saw last.
    """
    seen = getattr(_thread, "context", None)
    if seen is not None and int(driver().cuCtxGetCurrent()[1]) == seen[0]:
        return seen[1]
    from numba.cuda.cudadrv import devices
    ctx = devices.get_context()
    _thread.context = (int(driver().cuCtxGetCurrent()[1]), ctx)
    return ctx


def empty(shape, dtype):
    """A new C-contiguous device array (uninitialised)."""
    dtype = np.dtype(dtype)
    shape = tuple(int(n) for n in shape)
    strides = c_strides(shape, dtype.itemsize)
    nbytes = span_bytes(shape, strides, dtype.itemsize)
    if simulated():
        owner = np.empty(max(nbytes, 1), np.uint8)
        return DeviceArray(owner.ctypes.data, shape, strides, dtype, owner, True)
    if nbytes == 0:
        return DeviceArray(0, shape, strides, dtype, None, True)
    owner = _Allocation(nbytes, ensure_context().handle)
    return DeviceArray(owner.ptr, shape, strides, dtype, owner, True)


def host_view(a):
    """Simulator only: the NumPy view of ``a``'s (host) memory, keeping its owner alive."""
    return np.asarray(_HostMemory(a))


class _HostMemory:
    """An ``__array_interface__`` over a simulated device array's memory (holds the owner)."""

    def __init__(self, a):
        self.owner = a.owner
        self.__array_interface__ = {"shape": a.shape, "strides": a.strides,
                                    "typestr": a.dtype.str, "data": (a.ptr, False), "version": 3}


def to_device(host):
    """A new C-contiguous device array holding a copy of NumPy array ``host``."""
    host = np.ascontiguousarray(host)
    out = empty(host.shape, host.dtype)
    if simulated():
        host_view(out)[...] = host
    elif host.nbytes:
        _check(driver().cuMemcpyHtoD(out.ptr, host.ctypes.data, host.nbytes), "cuMemcpyHtoD")
    return out


def to_host(a):
    """A NumPy copy of device array ``a`` (one synchronous driver copy when contiguous)."""
    if simulated():
        return np.array(host_view(a))
    out = np.empty(a.shape, a.dtype)
    if not a.size:
        return out
    if a.c_contiguous:
        _check(driver().cuMemcpyDtoH(out.ctypes.data, a.ptr, out.nbytes), "cuMemcpyDtoH")
        return out
    from .arrays import numba_view  # strided: Numba's copy, rare (non-dense results)
    return numba_view(a).copy_to_host()


def synchronize_stream(handle):
    """Wait for the work queued on CUDA stream ``handle`` (an integer from an array interface)."""
    if not simulated():
        cu = driver()
        _check(cu.cuStreamSynchronize(cu.CUstream(handle)), "cuStreamSynchronize")


def _check(result, what):
    err = result[0]
    if err != driver().CUresult.CUDA_SUCCESS:
        raise RuntimeError(f"{what} failed: {err.name}")
