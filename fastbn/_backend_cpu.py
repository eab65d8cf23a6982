"""The CPU backend: NumPy array handling around the Numba and Cython kernels.

A backend module gives the public functions the same small interface on every
device (``fastbn._cuda.backend`` mirrors it): turn inputs into canonical views,
allocate outputs laid out like the input, move per-channel vectors to float64,
and run the kernels.  The Numba driver is imported on first use only, and the
eval forward goes to the ahead-of-time compiled Cython kernel when it is built.
"""

import warnings

import numpy as np

from . import _dispatch, _dtypes, _layout, _validate

name = "cpu"

#: How backward finds the ReLU mask (same values as ``_cpu.driver``).
MASK_NONE, MASK_RECOMPUTE, MASK_FROM_OUTPUT = 0, 1, 2


def _driver():
    return _dispatch.load("fastbn._cpu.driver")


def as_input(x, arg_name):
    """``x`` as a float NumPy array (TypeError naming ``arg_name`` otherwise)."""
    return _validate.as_float_array(x, arg_name)


def cast(x, dtype):
    """``x`` in ``dtype`` (no copy when it already is)."""
    return x if x.dtype == dtype else x.astype(dtype)


def to_compute(x):
    """``x`` in the dtype the kernels run in (float16 is computed in float32)."""
    return cast(x, _dtypes.compute_dtype(x.dtype))


def plan(x, kept_axes):
    return _layout.plan_view(x.shape, x.strides, kept_axes)


def canonical(x, view_plan):
    return _layout.canonical(x, view_plan)


def _same_memory(a, b):
    ia, ib = a.__array_interface__, b.__array_interface__
    return ia["data"][0] == ib["data"][0] and a.strides == b.strides


def output(out, x, view_plan, dtype, inputs):
    """``(result, y3)``: where the kernel writes and what the caller gets back.

    Writes straight into ``out`` when its canonical view is free and it does not
    partially overlap an input (exact aliasing, i.e. in place, is fine: kernels
    read each element before writing it).  Otherwise the kernel writes a new
    array, copied into ``out`` by ``finish_output``.
    """
    if out is not None and out.dtype == dtype:
        y3 = _layout.canonical_writable(out, view_plan)
        clash = any(a is not None and np.may_share_memory(out, a) and not _same_memory(out, a)
                    for a in inputs)
        if y3 is not None and not clash:
            return out, y3
    return _layout.empty_like_input(x.shape, view_plan, dtype)


def finish_output(result, out):
    """Return ``out`` holding ``result`` (or ``result`` itself when there is no ``out``)."""
    if out is None:
        return result
    if result is not out:
        np.copyto(out, result, casting="same_kind")
    return out


def vector64(v, channels, fill):
    """A fresh contiguous float64 copy of a per-channel vector (``fill`` when ``v`` is None)."""
    if v is None:
        return np.full(channels, fill, dtype=np.float64)
    return np.array(v, dtype=np.float64, copy=True).reshape(channels)


def like(values64, target):
    """``values64`` in ``target``'s dtype (a new array)."""
    return values64.astype(target.dtype)


def divide(v, d):
    """``v / d`` for a per-channel float64 vector ``v`` and a scalar ``d`` (a new array)."""
    return v / d


def multiply(a, b):
    """``a * b`` for per-channel float64 vectors (a new array)."""
    return a * b


def kept_shape(v, x_shape, view_plan):
    """A per-kept-position vector in the kept axes' shape (a NumPy scalar when none is kept)."""
    return _layout.kept_shape_from_flat(v, x_shape, view_plan)[()]


def export(a, like):
    """``a`` as the array kind of the caller's ``like``: NumPy results stay as they are."""
    return a


def to_host(a):
    """``a`` as a NumPy array (NumPy arrays as they are): layers keep their grads on the host."""
    return np.asarray(a)


def update_running(running_mean, running_var, batch_mean, batch_var, momentum):
    """``running = (1 - momentum) * running + momentum * batch``, in place, in float64.

    A batch with non-finite statistics is skipped with a warning, so one bad
    batch never poisons the running buffers.  Returns whether it updated.
    Two separate contiguous float32/float64 buffers of one dtype (the usual
    case) take the compiled update of ``_cpu._running``.
    """
    if _compiled_update_fits(running_mean, running_var, batch_mean, batch_var):
        updated = _dispatch.load("fastbn._cpu._running").update_running(
            running_mean, running_var, batch_mean, batch_var, float(momentum))
    else:
        updated = np.isfinite(batch_mean).all() and np.isfinite(batch_var).all()
        for buf, batch in ((running_mean, batch_mean), (running_var, batch_var)):
            if updated and buf is not None:
                buf[...] = (1.0 - momentum) * buf.astype(np.float64) + momentum * batch
    if not updated:
        warnings.warn("batch statistics are not finite (NaN or inf in the input): running "
                      "statistics were not updated", RuntimeWarning, stacklevel=4)
    return bool(updated)


def _compiled_update_fits(running_mean, running_var, batch_mean, batch_var):
    """Whether ``_cpu._running.update_running`` takes these arrays as they are."""
    buffers = (running_mean, running_var)
    return (all(type(b) is np.ndarray and b.flags.c_contiguous and b.flags.writeable
                for b in buffers)
            and running_mean.dtype == running_var.dtype
            and running_mean.dtype in _dtypes.KERNEL_DTYPES
            and not np.may_share_memory(running_mean, running_var)
            and all(type(v) is np.ndarray and v.dtype == np.float64 and v.flags.c_contiguous
                    for v in (batch_mean, batch_var)))


def moments(x3):
    return _driver().moments(x3)


def train_forward(x3, weight, bias, eps, res3, use_relu, y3):
    return _driver().train_forward(x3, weight, bias, eps, res3, use_relu, y3)


def eval_forward(x3, running_mean, running_var, weight, bias, eps, res3, use_relu, y3):
    """Normalise with running statistics: the Cython kernel, or Numba if it was not built."""
    inference = _dispatch.load("fastbn._inference")
    if inference.available():
        inference.normalize_eval(x3, running_mean, running_var, weight, bias, eps, use_relu, res3,
                                 y3)
        return
    _warn_no_extension(inference)
    channels = x3.shape[1]
    invstd = 1.0 / np.sqrt(vector64(running_var, channels, 0.0) + eps)
    _driver().normalize(x3, vector64(running_mean, channels, 0.0), invstd,
                        vector64(weight, channels, 1.0), vector64(bias, channels, 0.0), res3,
                        use_relu, y3)


_warned = []


def _warn_no_extension(inference):
    if not _warned:
        _warned.append(True)
        warnings.warn("fastbn's compiled inference extension is not available "
                      f"({inference.unavailable_reason()}); eval forward runs on the Numba "
                      "kernels, which compile on first use", RuntimeWarning, stacklevel=4)


def backward(dy3, x3, y3, mean, invstd, weight, bias, mask_mode, batch_stats, dx3, dres3):
    return _driver().backward(dy3, x3, y3, mean, invstd, weight, bias, mask_mode, batch_stats,
                              dx3, dres3)


def grad_sums(dy3, x3, y3, mean, invstd, weight, bias, mask_mode):
    return _driver().grad_sums(dy3, x3, y3, mean, invstd, weight, bias, mask_mode)


def input_grad(dy3, x3, y3, mean, invstd, weight, bias, mask_mode, sum_g, sum_gx, count,
               batch_stats, dx3, dres3):
    _driver().input_grad(dy3, x3, y3, mean, invstd, weight, bias, mask_mode, sum_g, sum_gx, count,
                         batch_stats, dx3, dres3)
