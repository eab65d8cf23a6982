"""Device arrays for the CUDA backend: import, views, layouts and the caller's array kind.

Internally every array is a :class:`~.devarray.DeviceArray` (a pointer, a
shape, strides and a dtype).  Objects exposing ``__cuda_array_interface__``
(Numba, CuPy, PyTorch CUDA tensors) and the simulator's device arrays are
viewed without a copy; results go back to the caller's kind without a copy too
(:func:`export`).
"""

import functools
import re

import numpy as np

from .. import _validate
from . import devarray
from .devarray import DeviceArray, c_strides
from .errors import CudaUnavailableError


#: The newest numba-cuda known to fail with NumPy >= 2.5 (see ``_numpy_mismatch``).
_LAST_NUMBA_CUDA_WITHOUT_NUMPY_2_5 = (0, 30, 4)


def _numpy_mismatch(cuda):
    """Why this numba-cuda cannot compile for the GPU with this NumPy, or None.

    numba-cuda up to 0.30.4 (then in maintenance) registers an overload of
    ``np.row_stack`` when its CUDA target first compiles; NumPy 2.5 removed
    that function, so every kernel launch would fail with an AttributeError
    from inside numba-cuda (NVIDIA/numba-cuda#907).  A later numba-cuda gets
    the benefit of the doubt; the simulator compiles nothing and is not affected.
    """
    if hasattr(np, "row_stack") or cuda.config.ENABLE_CUDASIM:
        return None
    try:
        import numba_cuda
    except ImportError:  # an older Numba's own numba.cuda: not this package's bug
        return None
    version = tuple(int(p) for p in re.findall(r"\d+", numba_cuda.__version__)[:3])
    if version > _LAST_NUMBA_CUDA_WITHOUT_NUMPY_2_5:
        return None
    return (f"numba-cuda cannot compile kernels with NumPy {np.__version__}: it needs "
            "np.row_stack, which NumPy 2.5 removed (NVIDIA/numba-cuda#907); install "
            "`numpy<2.5` (as `pip install fastbn[cuda]` does)")


@functools.lru_cache(maxsize=None)
def _cuda_or_reason():
    """``(numba.cuda, None)`` when CUDA can be used, else ``(None, why not)``."""
    try:
        from numba import cuda
    except ImportError as exc:
        return None, (f"the numba-cuda package is not installed ({exc}); install it with "
                      "`pip install fastbn[cuda]` or `pip install numba-cuda`")
    mismatch = _numpy_mismatch(cuda)
    if mismatch is not None:
        return None, mismatch
    if not cuda.is_available():
        reason = cuda.cuda_error() or "the CUDA driver found no usable GPU"
        return None, f"no usable CUDA GPU: {str(reason).strip()}"
    return cuda, None


def cuda_module():
    """``numba.cuda``, after checking once that a GPU (or the simulator) is usable.

    Raises
    ------
    CudaUnavailableError
        Naming what is missing: the numba-cuda package (or a NumPy it works
        with), the driver, or a GPU.
    """
    cuda, reason = _cuda_or_reason()
    if cuda is None:
        raise CudaUnavailableError(f"CUDA was requested but cannot be used: {reason}")
    return cuda


def is_device(a):
    return (type(a) is DeviceArray or hasattr(a, "__cuda_ndarray__")
            or hasattr(a, "__cuda_array_interface__"))


def dtype_of(a):
    """The NumPy dtype of a NumPy, Numba, CuPy or PyTorch array."""
    if type(a) is DeviceArray:
        return a.dtype
    iface = getattr(a, "__cuda_array_interface__", None)  # evaluated once: a property
    if iface is not None and not hasattr(a, "__cuda_ndarray__"):
        return np.dtype(iface["typestr"])
    return np.dtype(a.dtype)


def as_device(x, arg_name):
    """``x`` as a :class:`DeviceArray`: device arrays viewed, host arrays copied to the GPU.

    Data that another CUDA stream may still be writing (the array interface names
    a stream other than the legacy default one, which fastbn's kernels run on and
    which waits for the other blocking streams) is waited for first.
    """
    if type(x) is DeviceArray:
        return x
    cuda_module()
    iface = getattr(x, "__cuda_array_interface__", None)  # a property: torch's takes 3.5 us
    if iface is not None:
        dev = _from_interface(x, iface)
    elif hasattr(x, "__cuda_ndarray__"):
        dev = _from_simulated(x)   # the simulator's device arrays wrap NumPy arrays
    else:
        return devarray.to_device(_validate.as_float_array(x, arg_name))
    _validate.float_dtype(dev.dtype, arg_name)
    return dev


def _from_interface(owner, iface):
    """The :class:`DeviceArray` described by a CUDA array interface dict."""
    if iface.get("mask") is not None:
        raise TypeError("masked CUDA arrays are not supported")
    dtype = np.dtype(iface["typestr"])
    shape = tuple(iface["shape"])
    strides = iface.get("strides") or c_strides(shape, dtype.itemsize)
    stream = iface.get("stream")
    if stream not in (None, 1):   # 1: the legacy default stream, which fastbn's kernels use
        devarray.synchronize_stream(stream)
    return DeviceArray(iface["data"][0], shape, strides, dtype, owner)


def _from_simulated(x):
    ary = x._ary
    return DeviceArray(ary.ctypes.data, ary.shape, ary.strides, ary.dtype, x)


def to_host(a):
    """A NumPy copy of a device array (NumPy arrays are returned as they are)."""
    return devarray.to_host(as_device(a, "array")) if is_device(a) else a


def numba_view(a):
    """Device array ``a`` as a Numba device array over the same memory (a simulated one there)."""
    if devarray.simulated():
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
        return FakeCUDAArray(devarray.host_view(a))
    return cuda_module().from_cuda_array_interface(a.__cuda_array_interface__, owner=a,
                                                   sync=False)


def export(a, like):
    """``a`` as the kind of the caller's array ``like``: a torch tensor, a CuPy or Numba array.

    Zero-copy through the CUDA array interface.  ``like`` may be the backend's
    view of the caller's array (its owner is then the caller's).  Results for
    host inputs (with ``device="cuda"``) are Numba device arrays; host scalars
    stay as they are.
    """
    if type(a) is not DeviceArray:
        return a
    if type(like) is DeviceArray:
        like = like.owner
    library = type(like).__module__.partition(".")[0]
    if library == "torch" and getattr(like, "is_cuda", False):
        import torch
        return torch.as_tensor(a, device=like.device)
    if library == "cupy" and hasattr(like, "__cuda_array_interface__"):
        import cupy
        return cupy.asarray(a)
    return numba_view(a)


def layout_strides(shape, perm, itemsize):
    """Byte strides (in axis order) of ``shape`` stored C-contiguously in axis order ``perm``."""
    inner = c_strides([shape[a] for a in perm], itemsize)
    strides = [0] * len(shape)
    for pos, axis in enumerate(perm):
        strides[axis] = inner[pos]
    return tuple(strides)


def is_dense(a, perm):
    """Whether ``a`` is stored C-contiguously in axis order ``perm`` (size-1 axes aside)."""
    want = layout_strides(a.shape, perm, dtype_of(a).itemsize)
    return all(n == 1 or s == w for n, s, w in zip(a.shape, a.strides, want))


def memory_view(a, shape, strides):
    """A view of ``a``'s memory from its first element, with another shape and byte strides."""
    return a.view(tuple(shape), tuple(strides))


def empty_in_layout(shape, perm, dtype):
    """``(full, buf)``: a new array of ``shape`` stored in axis order ``perm``.

    ``buf`` is the C-contiguous array of the permuted shape and ``full`` the
    view of it in the original axis order.
    """
    dtype = np.dtype(dtype)
    buf = devarray.empty(tuple(shape[a] for a in perm), dtype)
    return buf.view(tuple(shape), layout_strides(shape, perm, dtype.itemsize)), buf


def copy_into(dst, src):
    """``dst[...] = src`` on the device for any strides, converting the dtype (Numba's kernel)."""
    numba_view(dst)[:] = numba_view(src)
