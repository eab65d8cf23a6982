"""Batch Renormalization (Ioffe, 2017) on the existing batch norm kernels.

Training with renorm normalises with the batch statistics and then corrects
towards the running statistics::

    r = clip(sigma_B / sigma, 1 / rmax, rmax)
    d = clip((mu_B - mu) / sigma, -dmax, dmax)
    y = weight * (xhat * r + d) + bias = xhat * (weight * r) + (bias + weight * d)

with ``sigma_B = sqrt(biased_var_B + eps)`` and ``mu``, ``sigma = sqrt(running_var
+ eps)`` the running statistics as they were *before* the step.  ``r`` and ``d``
are constants for the backward pass (as in the paper), so renorm is plain batch
norm with the per-channel affine map ``(weight * r, bias + weight * d)``: the
statistics come from the backend's moments, the output from the normalise
kernel with that affine epilogue, and the gradients from
:func:`fastbn.batch_norm_backward` plus ``dweight = r * sum(g * xhat) + d * sum(g)``.
No kernel is duplicated.  Inference is unchanged (plain eval batch norm).
"""

import math
import numbers

import numpy as np

from . import _dispatch, _validate
from ._batchnorm import _Prepared, batch_norm, batch_norm_backward


def _limit(value, name, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value) \
            or value < low:
        raise ValueError(f"{name} must be a real number >= {low}, got {value!r}")
    return float(value)


def renorm_limits(rmax, dmax):
    """Check ``rmax >= 1`` and ``dmax >= 0`` (``inf`` disables a clip); returns floats."""
    return _limit(rmax, "rmax", 1.0), _limit(dmax, "dmax", 0.0)


def batch_moments(x, axis=1, *, device=None):
    """Per-channel ``(count, mean, m2)`` of a training batch, float64.

    ``count`` is the number of values per channel, ``m2`` the sum of squared
    deviations (biased variance ``m2 / count``, unbiased ``m2 / (count - 1)``);
    exactly the statistics :func:`fastbn.batch_norm_train` normalises with.

    Raises
    ------
    TypeError, ValueError
        For a bad ``x`` or ``axis``, or a single value per channel.
    """
    return _moments(_Prepared(_dispatch.backend(x, device), x, axis))


def _moments(prep):
    if prep.count < 2:
        raise ValueError(f"expected more than 1 value per channel for batch statistics, got x of "
                         f"shape {tuple(prep.x.shape)} with {prep.count} value(s) per channel")
    _, mean, m2 = prep.be.moments(prep.view(prep.xc))
    return prep.count, mean, m2


def renorm_correction(mean, biased_var, running_mean, running_var, eps, rmax, dmax):
    """The paper's per-channel ``(r, d)`` (float64) from batch and running statistics.

    ``rmax`` and ``dmax`` are trusted to have passed :func:`renorm_limits`.
    """
    sigma = np.sqrt(np.asarray(running_var, np.float64) + eps)
    r = np.clip(np.sqrt(biased_var + eps) / sigma, 1.0 / rmax, rmax)
    d = np.clip((mean - np.asarray(running_mean, np.float64)) / sigma, -dmax, dmax)
    return r, d


def effective_affine(weight, bias, r, d):
    """``(weight * r, bias + weight * d)`` in float64 (weight None is 1, bias None is 0)."""
    w = np.ones_like(r) if weight is None else np.asarray(weight, np.float64)
    b = np.zeros_like(r) if bias is None else np.asarray(bias, np.float64)
    return w * r, b + w * d


def batch_renorm_train(x, running_mean, running_var, weight=None, bias=None, eps=1e-5, *, axis=1,
                       rmax=3.0, dmax=5.0, momentum=0.1, update_running=True, out=None,
                       device=None, activation=None, residual=None):
    """Training-mode Batch Renormalization.

    Parameters
    ----------
    x : array, shape (N, C, *) (channel at ``axis``)
    running_mean, running_var : arrays of shape (C,)
        The running statistics (``running_var`` unbiased, as in PyTorch) that
        ``r`` and ``d`` are computed from; with ``update_running`` they are then
        updated in place like :func:`fastbn.batch_norm_train` does (a batch with
        non-finite statistics is skipped with a ``RuntimeWarning``).
    weight, bias : arrays of shape (C,) or None
    eps : float >= 0
    rmax : float >= 1, dmax : float >= 0
        The clipping limits (``rmax=1, dmax=0`` is plain batch norm).
    momentum : float in [0, 1]
    update_running : bool
    axis, out, device, activation, residual : as in :func:`fastbn.batch_norm_train`

    Returns
    -------
    y : array like x
    mean, invstd : float64 (C,), the batch statistics (``invstd = 1/sqrt(biased_var + eps)``)
    r, d : float64 (C,), the corrections, constants for :func:`batch_renorm_backward`

    Raises
    ------
    TypeError, ValueError
        For bad arguments, before anything is computed or updated; TypeError
        for CUDA arrays or ``device="cuda"`` (renorm runs on the CPU only).
    """
    return _batch_renorm_train(x, running_mean, running_var, weight, bias, eps, axis=axis,
                               rmax=rmax, dmax=dmax, momentum=momentum,
                               update_running=update_running, out=out, device=device,
                               activation=activation, residual=residual)[:5]


def _batch_renorm_train(x, running_mean, running_var, weight, bias, eps, *, axis, rmax, dmax,
                        momentum, update_running, out, device, activation, residual):
    """:func:`batch_renorm_train` returning ``(y, mean, invstd, r, d, updated)``.

    ``updated``: whether the running buffers were updated (False without
    ``update_running`` or for a batch with non-finite statistics).
    """
    if running_mean is None or running_var is None:
        raise ValueError("running_mean and running_var are required for batch renormalization")
    prep = _Prepared(_cpu_backend(x, device), x, axis)
    for name, v in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                    ("running_var", running_var)):
        _validate.channel_vector(v, prep.channels, name,
                                 writable=update_running and name.startswith("running"))
    eps = _validate.eps_value(eps)
    momentum = _validate.momentum_value(momentum)
    rmax, dmax = renorm_limits(rmax, dmax)
    count, mean, m2 = _moments(prep)
    biased_var = m2 / count
    r, d = renorm_correction(mean, biased_var, running_mean, running_var, eps, rmax, dmax)
    w_eff, b_eff = effective_affine(weight, bias, r, d)
    y = batch_norm(x, mean, biased_var, w_eff, b_eff, False, eps=eps, axis=axis, out=out,
                   device=device, activation=activation, residual=residual)
    updated = bool(update_running) and prep.be.update_running(
        running_mean, running_var, mean, m2 / (count - 1), momentum)
    return y, mean, 1.0 / np.sqrt(biased_var + eps), r, d, updated


def _cpu_backend(x, device):
    """The CPU backend, or a TypeError: r and d are NumPy arithmetic on the batch statistics."""
    be = _dispatch.backend(x, device)
    if be.name != "cpu":
        raise TypeError("batch renormalization (renorm=True) runs on the CPU only, got a CUDA "
                        "array or device='cuda': pass NumPy arrays, or use renorm=False on the GPU")
    return be


def batch_renorm_backward(dy, x, mean, invstd, r, d, weight=None, *, axis=1, bias=None,
                          activation=None, output=None, residual=False, out=None, device=None):
    """Gradients of :func:`batch_renorm_train` with ``r`` and ``d`` held constant.

    ``dx`` is batch norm's input gradient with weight ``weight * r``;
    ``dweight = r * sum(g * xhat) + d * sum(g)``, ``dbias = sum(g)``.

    Returns
    -------
    (dx, dweight, dbias) or, with ``residual=True``, (dx, dweight, dbias, dresidual);
    ``dweight``/``dbias`` are None when ``weight`` is None.

    Raises
    ------
    TypeError
        For CUDA arrays or ``device="cuda"`` (renorm runs on the CPU only).
    """
    _cpu_backend(x, device)
    r, d = np.asarray(r, np.float64), np.asarray(d, np.float64)
    w_eff, b_eff = effective_affine(weight, bias, r, d)
    dx, dxhat_w, dbias, *rest = batch_norm_backward(
        dy, x, mean, invstd, w_eff, axis=axis, out=out, device=device, bias=b_eff,
        activation=activation, output=output, residual=residual, batch_stats=True)
    if weight is None:
        return (dx, None, None, *rest)
    dtype = getattr(weight, "dtype", np.float64)
    dweight = r * dxhat_w + d * dbias
    return (dx, dweight.astype(dtype), dbias.astype(dtype), *rest)
