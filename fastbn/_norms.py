"""Functional layer, group, instance and RMS norm: validate once, pick the backend, launch.

Each normalises the rows of a canonical ``(R, K)`` view with the row's own
statistics (float64, chunked Welford/Chan, deterministic), then applies an
affine map that is per element (layer/RMS norm) or per channel (group and
instance norm):

================  ========================  ============================  ==============
op                rows ``R``                row length ``K``              statistics
================  ========================  ============================  ==============
layer norm        ``prod(x.shape[:-d])``    ``prod(normalized_shape)``    ``x.shape[:-d]``
RMS norm          ``prod(x.shape[:-d])``    ``prod(normalized_shape)``    ``x.shape[:-d]``
group norm        ``N * num_groups``        ``C / num_groups * prod(*)``  ``(N, G)``
instance norm     ``N * C``                 ``prod(*)``                   ``(N, C)``
================  ========================  ============================  ==============

Every op comes in three forms with one convention:

* ``op(x, ...) -> y``: the meaning of its ``torch.nn.functional`` namesake;
* ``op_train(x, ...) -> (y, *stats)``: the same forward plus the float64
  statistics the backward needs: ``(mean, invstd)``, or ``(invstd,)`` for RMS
  norm, shaped as in the table, ``invstd = 1 / sqrt(biased_var + eps)``;
* ``op_backward(dy, x, *stats, <op's shape argument>, weight=None) ->
  (dx, dweight, dbias)``: ``dweight``/``dbias`` are None when ``weight`` is None
  (``dbias`` always None for RMS norm, which has no bias).

The four ops share ``_forward``/``_backward`` below; each public function
only validates its arguments and describes its geometry (``_Rows``).
"""

import math
from typing import NamedTuple

from . import _dispatch, _validate
from . import _validate_norms as _vn

_BACKENDS = {"cpu": "fastbn._backend_cpu_rowwise", "cuda": "fastbn._cuda.backend_rowwise"}


def _backend(x, device):
    return _dispatch.backend(x, device, _BACKENDS)


class _Rows(NamedTuple):
    """One call's geometry: ``R`` rows of ``K``; element ``i`` of row ``r`` has affine channel
    ``(r % G) * (K // inner) + i // inner``."""

    R: int
    K: int
    G: int
    inner: int
    channels: int        # length of the (flattened) weight and bias
    stats_shape: tuple   # shape of the returned mean / invstd


def _rows(x, R, K, G, inner, channels, stats_shape):
    if K == 0:
        raise ValueError(f"x of shape {tuple(x.shape)} has no elements to normalise over")
    return _Rows(R, K, G, inner, channels, tuple(stats_shape))


def _layer_rows(x, normalized_shape, weight, bias):
    shape = _vn.normalized_shape_tuple(normalized_shape, x.shape)
    _vn.affine_array(weight, shape, "weight", "normalized_shape")
    _vn.affine_array(bias, shape, "bias", "normalized_shape")
    lead = x.shape[:x.ndim - len(shape)]
    K = math.prod(shape)
    return _rows(x, math.prod(lead), K, 1, 1, K, lead)


def _channel_rows(x, num_groups, weight, bias):
    """Group norm's geometry; instance norm is ``num_groups = C``."""
    N, C = x.shape[0], x.shape[1]
    _vn.affine_array(weight, (C,), "weight", "one value per channel")
    _vn.affine_array(bias, (C,), "bias", "one value per channel")
    inner = math.prod(x.shape[2:])
    return _rows(x, N * num_groups, C // num_groups * inner, num_groups, inner, C,
                 (N, num_groups))


def _forward(be, x, geo, weight, bias, eps, centered):
    """``(y, mean, invstd, biased_var)``, the statistics float64 in ``geo.stats_shape``."""
    xc = be.to_compute(x)
    y, y3 = be.empty_rows(x.shape, xc.dtype, geo.R, geo.K)
    stats = be.forward(be.rows(xc, geo.R, geo.K), geo.G, geo.inner,
                       be.vector64(weight, geo.channels, 1.0), be.vector64(bias, geo.channels, 0.0),
                       eps, centered, y3)
    return (be.cast(y, x.dtype),) + tuple(s.reshape(geo.stats_shape) for s in stats)


def _exported(be, x, results):
    """``results`` as the kind of the caller's array behind ``x`` (torch in, torch out)."""
    return tuple(be.export(a, x) for a in results)


def _normalize(be, x, geo, mean, invstd, weight, bias):
    """``y`` from given per-row statistics (float64 of ``geo.stats_shape`` or broadcastable)."""
    xc = be.to_compute(x)
    y, y3 = be.empty_rows(x.shape, xc.dtype, geo.R, geo.K)
    per_row = lambda v: be.broadcast_rows(v, geo.stats_shape)
    be.normalize(be.rows(xc, geo.R, geo.K), geo.G, geo.inner, per_row(mean), per_row(invstd),
                 be.vector64(weight, geo.channels, 1.0), be.vector64(bias, geo.channels, 0.0), y3)
    return be.export(be.cast(y, x.dtype), x)


def _backward(be, dy, x, geo, mean, invstd, weight, centered, batch_stats=True, stats_shapes=()):
    """``(dx, dweight, dbias)``; ``mean`` is None for RMS norm (then no dbias)."""
    dy = be.as_input(dy, "dy")
    _validate.same_shape(dy, x.shape, "dy")
    shapes = (geo.stats_shape,) + tuple(stats_shapes)
    if mean is not None:
        mean = _vn.stats_array(mean, shapes, "mean")
    invstd = _vn.stats_array(invstd, shapes, "invstd")
    xc = be.to_compute(x)
    dx, dx3 = be.empty_rows(x.shape, xc.dtype, geo.R, geo.K)
    rows = lambda a: be.rows(be.cast(a, xc.dtype), geo.R, geo.K)
    mean64 = be.broadcast_rows(0.0 if mean is None else mean, geo.stats_shape)
    dw, db = be.backward(rows(dy), rows(x), geo.G, geo.inner, mean64,
                         be.broadcast_rows(invstd, geo.stats_shape),
                         be.vector64(weight, geo.channels, 1.0), centered, batch_stats,
                         weight is not None, dx3)
    dx = be.cast(dx, x.dtype)
    if weight is None:
        return be.export(dx, x), None, None
    shape_back = lambda g: be.like(g, weight).reshape(weight.shape)
    return _exported(be, x, (dx, shape_back(dw), shape_back(db) if centered else None))


# --- layer norm and RMS norm -------------------------------------------------------------------


def layer_norm_train(x, normalized_shape, weight=None, bias=None, eps=1e-5, *, device=None):
    """Layer norm that also returns the statistics its backward needs.

    ``y = (x - mean) * invstd * weight + bias`` with ``mean`` and the *biased*
    variance over the trailing ``normalized_shape`` dimensions of each sample.

    Parameters
    ----------
    x : array of shape (*, *normalized_shape), float16/32/64
    normalized_shape : int or tuple of ints, the trailing dimensions of x
    weight, bias : arrays of shape normalized_shape, or None
    eps : float >= 0
    device : None, "cpu" or "cuda"

    Returns
    -------
    y : array like x
    mean, invstd : float64 arrays of shape x.shape[:-len(normalized_shape)]

    Raises
    ------
    TypeError, ValueError
        For bad arguments, before anything is computed.
    """
    be = _backend(x, device)
    x = be.as_input(x, "x")
    geo = _layer_rows(x, normalized_shape, weight, bias)
    eps = _validate.eps_value(eps)
    return _exported(be, x, _forward(be, x, geo, weight, bias, eps, True)[:3])


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, *, device=None):
    """Layer norm with the meaning of ``torch.nn.functional.layer_norm``; returns ``y``.

    See :func:`layer_norm_train` for the parameters.
    """
    return layer_norm_train(x, normalized_shape, weight, bias, eps, device=device)[0]


def layer_norm_backward(dy, x, mean, invstd, normalized_shape, weight=None, *, device=None):
    """Gradients of layer norm from the forward's ``mean`` and ``invstd``.

    With ``xhat = (x - mean) * invstd`` and ``g = dy * weight`` per row:
    ``dx = invstd * (g - mean(g) - xhat * mean(g * xhat))``, ``dweight = sum dy * xhat``
    and ``dbias = sum dy`` over the leading dimensions.

    Parameters
    ----------
    dy, x : arrays of the same shape (*, *normalized_shape)
    mean, invstd : arrays of shape x.shape[:-len(normalized_shape)], from the forward
    normalized_shape : int or tuple of ints
    weight : array of shape normalized_shape, or None (then dweight and dbias are None)
    device : None, "cpu" or "cuda"

    Returns
    -------
    dx : array like x
    dweight, dbias : arrays of shape normalized_shape in weight's dtype, or None
    """
    be = _backend(x, device)
    x = be.as_input(x, "x")
    geo = _layer_rows(x, normalized_shape, weight, None)
    return _backward(be, dy, x, geo, mean, invstd, weight, True)


def rms_norm_train(x, normalized_shape, weight=None, eps=None, *, device=None):
    """RMS norm that also returns the statistic its backward needs.

    ``y = x * invstd * weight`` with ``invstd = 1 / sqrt(mean(x**2) + eps)`` over
    the trailing ``normalized_shape`` dimensions of each sample.

    Parameters
    ----------
    x : array of shape (*, *normalized_shape), float16/32/64
    normalized_shape : int or tuple of ints, the trailing dimensions of x
    weight : array of shape normalized_shape, or None
    eps : float >= 0, or None for ``numpy.finfo(x.dtype).eps`` (as in PyTorch)
    device : None, "cpu" or "cuda"

    Returns
    -------
    y : array like x
    invstd : float64 array of shape x.shape[:-len(normalized_shape)]

    Raises
    ------
    TypeError, ValueError
        For bad arguments, before anything is computed.
    """
    be = _backend(x, device)
    x = be.as_input(x, "x")
    geo = _layer_rows(x, normalized_shape, weight, None)
    eps = _vn.rms_eps(eps, x.dtype)
    y, _, invstd, _ = _forward(be, x, geo, weight, None, eps, False)
    return _exported(be, x, (y, invstd))


def rms_norm(x, normalized_shape, weight=None, eps=None, *, device=None):
    """RMS norm with the meaning of ``torch.nn.functional.rms_norm``; returns ``y``.

    See :func:`rms_norm_train` for the parameters.
    """
    return rms_norm_train(x, normalized_shape, weight, eps, device=device)[0]


def rms_norm_backward(dy, x, invstd, normalized_shape, weight=None, *, device=None):
    """Gradients of RMS norm from the forward's ``invstd``.

    With ``xhat = x * invstd`` and ``g = dy * weight`` per row:
    ``dx = invstd * (g - xhat * mean(g * xhat))`` and ``dweight = sum dy * xhat``.

    Parameters
    ----------
    dy, x : arrays of the same shape (*, *normalized_shape)
    invstd : array of shape x.shape[:-len(normalized_shape)], from the forward
    normalized_shape : int or tuple of ints
    weight : array of shape normalized_shape, or None (then dweight is None)
    device : None, "cpu" or "cuda"

    Returns
    -------
    (dx, dweight, None)
    """
    be = _backend(x, device)
    x = be.as_input(x, "x")
    geo = _layer_rows(x, normalized_shape, weight, None)
    return _backward(be, dy, x, geo, None, invstd, weight, False)
