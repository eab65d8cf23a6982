"""The CUDA backend of the row-statistics norms (layer, group, instance and RMS norm).

Mirrors ``fastbn._backend_cpu_rowwise`` name by name on device arrays: the
array helpers of ``fastbn._cuda.backend`` (re-exported; ``vector64`` also takes
the multi-dimensional weights of layer norm), C-contiguous ``(1, R, K)`` views
(a device copy only for non-contiguous input), and the three row-wise
operations of ``fastbn._cuda.rowwise_driver``.  As in ``backend``, importing
this module imports neither Numba nor ``numba.cuda``: the first call checks
that CUDA is usable.
"""

import importlib
import math

import numpy as np

from . import arrays, devarray
from . import backend as _backend
from .backend import as_input, cast, export, like, to_compute, update_running  # noqa: F401

name = "cuda"


def _driver():
    arrays.cuda_module()
    return importlib.import_module("fastbn._cuda.rowwise_driver")


def _contiguous(x):
    """Device array ``x`` itself when C-contiguous, else a C-contiguous device copy."""
    order = tuple(range(len(x.shape)))
    if arrays.is_dense(x, order):
        return x
    full, buf = arrays.empty_in_layout(x.shape, order, arrays.dtype_of(x))
    arrays.copy_into(full, x)
    return buf


def _view(x, shape):
    """C-contiguous device array ``x`` viewed as ``shape`` (as many elements)."""
    return arrays.memory_view(x, shape, arrays.c_strides(shape, arrays.dtype_of(x).itemsize))


def rows(x, R, K):
    """The C-contiguous ``(1, R, K)`` view of ``x`` (a copy only if ``x`` is not C-contiguous)."""
    return _view(_contiguous(x), (1, R, K))


def empty_rows(shape, dtype, R, K):
    """A new C-contiguous device array of ``shape`` and its ``(1, R, K)`` view."""
    full = devarray.empty(tuple(shape), dtype)
    return full, _view(full, (1, R, K))


def vector64(v, channels, fill):
    """A fresh contiguous float64 device vector of ``channels`` values (``fill`` if ``v`` is None).

    ``v`` may have any shape of ``channels`` elements (layer norm's weight has
    ``normalized_shape``); host values are copied up.
    """
    if v is not None and arrays.is_device(v):
        v = _view(_contiguous(arrays.as_device(v, "vector")), (channels,))
    return _backend.vector64(v, channels, fill)


def broadcast_rows(v, shape):
    """``v`` as float64 broadcast to ``shape``, flattened, on the device: one value per row.

    Host values (scalars, NumPy arrays) are broadcast on the host and copied up:
    they are per-row statistics, tiny next to the data.  A device array repeats
    along the leading axes: its shape must be the trailing dimensions of ``shape``.
    """
    n = math.prod(shape)
    if not arrays.is_device(v):
        host = np.broadcast_to(np.asarray(v, dtype=np.float64), shape).reshape(-1)
        return _backend.vector64(host, n, 0.0)
    v = arrays.as_device(v, "statistics")
    if tuple(v.shape) != tuple(shape)[len(shape) - len(v.shape):]:
        raise ValueError(f"a device vector of shape {tuple(v.shape)} does not broadcast to the "
                         f"rows {tuple(shape)} along the leading axes")
    return _driver().repeated(_view(_contiguous(v), (math.prod(v.shape),)), n)


def forward(x3, G, inner, weight, bias, eps, centered, y3):
    """Per-row float64 ``(mean, invstd, biased_var)``; ``y3`` receives the output."""
    return _driver().forward(x3, G, inner, weight, bias, eps, centered, y3)


def normalize(x3, G, inner, mean, invstd, weight, bias, y3):
    """``y3`` from given per-row statistics."""
    _driver().normalize(x3, G, inner, mean, invstd, weight, bias, y3)


def backward(dy3, x3, G, inner, mean, invstd, weight, centered, batch_stats, want_affine, dx3):
    """``dx3``; returns float64 ``(dweight, dbias)`` or ``(None, None)``."""
    return _driver().backward(dy3, x3, G, inner, mean, invstd, weight, centered, batch_stats,
                              want_affine, dx3)
