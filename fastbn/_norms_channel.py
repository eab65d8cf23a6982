"""Functional group and instance norm: the per-channel-affine members of the row-wise norms.

Same three forms and conventions as ``fastbn._norms`` (``op``, ``op_train``,
``op_backward``).  Group norm's rows are ``(sample, group)`` pairs and instance
norm's ``(sample, channel)`` pairs; the affine map is per channel ``C``.
"""

import numpy as np

from . import _validate
from . import _validate_norms as _vn
from ._norms import _backend, _backward, _channel_rows, _exported, _forward, _normalize


def _group_geometry(be, x, num_groups, weight, bias):
    x = be.as_input(x, "x")
    _validate.min_rank(x.shape, "x", 2)
    G = _vn.num_groups_value(num_groups, x.shape[1])
    return x, _channel_rows(x, G, weight, bias)


def group_norm_train(x, num_groups, weight=None, bias=None, eps=1e-5, *, device=None):
    """Group norm that also returns the statistics its backward needs.

    The channels are split into ``num_groups`` groups of ``C / num_groups``;
    each (sample, group) is normalised with its own mean and *biased* variance:
    ``y = (x - mean) * invstd * weight[c] + bias[c]``.

    Parameters
    ----------
    x : array of shape (N, C, *), float16/32/64
    num_groups : int dividing C
    weight, bias : arrays of shape (C,), or None
    eps : float >= 0
    device : None, "cpu" or "cuda"

    Returns
    -------
    y : array like x
    mean, invstd : float64 arrays of shape (N, num_groups)

    Raises
    ------
    TypeError, ValueError
        For bad arguments (e.g. C not divisible by num_groups), or a single
        value in the whole batch (as in PyTorch), before anything is computed.
    """
    be = _backend(x, device)
    x, geo = _group_geometry(be, x, num_groups, weight, bias)
    if x.shape[0] * geo.K == 1:
        raise ValueError(f"expected more than 1 value per group when training, got x of shape "
                         f"{tuple(x.shape)} with num_groups={num_groups}")
    eps = _validate.eps_value(eps)
    return _exported(be, x, _forward(be, x, geo, weight, bias, eps, True)[:3])


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5, *, device=None):
    """Group norm with the meaning of ``torch.nn.functional.group_norm``; returns ``y``.

    See :func:`group_norm_train` for the parameters.
    """
    return group_norm_train(x, num_groups, weight, bias, eps, device=device)[0]


def group_norm_backward(dy, x, mean, invstd, num_groups, weight=None, *, device=None):
    """Gradients of group norm from the forward's ``mean`` and ``invstd``.

    Per (sample, group), with ``xhat = (x - mean) * invstd`` and
    ``g = dy * weight[c]``: ``dx = invstd * (g - mean(g) - xhat * mean(g * xhat))``;
    ``dweight[c] = sum dy * xhat`` and ``dbias[c] = sum dy`` over all but the channel axis.

    Parameters
    ----------
    dy, x : arrays of the same shape (N, C, *)
    mean, invstd : arrays of shape (N, num_groups), from the forward
    num_groups : int dividing C
    weight : array of shape (C,) or None (then dweight and dbias are None)
    device : None, "cpu" or "cuda"

    Returns
    -------
    dx : array like x
    dweight, dbias : arrays of shape (C,) in weight's dtype, or None
    """
    be = _backend(x, device)
    x, geo = _group_geometry(be, x, num_groups, weight, None)
    return _backward(be, dy, x, geo, mean, invstd, weight, True)


def _instance_geometry(be, x, weight, bias, use_input_stats):
    x = be.as_input(x, "x")
    _validate.min_rank(x.shape, "x", 2)
    geo = _channel_rows(x, x.shape[1], weight, bias)
    if use_input_stats and geo.K == 1:
        raise ValueError(f"expected more than 1 spatial element when using input statistics, "
                         f"got x of shape {tuple(x.shape)}")
    return x, geo


def instance_norm_train(x, weight=None, bias=None, eps=1e-5, *, running_mean=None,
                        running_var=None, momentum=0.1, device=None):
    """Instance norm with the input's statistics, also returning them for the backward.

    Each (sample, channel) is normalised with its own mean and *biased* variance
    over the spatial dimensions: ``y = (x - mean) * invstd * weight[c] + bias[c]``.

    Parameters
    ----------
    x : array of shape (N, C, *) with more than one spatial element, float16/32/64
    weight, bias : arrays of shape (C,), or None
    eps : float >= 0
    running_mean, running_var : writable arrays of shape (C,) or None
        Updated in place after the forward succeeded, like PyTorch:
        ``running = (1 - momentum) * running + momentum * batch`` where ``batch``
        is the per-instance mean (and *unbiased* variance) averaged over the N
        samples.  A batch with non-finite statistics is skipped with a
        ``RuntimeWarning``.
    momentum : float in [0, 1]
    device : None, "cpu" or "cuda"

    Returns
    -------
    y : array like x
    mean, invstd : float64 arrays of shape (N, C)

    Raises
    ------
    TypeError, ValueError
        For bad arguments, before anything is computed or updated.
    """
    be = _backend(x, device)
    x, geo = _instance_geometry(be, x, weight, bias, True)
    C = geo.channels
    _validate.channel_vector(running_mean, C, "running_mean", writable=True)
    _validate.channel_vector(running_var, C, "running_var", writable=True)
    eps = _validate.eps_value(eps)
    momentum = _validate.momentum_value(momentum)
    y, mean, invstd, var = _forward(be, x, geo, weight, bias, eps, True)
    if (running_mean is not None or running_var is not None) and x.shape[0] > 0:
        # (N, C) float64: device statistics come down, the (C,) means go back up.
        unbiased = np.asarray(var) * (geo.K / (geo.K - 1))
        be.update_running(running_mean, running_var, be.vector64(np.asarray(mean).mean(axis=0),
                                                                 C, 0.0),
                          be.vector64(unbiased.mean(axis=0), C, 0.0), momentum)
    return _exported(be, x, (y, mean, invstd))


def instance_norm(x, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5, *, device=None):
    """Instance norm with the meaning of ``torch.nn.functional.instance_norm``; returns ``y``.

    With ``use_input_stats`` (the default) see :func:`instance_norm_train`.
    Otherwise ``running_mean`` and ``running_var`` (required) normalise:
    ``y = (x - running_mean[c]) / sqrt(running_var[c] + eps) * weight[c] + bias[c]``.

    Raises
    ------
    TypeError, ValueError
        For bad arguments, before anything is computed or updated.
    """
    if _vn.flag(use_input_stats, "use_input_stats"):
        return instance_norm_train(x, weight, bias, eps, running_mean=running_mean,
                                   running_var=running_var, momentum=momentum, device=device)[0]
    be = _backend(x, device)
    x, geo = _instance_geometry(be, x, weight, bias, False)
    if running_mean is None or running_var is None:
        raise ValueError("running_mean and running_var are required when use_input_stats=False")
    _validate.channel_vector(running_mean, geo.channels, "running_mean")
    _validate.channel_vector(running_var, geo.channels, "running_var")
    eps = _validate.eps_value(eps)
    _validate.momentum_value(momentum)
    invstd = 1.0 / (np.asarray(running_var, dtype=np.float64).reshape(-1) + eps) ** 0.5
    return _normalize(be, x, geo, be.vector64(running_mean, geo.channels, 0.0), invstd, weight,
                      bias)


def instance_norm_backward(dy, x, mean, invstd, weight=None, *, batch_stats=True, device=None):
    """Gradients of instance norm from the forward's ``mean`` and ``invstd``.

    Per (sample, channel) as in :func:`group_norm_backward` with one channel per
    group.  With ``batch_stats=False`` (statistics frozen: the forward used the
    running buffers, ``mean = running_mean`` and
    ``invstd = 1 / sqrt(running_var + eps)``, shape (C,) accepted)
    ``dx = invstd * weight * dy``.

    Parameters
    ----------
    dy, x : arrays of the same shape (N, C, *)
    mean, invstd : arrays of shape (N, C) (or (C,) with ``batch_stats=False``)
    weight : array of shape (C,) or None (then dweight and dbias are None)
    batch_stats : bool
    device : None, "cpu" or "cuda"

    Returns
    -------
    dx : array like x
    dweight, dbias : arrays of shape (C,) in weight's dtype, or None
    """
    batch_stats = _vn.flag(batch_stats, "batch_stats")
    be = _backend(x, device)
    x, geo = _instance_geometry(be, x, weight, None, False)
    frozen_shapes = () if batch_stats else ((geo.channels,),)
    return _backward(be, dy, x, geo, mean, invstd, weight, True, batch_stats, frozen_shapes)
