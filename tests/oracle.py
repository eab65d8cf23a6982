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


# --- row-wise norms: layer, RMS, group and instance norm ---------------------------------------


def _norm_rows(x, lead, centered, eps):
    """``(rows, xhat, invstd)``: x as float64 ``(R, K)`` rows of the first ``lead`` dims."""
    x = np.asarray(x, dtype=np.float64)
    rows = x.reshape(int(np.prod(x.shape[:lead], dtype=np.int64)), -1)
    mean = rows.mean(axis=1, keepdims=True) if centered else np.zeros((rows.shape[0], 1))
    invstd = 1.0 / np.sqrt(((rows - mean) ** 2).mean(axis=1, keepdims=True) + eps)
    return rows, (rows - mean) * invstd, mean[:, 0], invstd[:, 0]


def _rows_backward(dy_rows, xhat, invstd, w_rows, centered):
    """dx of ``y = xhat * w (+ b)`` for rows normalised with their own statistics."""
    g = dy_rows * w_rows
    proj = xhat * (g * xhat).mean(axis=1, keepdims=True)
    dx = g - proj - (g.mean(axis=1, keepdims=True) if centered else 0.0)
    return dx * invstd[:, None]


def layer_norm_ref(x, normalized_shape, weight=None, bias=None, eps=1e-5, centered=True):
    """Layer norm (RMS norm with ``centered=False``): ``(y, mean, invstd)`` in float64."""
    shape = (normalized_shape,) if np.isscalar(normalized_shape) else tuple(normalized_shape)
    lead = x.ndim - len(shape)
    _, xhat, mean, invstd = _norm_rows(x, lead, centered, eps)
    y = xhat.reshape(x.shape)
    if weight is not None:
        y = y * np.asarray(weight, np.float64)
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    return y, mean.reshape(x.shape[:lead]), invstd.reshape(x.shape[:lead])


def rms_norm_ref(x, normalized_shape, weight=None, eps=None):
    """RMS norm: ``(y, invstd)``; eps None is the input dtype's machine epsilon."""
    eps = np.finfo(x.dtype).eps if eps is None else eps
    y, _, invstd = layer_norm_ref(x, normalized_shape, weight, None, eps, centered=False)
    return y, invstd


def layer_norm_backward_ref(dy, x, normalized_shape, weight=None, eps=1e-5, centered=True):
    """``(dx, dweight, dbias)`` of layer norm (RMS norm with ``centered=False``), float64."""
    shape = (normalized_shape,) if np.isscalar(normalized_shape) else tuple(normalized_shape)
    lead = x.ndim - len(shape)
    _, xhat, _, invstd = _norm_rows(x, lead, centered, eps)
    dy_rows = np.asarray(dy, np.float64).reshape(xhat.shape)
    w = np.ones(shape) if weight is None else np.asarray(weight, np.float64)
    dx = _rows_backward(dy_rows, xhat, invstd, w.reshape(1, -1), centered)
    return (dx.reshape(x.shape), (dy_rows * xhat).sum(axis=0).reshape(shape),
            dy_rows.sum(axis=0).reshape(shape))


def group_norm_ref(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Group norm of ``(N, C, *)``: ``(y, mean, invstd)`` with statistics of shape (N, G)."""
    N, C = x.shape[:2]
    grouped = np.asarray(x, np.float64).reshape(N, num_groups, -1)
    _, xhat, mean, invstd = _norm_rows(grouped, 2, True, eps)
    y = xhat.reshape(N, C, -1)
    if weight is not None:
        y = y * np.asarray(weight, np.float64)[None, :, None]
    if bias is not None:
        y = y + np.asarray(bias, np.float64)[None, :, None]
    return y.reshape(x.shape), mean.reshape(N, num_groups), invstd.reshape(N, num_groups)


def group_norm_backward_ref(dy, x, num_groups, weight=None, eps=1e-5):
    """``(dx, dweight, dbias)`` of group norm, float64."""
    N, C = x.shape[:2]
    grouped = np.asarray(x, np.float64).reshape(N, num_groups, -1)
    _, xhat, _, invstd = _norm_rows(grouped, 2, True, eps)
    dy_c = np.asarray(dy, np.float64).reshape(N, C, -1)
    w = np.ones(C) if weight is None else np.asarray(weight, np.float64)
    w_rows = np.broadcast_to(w[None, :, None], dy_c.shape).reshape(xhat.shape)
    dx = _rows_backward(dy_c.reshape(xhat.shape), xhat, invstd, w_rows, True)
    xhat_c = xhat.reshape(dy_c.shape)
    return dx.reshape(x.shape), (dy_c * xhat_c).sum(axis=(0, 2)), dy_c.sum(axis=(0, 2))


def instance_norm_ref(x, weight=None, bias=None, eps=1e-5):
    """Instance norm with the input's statistics: group norm with one channel per group."""
    return group_norm_ref(x, x.shape[1], weight, bias, eps)


def instance_norm_backward_ref(dy, x, weight=None, eps=1e-5):
    """``(dx, dweight, dbias)`` of instance norm with the input's statistics."""
    return group_norm_backward_ref(dy, x, x.shape[1], weight, eps)
