"""The CPU backend of the row-statistics norms (layer, group, instance and RMS norm).

The same small interface as ``fastbn._backend_cpu`` (whose array helpers it
re-exports), plus the three row-wise operations.  Arrays are viewed as
C-contiguous ``(1, R, K)`` rows (a copy only for non-contiguous input); the
Numba driver ``fastbn._cpu.rowwise_driver`` is imported on first use.  A CUDA
twin mirrors these names.
"""

import numpy as np

from . import _dispatch, _memory
from ._backend_cpu import as_input, cast, export, like, to_compute, update_running, vector64  # noqa: F401

name = "cpu"


def _driver():
    return _dispatch.load("fastbn._cpu.rowwise_driver")


def rows(x, R, K):
    """The C-contiguous ``(1, R, K)`` view of ``x`` (a copy only if ``x`` is not C-contiguous)."""
    return np.ascontiguousarray(x).reshape(1, R, K)


def empty_rows(shape, dtype, R, K):
    """A new C-contiguous array of ``shape`` and its ``(1, R, K)`` view."""
    full = _memory.empty(shape, dtype)
    return full, full.reshape(1, R, K)


def broadcast_rows(v, shape):
    """``v`` as contiguous float64 broadcast to ``shape``, flattened: one value per row."""
    return np.ascontiguousarray(np.broadcast_to(np.asarray(v, dtype=np.float64), shape)).reshape(-1)


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
