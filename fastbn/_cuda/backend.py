"""The CUDA backend: the interface of ``fastbn._backend_cpu`` on device arrays.

Inputs are Numba device arrays, or anything with ``__cuda_array_interface__``
(CuPy arrays, PyTorch CUDA tensors) viewed without a copy; host arrays given
with ``device="cuda"`` are copied up once.  Outputs are allocated on the
device in the input's memory layout; :func:`export` returns them as the
caller's array kind.  Per-channel vectors are float64 device arrays (host
vectors are copied up: they are tiny); the big arrays never go to the host.

Nothing here imports ``numba.cuda`` at import time: the first call checks that
CUDA is usable and raises :class:`~fastbn._cuda.errors.CudaUnavailableError`
naming what is missing.
"""

import importlib
import warnings

import numpy as np

from .. import _dtypes, _layout
from . import arrays

name = "cuda"

#: How backward finds the ReLU mask (same values as the CPU backend).
MASK_NONE, MASK_RECOMPUTE, MASK_FROM_OUTPUT = 0, 1, 2


def _driver():
    arrays.cuda_module()
    return importlib.import_module("fastbn._cuda.driver")


def as_input(x, arg_name):
    """``x`` as a float device array (TypeError naming ``arg_name`` otherwise)."""
    return arrays.as_device(x, arg_name)


def cast(x, dtype):
    """``x`` in ``dtype`` (no copy when it already is), laid out like ``x``."""
    if arrays.dtype_of(x) == dtype:
        return x
    full, _ = arrays.empty_in_layout(x.shape, _layout.plan_view(x.shape, x.strides, ()).perm,
                                     dtype)
    arrays.copy_into(full, x)
    return full


def to_compute(x):
    """``x`` in the dtype the kernels run in (float16 is computed in float32)."""
    return cast(x, _dtypes.compute_dtype(arrays.dtype_of(x)))


def plan(x, kept_axes):
    return _layout.plan_view(x.shape, x.strides, kept_axes)


def canonical(x, view_plan):
    """The C-contiguous ``(outer, kept, inner)`` view of ``x``: free when ``x`` is dense."""
    if arrays.is_dense(x, view_plan.perm):
        return arrays.memory_view(x, view_plan.shape3,
                                  arrays.c_strides(view_plan.shape3, arrays.dtype_of(x).itemsize))
    full, buf = arrays.empty_in_layout(x.shape, view_plan.perm, arrays.dtype_of(x))
    arrays.copy_into(full, x)
    return buf.reshape(view_plan.shape3)


def output(out, x, view_plan, dtype, inputs):
    """``(result, y3)``: a new device array laid out like ``x`` and its canonical view.

    The kernels always write a new array; ``finish_output`` copies it into
    ``out`` when one is given.
    """
    full, buf = arrays.empty_in_layout(x.shape, view_plan.perm, dtype)
    return full, buf.reshape(view_plan.shape3)


def finish_output(result, out):
    """Return ``out`` holding ``result`` (or ``result`` itself when there is no ``out``)."""
    if out is None:
        return result
    if arrays.is_device(out):
        arrays.copy_into(arrays.as_device(out, "out"), result)
    else:
        np.copyto(out, result.copy_to_host(), casting="same_kind")
    return out


def vector64(v, channels, fill):
    """A fresh contiguous float64 device vector (``fill`` when ``v`` is None)."""
    if v is None:
        return _driver().filled(channels, fill)
    if arrays.is_device(v):
        return _driver().converted(arrays.as_device(v, "vector"), np.float64)
    return _driver().device_vector(np.array(v, dtype=np.float64).reshape(channels))


def like(values64, target):
    """``values64`` in ``target``'s dtype (a new device array)."""
    return _driver().converted(values64, arrays.dtype_of(target))


def divide(v, d):
    """``v / d`` for a float64 device vector ``v`` and a scalar ``d`` (a new vector)."""
    return _driver().divide(v, d)


def multiply(a, b):
    """``a * b`` for float64 device vectors (a new vector)."""
    return _driver().multiply(a, b)


def kept_shape(v, x_shape, view_plan):
    """A per-kept-position vector as a view in the kept axes' shape (a host scalar for none)."""
    if not view_plan.kept_axes:
        return arrays.to_host(v)[0]
    axes = sorted(view_plan.kept_axes)
    ordered = arrays.c_strides([x_shape[a] for a in view_plan.kept_axes], v.dtype.itemsize)
    strides = [ordered[view_plan.kept_axes.index(a)] for a in axes]
    return arrays.memory_view(v, tuple(x_shape[a] for a in axes), tuple(strides))


def export(a, like):
    """``a`` as the array kind of the caller's ``like`` (CuPy, torch; Numba as is)."""
    return arrays.export(a, like)


def update_running(running_mean, running_var, batch_mean, batch_var, momentum):
    """``running = (1 - momentum) * running + momentum * batch``, in place, in float64.

    Device buffers are updated on the device in one launch; host buffers on the
    host from the tiny statistics.  A batch with non-finite statistics is skipped
    with a warning (one flag comes back to decide).  Returns whether it updated.
    """
    driver = _driver()
    device = [None if b is None or not arrays.is_device(b) else arrays.as_device(b, "running")
              for b in (running_mean, running_var)]
    if device[0] is not None or device[1] is not None:
        updated = driver.blend_if_finite(*device, batch_mean, batch_var, momentum)
    else:
        updated = driver.all_finite(batch_mean, batch_var)
    if updated:
        for buf, dev, batch in zip((running_mean, running_var), device, (batch_mean, batch_var)):
            if buf is not None and dev is None:   # a host buffer
                batch_host = batch.copy_to_host()
                buf[...] = (1.0 - momentum) * buf.astype(np.float64) + momentum * batch_host
    if not updated:
        warnings.warn("batch statistics are not finite (NaN or inf in the input): running "
                      "statistics were not updated", RuntimeWarning, stacklevel=4)
    return updated


def moments(x3):
    return _driver().moments(x3)


def train_forward(x3, weight, bias, eps, res3, use_relu, y3):
    return _driver().train_forward(x3, weight, bias, eps, res3, use_relu, y3)


def eval_forward(x3, running_mean, running_var, weight, bias, eps, res3, use_relu, y3):
    """Normalise with running statistics (given on the device or the host, any float dtype)."""
    driver = _driver()
    channels = x3.shape[1]
    invstd = driver.inverse_std(vector64(running_var, channels, 0.0), 1.0, eps)
    driver.normalize(x3, vector64(running_mean, channels, 0.0), invstd,
                     vector64(weight, channels, 1.0), vector64(bias, channels, 0.0), res3,
                     use_relu, y3)


def backward(dy3, x3, y3, mean, invstd, weight, bias, mask_mode, batch_stats, dx3, dres3):
    return _driver().backward(dy3, x3, y3, mean, invstd, weight, bias, mask_mode, batch_stats,
                              dx3, dres3)


def grad_sums(dy3, x3, y3, mean, invstd, weight, bias, mask_mode):
    return _driver().grad_sums(dy3, x3, y3, mean, invstd, weight, bias, mask_mode)


def input_grad(dy3, x3, y3, mean, invstd, weight, bias, mask_mode, sum_g, sum_gx, count,
               batch_stats, dx3, dres3):
    _driver().input_grad(dy3, x3, y3, mean, invstd, weight, bias, mask_mode, sum_g, sum_gx, count,
                         batch_stats, dx3, dres3)


def to_host(a):
    """A NumPy copy of a device array of any kind (torch, CuPy, Numba); host arrays as they are.

    The layers keep their parameter gradients on the host whatever the input.
    """
    return np.asarray(arrays.to_host(a))
