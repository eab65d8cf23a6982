"""``moments``: single-pass mean and variance over any axes, like ``np.mean``/``np.var``."""

import numpy as np

from . import _dispatch, _validate


def moments(x, axis=None, *, ddof=0, device=None):
    """Mean and variance over ``axis`` by chunked Welford/Chan merging.

    Parameters
    ----------
    x : array of float16/32/64, any rank >= 1
    axis : None (all axes), int or tuple of ints, as in ``numpy.var``
    ddof : int, the variance divides by ``n - ddof`` (0: biased, 1: unbiased)
    device : None, "cpu" or "cuda"

    Returns
    -------
    mean, var : arrays of the kept axes' shape (NumPy scalars when every axis is
        reduced), in the input's dtype; accumulated in float64 and rounded once.

    Raises
    ------
    TypeError, ValueError
        Non-float input, an empty reduction, a bad axis, or ``ddof >= n``.
    """
    be = _dispatch.backend(x, device)
    caller, x = x, be.as_input(x, "x")
    _validate.min_rank(x.shape, "x", 1)
    reduce_axes = _validate.axes_tuple(axis, x.ndim)
    kept_axes = tuple(a for a in range(x.ndim) if a not in reduce_axes)
    count = _validate.reduced_count(x.shape, kept_axes)
    if isinstance(ddof, bool) or not isinstance(ddof, (int, np.integer)) or not 0 <= ddof < count:
        raise ValueError(f"ddof must be an int in [0, {count}) for {count} reduced elements, "
                         f"got {ddof!r}")
    xc = be.to_compute(x)
    view_plan = be.plan(xc, kept_axes)
    _, mean, m2 = be.moments(be.canonical(xc, view_plan))
    var = be.divide(m2, count - ddof)
    shape_back = lambda v: be.export(be.kept_shape(be.like(v, x), x.shape, view_plan), caller)
    return shape_back(mean), shape_back(var)
