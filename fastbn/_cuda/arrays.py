"""Device arrays for the CUDA backend: import, views, layouts and the caller's array kind.

Internally every array is a Numba device array (or, under the CUDA simulator,
Numba's simulated one).  Objects exposing ``__cuda_array_interface__`` (CuPy,
PyTorch CUDA tensors) are viewed without a copy; results go back to the
caller's kind without a copy too (:func:`export`).  Views with another shape or
strides are built from the CUDA array interface, because Numba's device arrays
reshape only contiguous arrays and transpose only 2-D ones.
"""

import functools
import re

import numpy as np

from .. import _validate
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
    return hasattr(a, "__cuda_array_interface__") or hasattr(a, "__cuda_ndarray__")


def dtype_of(a):
    """The NumPy dtype of a NumPy, Numba, CuPy or PyTorch array."""
    if hasattr(a, "__cuda_array_interface__") and not hasattr(a, "__cuda_ndarray__"):
        return np.dtype(a.__cuda_array_interface__["typestr"])
    return np.dtype(a.dtype)


def as_device(x, arg_name):
    """``x`` as a Numba device array: device arrays as views, host arrays copied to the GPU."""
    cuda = cuda_module()
    if hasattr(x, "__cuda_ndarray__"):
        dev = x
    elif hasattr(x, "__cuda_array_interface__"):
        dev = cuda.as_cuda_array(x)
    else:
        return cuda.to_device(np.ascontiguousarray(_validate.as_float_array(x, arg_name)))
    _validate.float_dtype(dev.dtype, arg_name)
    return dev


def to_host(a):
    """A NumPy copy of a device array (NumPy arrays are returned as they are)."""
    return a.copy_to_host() if is_device(a) else a


def export(a, like):
    """``a`` as the kind of the caller's device array ``like``: a CuPy array or a torch tensor.

    Zero-copy through the CUDA array interface.  Numba device arrays, host
    ``like`` objects and host scalars leave ``a`` as it is.
    """
    if not is_device(a) or hasattr(like, "__cuda_ndarray__") \
            or not hasattr(like, "__cuda_array_interface__"):
        return a
    library = type(like).__module__.partition(".")[0]
    if library == "torch":
        import torch
        return torch.as_tensor(a, device=like.device)
    if library == "cupy":
        import cupy
        return cupy.asarray(a)
    return a


def c_strides(shape, itemsize):
    """Byte strides of a C-contiguous array of ``shape``."""
    strides = []
    step = itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


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
    iface = getattr(a, "__cuda_array_interface__", None)
    if iface is None:  # Numba's simulated device arrays wrap host memory
        return type(a)(np.lib.stride_tricks.as_strided(a._ary, shape, strides))
    desc = dict(iface, shape=tuple(shape), strides=tuple(strides))
    return cuda_module().from_cuda_array_interface(desc, owner=a, sync=False)


def empty_in_layout(shape, perm, dtype):
    """``(full, buf)``: a new array of ``shape`` stored in axis order ``perm``.

    ``buf`` is the C-contiguous array of the permuted shape and ``full`` the
    view of it in the original axis order.
    """
    dtype = np.dtype(dtype)
    buf = cuda_module().device_array(tuple(shape[a] for a in perm), dtype)
    return memory_view(buf, shape, layout_strides(shape, perm, dtype.itemsize)), buf


def copy_into(dst, src):
    """``dst[...] = src`` on the device for any strides, converting the dtype (Numba's kernel)."""
    dst[:] = src
