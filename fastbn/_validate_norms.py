"""Argument checks of the row-statistics norms (layer, group, instance, RMS norm).

Same rules as ``_validate``: metadata only, run before any work, and a
``TypeError``/``ValueError`` whose message names the argument, the expected
and the given value.
"""

import numbers

import numpy as np

from . import _validate


def normalized_shape_tuple(normalized_shape, x_shape):
    """``normalized_shape`` (int or sequence of ints) as a tuple matching ``x``'s trailing dims."""
    items = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) \
        else normalized_shape
    try:
        shape = tuple(items)
    except TypeError:
        raise TypeError(f"normalized_shape must be an int or a sequence of ints, got "
                        f"{type(normalized_shape).__name__}") from None
    if any(isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in shape):
        raise TypeError(f"normalized_shape must be an int or a sequence of ints, got "
                        f"{normalized_shape!r}")
    shape = tuple(int(s) for s in shape)
    if not shape:
        raise ValueError("normalized_shape must have at least one dimension, got ()")
    if any(s < 1 for s in shape):
        raise ValueError(f"normalized_shape must contain positive sizes, got {shape}")
    if len(x_shape) < len(shape) or tuple(x_shape[len(x_shape) - len(shape):]) != shape:
        raise ValueError(f"normalized_shape {shape} must match the trailing dimensions of x, "
                         f"got x of shape {tuple(x_shape)}")
    return shape


def num_groups_value(num_groups, channels):
    """``num_groups``: a positive int dividing ``channels``."""
    if isinstance(num_groups, bool) or not isinstance(num_groups, numbers.Integral):
        raise TypeError(f"num_groups must be an int, got {type(num_groups).__name__}")
    if num_groups < 1 or channels % num_groups:
        raise ValueError(f"num_groups={num_groups} must be a positive divisor of the number of "
                         f"channels (x.shape[1] = {channels})")
    return int(num_groups)


def affine_array(v, shape, name, what):
    """A weight/bias of exactly ``shape`` (or None); returns it unchanged."""
    if v is None:
        return None
    if not hasattr(v, "shape") or not hasattr(v, "dtype"):
        v = _validate.as_float_array(v, name)
    _validate.float_dtype(v.dtype, name)
    if tuple(v.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} ({what}), got {tuple(v.shape)}")
    return v


def stats_array(v, shapes, name):
    """A forward statistic whose shape is one of ``shapes``; returns it as a NumPy float array."""
    v = _validate.as_float_array(v, name)
    if tuple(v.shape) not in [tuple(s) for s in shapes]:
        want = " or ".join(str(tuple(s)) for s in shapes)
        raise ValueError(f"{name} must have shape {want} (from the forward pass), "
                         f"got {tuple(v.shape)}")
    return v


def rms_eps(eps, dtype):
    """RMSNorm's eps: None means ``numpy.finfo(dtype).eps`` (as in PyTorch)."""
    return float(np.finfo(dtype).eps) if eps is None else _validate.eps_value(eps)


def flag(value, name):
    """A bool argument (NumPy bools accepted)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)
