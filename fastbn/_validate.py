"""Argument checks shared by every public function, run before any work.

Each check raises ``TypeError`` (wrong kind or dtype) or ``ValueError`` (wrong
shape or value) whose message names the argument, what was expected and what
was given.  Checks look only at metadata (``shape``, ``dtype``, flags) so they
serve NumPy and device arrays alike.
"""

import math
import numbers

import numpy as np

_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def float_dtype(dtype, name):
    """Return ``dtype`` if it is float16/32/64, else raise TypeError naming ``name``."""
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must have a floating dtype (float16, float32 or float64), "
                        f"got {dtype!r}") from None
    if dtype not in _FLOATS:
        raise TypeError(f"{name} must have dtype float16, float32 or float64, got {dtype}")
    return dtype


def as_float_array(x, name):
    """``x`` as a NumPy float array (no copy for arrays), or TypeError naming ``name``."""
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be an array of floats, got {type(x).__name__}: {exc}") \
                from None
        if arr.dtype.kind in "iub":
            raise TypeError(f"{name} must have a floating dtype, got {arr.dtype} "
                            f"(convert explicitly, e.g. {name}.astype(numpy.float32))")
    float_dtype(arr.dtype, name)
    return arr


def min_rank(shape, name, ndim):
    if len(shape) < ndim:
        raise ValueError(f"{name} must have at least {ndim} dimensions, got shape {tuple(shape)}")


def ranks(shape, name, allowed, layer):
    """``len(shape)`` must be one of ``allowed`` (a layer's input-rank check)."""
    if len(shape) not in allowed:
        want = " or ".join(f"{n}-D" for n in allowed)
        raise ValueError(f"{layer} expects {name} to be {want}, got shape {tuple(shape)}")


def axis_index(axis, ndim, name="axis"):
    """Normalise a channel axis (negative counts from the end)."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for an array of {ndim} dimensions")
    return int(axis) % ndim


def axes_tuple(axis, ndim, name="axis"):
    """Normalise ``None`` / int / tuple of ints to a sorted tuple of unique axes."""
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, (tuple, list)) else (axis,)
    axes = tuple(sorted(axis_index(a, ndim, name) for a in items))
    if len(set(axes)) != len(axes):
        raise ValueError(f"{name} has repeated axes: {axis!r}")
    return axes


def same_shape(arr, shape, name, like="x"):
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name} must have the shape of {like} {tuple(shape)}, "
                         f"got {tuple(arr.shape)}")


def _array_dtype(v):
    """The NumPy dtype of an array (a CUDA array's from its interface: torch has its own dtypes)."""
    iface = getattr(v, "__cuda_array_interface__", None)
    return np.dtype(iface["typestr"]) if iface is not None else v.dtype


def channel_vector(v, channels, name, *, writable=False):
    """A per-channel vector of length ``channels`` (or None); returns it unchanged."""
    if v is None:
        return None
    if writable and not isinstance(v, np.ndarray) and not hasattr(v, "__cuda_array_interface__") \
            and not hasattr(v, "__cuda_ndarray__"):
        raise TypeError(f"{name} must be an array updated in place, got {type(v).__name__}")
    if not hasattr(v, "shape") or not hasattr(v, "dtype"):
        v = as_float_array(v, name)
    float_dtype(_array_dtype(v), name)
    if tuple(v.shape) != (channels,):
        raise ValueError(f"{name} must have shape ({channels},) (one value per channel), "
                         f"got {tuple(v.shape)}")
    if writable and isinstance(v, np.ndarray) and not v.flags.writeable:
        raise ValueError(f"{name} must be writable: it is updated in place")
    return v


def is_channel_vector(v, channels, *, writable=False):
    """Whether ``channel_vector`` takes ``v`` as a NumPy array (a check for the fast paths)."""
    return (type(v) is np.ndarray and v.shape == (channels,) and v.dtype in _FLOATS
            and (v.flags.writeable or not writable))


def eps_value(eps):
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(eps) \
            or eps < 0:
        raise ValueError(f"eps must be a finite real number >= 0, got {eps!r}")
    return float(eps)


def momentum_value(momentum, allow_none=False):
    if momentum is None and allow_none:
        return None
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) \
            or not 0.0 <= momentum <= 1.0:
        want = "a real number in [0, 1]" + (" or None" if allow_none else "")
        raise ValueError(f"momentum must be {want}, got {momentum!r}")
    return float(momentum)


def activation_name(activation):
    if activation not in (None, "relu"):
        raise ValueError(f"activation must be None or 'relu', got {activation!r}")
    return activation


def out_array(out, shape, dtype, name="out"):
    """Check a caller-supplied output array (or None)."""
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {out.dtype}")
    same_shape(out, shape, name)
    if not out.flags.writeable:
        raise ValueError(f"{name} must be writable")
    return out


def reduced_count(shape, channel_axes, name="x"):
    """Elements per channel; an empty batch or zero channels is an error."""
    if any(s == 0 for s in shape):
        raise ValueError(f"{name} must not be empty, got shape {tuple(shape)}")
    kept = 1
    for a in channel_axes:
        kept *= shape[a]
    total = 1
    for s in shape:
        total *= s
    return total // kept
