"""Slow, obviously-correct float64 NumPy references shared by the CPU and CUDA tests.

Nothing here calls fastbn: every function is written from the textbook
formulas, in float64, with the channel axis moved to the front.
"""

import numpy as np


def _channel_first(a, axis):
    """``a`` as float64 of shape (C, M): channel rows, every other axis flattened."""
    return np.moveaxis(np.asarray(a, dtype=np.float64), axis, 0).reshape(a.shape[axis], -1)


def _restore(rows, shape, axis):
    moved = list(shape)
    moved.insert(0, moved.pop(axis))
    return np.moveaxis(rows.reshape(moved), 0, axis)


def batch_stats_ref(x, axis=1):
    """Per-channel mean, biased and unbiased variance."""
    rows = _channel_first(x, axis)
    mean = rows.mean(axis=1)
    dev = rows - mean[:, None]
    m2 = (dev * dev).sum(axis=1)
    n = rows.shape[1]
    return mean, m2 / n, m2 / (n - 1) if n > 1 else np.full_like(mean, np.nan)


def batch_norm_ref(x, mean, var, weight=None, bias=None, eps=1e-5, axis=1, residual=None,
                   activation=None):
    """``act((x - mean) / sqrt(var + eps) * weight + bias [+ residual])`` in float64."""
    rows = _channel_first(x, axis)
    w = np.ones(rows.shape[0]) if weight is None else np.asarray(weight, np.float64)
    b = np.zeros(rows.shape[0]) if bias is None else np.asarray(bias, np.float64)
    y = (rows - mean[:, None]) / np.sqrt(var[:, None] + eps) * w[:, None] + b[:, None]
    y = _restore(y, x.shape, axis)
    if residual is not None:
        y = y + np.asarray(residual, np.float64)
    if activation == "relu":
        y = np.maximum(y, 0.0)
    return y


def batch_norm_train_ref(x, weight=None, bias=None, eps=1e-5, axis=1, residual=None,
                         activation=None):
    """Training forward: ``(y, mean, biased_var, unbiased_var)``."""
    mean, var, unbiased = batch_stats_ref(x, axis)
    y = batch_norm_ref(x, mean, var, weight, bias, eps, axis, residual, activation)
    return y, mean, var, unbiased


def batch_norm_backward_ref(dy, x, weight=None, bias=None, eps=1e-5, axis=1, batch_stats=True,
                            mean=None, var=None, residual=None, activation=None):
    """Analytic gradients ``(dx, dweight, dbias, dresidual)`` in float64.

    With ``batch_stats`` the statistics are those of ``x`` and depend on it;
    otherwise ``mean``/``var`` are constants (frozen, eval-mode statistics).
    """
    if batch_stats:
        mean, var, _ = batch_stats_ref(x, axis)
    rows = _channel_first(x, axis)
    g = np.asarray(dy, np.float64)
    if activation == "relu":
        pre = batch_norm_ref(x, mean, var, weight, bias, eps, axis, residual)
        g = np.where(pre > 0, g, 0.0)
    grows = _channel_first(g, axis)
    C, n = rows.shape
    w = np.ones(C) if weight is None else np.asarray(weight, np.float64)
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = (rows - mean[:, None]) * invstd[:, None]
    dbias = grows.sum(axis=1)
    dweight = (grows * xhat).sum(axis=1)
    if batch_stats:
        dxhat = grows * w[:, None]
        dx = invstd[:, None] / n * (n * dxhat - dxhat.sum(axis=1)[:, None]
                                     - xhat * (dxhat * xhat).sum(axis=1)[:, None])
    else:
        dx = grows * (w * invstd)[:, None]
    return _restore(dx, x.shape, axis), dweight, dbias, g


def numerical_grad(f, x, dy, h=1e-6):
    """Central finite differences of ``sum(f(x) * dy)`` with respect to ``x`` (float64)."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + h
        up = (f(x) * dy).sum()
        flat[i] = keep - h
        down = (f(x) * dy).sum()
        flat[i] = keep
        gflat[i] = (up - down) / (2 * h)
    return grad
