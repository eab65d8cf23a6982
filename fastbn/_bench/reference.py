"""Straightforward vectorised NumPy normalizations: the baseline a user would write.

These are benchmark baselines, not test oracles (those live in ``tests/``): they
compute in the input's dtype with whole-array NumPy expressions and allocate
their temporaries, as typical NumPy code does.  Per-channel statistics use the
biased variance.
"""

import math

import numpy as np


def _channel_layout(ndim, axis):
    """The reduced axes and a broadcast shape for per-channel vectors."""
    axis = axis % ndim
    reduced = tuple(i for i in range(ndim) if i != axis)
    shape = tuple(-1 if i == axis else 1 for i in range(ndim))
    return reduced, shape


def batch_norm_train(x, weight, bias, eps, axis):
    """Training forward: returns ``(y, mean, invstd)`` with per-channel batch statistics."""
    reduced, shape = _channel_layout(x.ndim, axis)
    mean = x.mean(axis=reduced)
    invstd = 1.0 / np.sqrt(x.var(axis=reduced) + eps)
    y = (x - mean.reshape(shape)) * (invstd * weight).reshape(shape) + bias.reshape(shape)
    return y, mean, invstd


def batch_norm_backward(dy, x, mean, invstd, weight, axis):
    """Backward with batch statistics: returns ``(dx, dweight, dbias)``."""
    reduced, shape = _channel_layout(x.ndim, axis)
    n = x.size // x.shape[axis % x.ndim]
    xhat = (x - mean.reshape(shape)) * invstd.reshape(shape)
    dbias = dy.sum(axis=reduced)
    dweight = (dy * xhat).sum(axis=reduced)
    dx = (weight * invstd / n).reshape(shape) * (
        n * dy - dbias.reshape(shape) - xhat * dweight.reshape(shape))
    return dx, dweight, dbias


def batch_norm_eval(x, running_mean, running_var, weight, bias, eps, axis):
    """Eval forward with the running statistics (``running_var`` unbiased, as stored)."""
    _, shape = _channel_layout(x.ndim, axis)
    scale = weight / np.sqrt(running_var + eps)
    shift = bias - running_mean * scale
    return x * scale.reshape(shape) + shift.reshape(shape)


def _row_moments(rows, eps):
    mean = rows.mean(axis=-1, keepdims=True)
    invstd = 1.0 / np.sqrt(rows.var(axis=-1, keepdims=True) + eps)
    return mean, invstd


def _row_input_grad(g, xhat, invstd):
    """dx of a row normalization from ``g`` (dy through the affine weight)."""
    return invstd * (g - g.mean(axis=-1, keepdims=True)
                     - xhat * (g * xhat).mean(axis=-1, keepdims=True))


def layer_norm(x, normalized_shape, weight, bias, eps):
    """Layer norm over the trailing ``normalized_shape``: returns ``(y, mean, invstd)``."""
    rows = x.reshape(-1, math.prod(normalized_shape))
    mean, invstd = _row_moments(rows, eps)
    y = ((rows - mean) * invstd).reshape(x.shape) * weight + bias
    return y, mean, invstd


def layer_norm_backward(dy, x, mean, invstd, normalized_shape, weight):
    """Returns ``(dx, dweight, dbias)`` of :func:`layer_norm`."""
    k = math.prod(normalized_shape)
    rows, dyr = x.reshape(-1, k), dy.reshape(-1, k)
    xhat = (rows - mean) * invstd
    dweight = (dyr * xhat).sum(axis=0).reshape(normalized_shape)
    dbias = dyr.sum(axis=0).reshape(normalized_shape)
    dx = _row_input_grad(dyr * weight.reshape(-1), xhat, invstd)
    return dx.reshape(x.shape), dweight, dbias


def group_norm(x, num_groups, weight, bias, eps):
    """Group norm of ``(N, C, *)`` (instance norm is ``num_groups == C``): ``(y, mean, invstd)``."""
    n, c = x.shape[:2]
    mean, invstd = _row_moments(x.reshape(n, num_groups, -1), eps)
    xhat = ((x.reshape(n, num_groups, -1) - mean) * invstd).reshape(n, c, -1)
    y = xhat * weight[:, None] + bias[:, None]
    return y.reshape(x.shape), mean, invstd


def group_norm_backward(dy, x, mean, invstd, num_groups, weight):
    """Returns ``(dx, dweight, dbias)`` of :func:`group_norm`."""
    n, c = x.shape[:2]
    xhat = (x.reshape(n, num_groups, -1) - mean) * invstd
    dyc = dy.reshape(n, c, -1)
    dweight = (dyc * xhat.reshape(n, c, -1)).sum(axis=(0, 2))
    dbias = dyc.sum(axis=(0, 2))
    g = (dyc * weight[:, None]).reshape(n, num_groups, -1)
    return _row_input_grad(g, xhat, invstd).reshape(x.shape), dweight, dbias
