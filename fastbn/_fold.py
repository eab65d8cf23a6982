"""Fold an eval-mode batch norm into the layer before it (conv+bn fusion)."""

import numbers
from collections.abc import Mapping

import numpy as np


def _real_array(value, name, *, floating=False):
    arr = np.asarray(value)
    kinds = "f" if floating else "fiu"
    if arr.dtype.kind not in kinds:
        what = "a floating" if floating else "a real numeric"
        raise TypeError(f"{name} must have {what} dtype, got {arr.dtype}")
    return arr


def _bn_params(bn):
    """(running_mean, running_var, weight, bias, eps) of a layer or mapping."""
    if isinstance(bn, Mapping):
        for key in ("running_mean", "running_var"):
            if key not in bn:
                raise ValueError(f"bn mapping is missing the key {key!r}")
        values = [bn[k] if k in bn else None
                  for k in ("running_mean", "running_var", "weight", "bias")]
        eps = bn.get("eps", 1e-5)
    elif all(hasattr(bn, a) for a in ("running_mean", "running_var", "weight", "bias", "eps")):
        values = [bn.running_mean, bn.running_var, bn.weight, bn.bias]
        eps = bn.eps
    else:
        raise TypeError("bn must be a batch norm layer or a mapping with 'running_mean', "
                        f"'running_var', 'weight' and 'bias', got {type(bn).__name__}")
    if values[0] is None or values[1] is None:
        raise ValueError("bn has no running statistics (track_running_stats=False?)")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps >= 0:
        raise ValueError(f"bn eps must be a real number >= 0, got {eps!r}")
    names = ("running_mean", "running_var", "weight", "bias")
    arrays = [None if v is None else _real_array(v, f"bn {n}") for n, v in zip(names, values)]
    return (*arrays, float(eps))


def fold_batchnorm(weight, bias, bn, *, transposed=False, groups=1):
    """Fold an eval-mode batch norm into the weight and bias of the layer before it.

    With ``k = bn.weight / sqrt(bn.running_var + eps)`` per output channel (the
    running variance as stored, unbiased), ``layer'(x) = bn(layer(x))`` in eval
    mode for ``weight' = weight * k`` along the output-channel axis and
    ``bias' = (bias - running_mean) * k + bn.bias``.  Computed in float64.

    Parameters
    ----------
    weight : array_like
        Linear ``(out, in)``, convolution ``(out, in / groups, *kernel)``
        (grouped and depthwise included) or, with ``transposed=True``,
        transposed convolution ``(in, out / groups, *kernel)`` weight; floating.
    bias : array_like of shape (out,) or None
        The layer's bias; None is treated as zeros.
    bn : batch norm layer or mapping
        A fastbn batch norm layer (``running_mean``, ``running_var``,
        ``weight``, ``bias``, ``eps``) or a mapping with ``running_mean`` and
        ``running_var``, optionally ``weight``, ``bias`` (None or absent: 1 and
        0) and ``eps`` (default 1e-5), e.g. a PyTorch state dict as NumPy.
    transposed : bool, optional
        ``weight`` is a transposed convolution's: the output channel of
        ``weight[i, j]`` is ``(i // (in / groups)) * (out / groups) + j``.
    groups : int, optional
        The layer's groups (only the transposed layout depends on it).

    Returns
    -------
    weight, bias : numpy.ndarray
        New arrays in ``weight``'s dtype; ``bias`` has shape ``(out,)``.  The
        inputs are not modified.

    Raises
    ------
    TypeError
        If ``weight`` is not floating, a parameter not real numeric, or ``bn``
        neither a layer nor a mapping.
    ValueError
        If shapes, ``groups`` or channel counts disagree, ``bn`` lacks running
        statistics or a key, or ``running_var + eps`` is not positive.
    """
    w = _real_array(weight, "weight", floating=True)
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"groups must be an int >= 1, got {groups!r}")
    if w.ndim < (3 if transposed else 2):
        raise ValueError(f"weight must have at least {3 if transposed else 2} dims "
                         f"({'(in, out/groups, *kernel)' if transposed else '(out, in[, *kernel])'}), "
                         f"got shape {w.shape}")
    if w.ndim == 2 and groups != 1:
        raise ValueError(f"groups must be 1 for a linear weight, got {groups}")
    if w.shape[0] % groups:
        raise ValueError(f"groups={groups} does not divide weight.shape[0]={w.shape[0]}")
    out = w.shape[1] * groups if transposed else w.shape[0]
    rm, rv, gamma, beta, eps = _bn_params(bn)
    b = None if bias is None else _real_array(bias, "bias")
    for name, arr in (("bias", b), ("bn running_mean", rm), ("bn running_var", rv),
                      ("bn weight", gamma), ("bn bias", beta)):
        if arr is not None and arr.shape != (out,):
            raise ValueError(f"{name} must have shape ({out},) (the layer's output "
                             f"channels), got {arr.shape}")
    var = rv.astype(np.float64) + eps
    if not np.all(var > 0):
        raise ValueError("bn running_var + eps must be positive (and not NaN)")

    k = 1.0 / np.sqrt(var)
    if gamma is not None:
        k = k * gamma
    shift = np.zeros(out) if beta is None else beta.astype(np.float64)
    b64 = np.zeros(out) if b is None else b.astype(np.float64)
    new_bias = (b64 - rm) * k + shift
    kernel = w.shape[2:]
    if transposed:
        scale = k.reshape(groups, 1, w.shape[1], *(1,) * len(kernel))
        w64 = w.astype(np.float64).reshape(groups, w.shape[0] // groups, *w.shape[1:])
        new_weight = (w64 * scale).reshape(w.shape)
    else:
        new_weight = w.astype(np.float64) * k.reshape(out, *(1,) * (w.ndim - 1))
    return new_weight.astype(w.dtype), new_bias.astype(w.dtype)
