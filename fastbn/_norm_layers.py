"""Layer, group, instance and RMS norm layers over the functional API (no autograd).

Same conventions as the batch norm layers (``fastbn._module.Module``):
``forward`` saves the input, the statistics and a copy of the affine
parameters it used; ``backward(dy)`` returns dx and accumulates
``grad_weight``/``grad_bias``; ``state_dict`` has PyTorch's keys.  Layer,
group and RMS norm normalise with the input's statistics in train and eval
alike; instance norm uses its running statistics in eval when it tracks them.
"""

import numbers
import warnings

import numpy as np

from . import _dispatch, _validate
from . import _validate_norms as _vn
from ._module import Module, RunningStats, _check_bool
from ._norms import layer_norm_backward, layer_norm_train, rms_norm_backward, rms_norm_train
from ._norms_channel import (group_norm_backward, group_norm_train, instance_norm,
                             instance_norm_backward, instance_norm_train)


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def _shape_tuple(normalized_shape):
    shape = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) \
        else tuple(normalized_shape)
    if not shape:
        raise ValueError("normalized_shape must have at least one dimension, got ()")
    return tuple(_positive_int(s, "normalized_shape") for s in shape)


class _RowwiseNorm(Module):
    """Forward/backward bookkeeping shared by the four layers.

    A subclass registers ``weight``/``bias``, implements ``_train(x, weight,
    bias) -> (y, saved)`` and ``_grads(dy, x, saved, weight) -> (dx, dw, db)``.
    """

    def __init__(self, eps, *, dtype, device):
        super().__init__(dtype=dtype, device=device)
        self.eps = eps
        self._saved = None

    def _param_copy(self, name):
        p = getattr(self, name, None)
        return None if p is None else self._array(p)

    def forward(self, x):
        """Normalise ``x``; returns y like x and saves what :meth:`backward` needs.

        Raises ValueError/TypeError (naming the argument) before any change.
        """
        weight, bias = self._param_copy("weight"), self._param_copy("bias")
        y, saved = self._train(self._input(_dispatch.backend(x), x, "x"), weight, bias)
        self._saved = (saved, weight)
        return y

    def backward(self, dy):
        """Input gradient of the last forward; accumulates ``grad_weight``/``grad_bias``.

        Raises
        ------
        ValueError
            Before any forward, or for ``dy`` not shaped like the forward's input.
        """
        if self._saved is None:
            raise ValueError(f"{type(self).__name__}.backward() called before forward(): "
                             "there is nothing to differentiate")
        saved, weight = self._saved
        dx, dweight, dbias = self._grads(dy, saved, weight)
        grads = {"weight": dweight, "bias": dbias}
        self._accumulate_grads({n: grads[n] for n in self._param_names})
        return dx

    def reset_parameters(self):
        """Weight 1 and bias 0 (in place)."""
        for name, value in (("weight", 1), ("bias", 0)):
            if getattr(self, name, None) is not None:
                getattr(self, name)[...] = value


class LayerNorm(_RowwiseNorm):
    """Layer norm over the trailing ``normalized_shape`` dims: ``torch.nn.LayerNorm``.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` with the *biased*
    variance of each sample, in train and eval alike.

    Parameters
    ----------
    normalized_shape : int or tuple of ints
    eps : float >= 0
    elementwise_affine : bool, learnable ``weight`` (ones) of shape normalized_shape
    bias : bool, with ``elementwise_affine`` also a learnable ``bias`` (zeros)
    dtype : float16, float32 or float64, of the parameters
    device : None, "cpu" or "cuda"
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, *, bias=True,
                 dtype=np.float32, device=None):
        super().__init__(_validate.eps_value(eps), dtype=dtype, device=device)
        self.normalized_shape = _shape_tuple(normalized_shape)
        self.elementwise_affine = _check_bool(elementwise_affine, "elementwise_affine")
        affine_bias = self.elementwise_affine and _check_bool(bias, "bias")
        shape = self.normalized_shape
        self.register_parameter("weight", np.ones(shape) if self.elementwise_affine else None)
        self.register_parameter("bias", np.zeros(shape) if affine_bias else None)

    def _train(self, x, weight, bias):
        y, mean, invstd = layer_norm_train(x, self.normalized_shape, weight, bias, self.eps)
        return y, (x, mean, invstd)

    def _grads(self, dy, saved, weight):
        x, mean, invstd = saved
        return layer_norm_backward(dy, x, mean, invstd, self.normalized_shape, weight)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class RMSNorm(_RowwiseNorm):
    """RMS norm over the trailing ``normalized_shape`` dims: ``torch.nn.RMSNorm``.

    ``y = x / sqrt(mean(x**2) + eps) * weight``; ``eps=None`` is
    ``numpy.finfo(x.dtype).eps`` of each input.

    Parameters
    ----------
    normalized_shape : int or tuple of ints
    eps : float >= 0 or None
    elementwise_affine : bool, learnable ``weight`` (ones) of shape normalized_shape
    dtype : float16, float32 or float64, of the parameters
    device : None, "cpu" or "cuda"
    """

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, *, dtype=np.float32,
                 device=None):
        super().__init__(None if eps is None else _validate.eps_value(eps), dtype=dtype,
                         device=device)
        self.normalized_shape = _shape_tuple(normalized_shape)
        self.elementwise_affine = _check_bool(elementwise_affine, "elementwise_affine")
        self.register_parameter("weight", np.ones(self.normalized_shape)
                                if self.elementwise_affine else None)

    def _train(self, x, weight, bias):
        y, invstd = rms_norm_train(x, self.normalized_shape, weight, self.eps)
        return y, (x, invstd)

    def _grads(self, dy, saved, weight):
        x, invstd = saved
        return rms_norm_backward(dy, x, invstd, self.normalized_shape, weight)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class GroupNorm(_RowwiseNorm):
    """Group norm: ``torch.nn.GroupNorm``, for input ``(N, num_channels, *)``.

    Each sample's channels are split into ``num_groups`` groups normalised with
    their own mean and *biased* variance, in train and eval alike.

    Parameters
    ----------
    num_groups : int dividing num_channels
    num_channels : int
    eps : float >= 0
    affine : bool, learnable per-channel ``weight`` (ones) and ``bias`` (zeros)
    dtype : float16, float32 or float64, of the parameters
    device : None, "cpu" or "cuda"
    """

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, *, dtype=np.float32,
                 device=None):
        super().__init__(_validate.eps_value(eps), dtype=dtype, device=device)
        self.num_channels = _positive_int(num_channels, "num_channels")
        self.num_groups = _vn.num_groups_value(num_groups, self.num_channels)
        self.affine = _check_bool(affine, "affine")
        C = self.num_channels
        self.register_parameter("weight", np.ones(C) if self.affine else None)
        self.register_parameter("bias", np.zeros(C) if self.affine else None)

    def _train(self, x, weight, bias):
        _validate.min_rank(x.shape, "x", 2)
        if x.shape[1] != self.num_channels:
            raise ValueError(f"GroupNorm expects x with {self.num_channels} channels at axis 1, "
                             f"got shape {tuple(x.shape)}")
        y, mean, invstd = group_norm_train(x, self.num_groups, weight, bias, self.eps)
        return y, (x, mean, invstd)

    def _grads(self, dy, saved, weight):
        x, mean, invstd = saved
        return group_norm_backward(dy, x, mean, invstd, self.num_groups, weight)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class _InstanceNorm(RunningStats, _RowwiseNorm):
    """Instance norm: each (sample, channel) normalised over its spatial dims.

    ``torch.nn.InstanceNorm*d``: the input's statistics normalise in training,
    and in eval too unless the layer tracks running statistics.  In training
    with ``track_running_stats`` the running buffers are updated with the
    per-instance mean and *unbiased* variance averaged over the batch
    (``momentum=None`` counts as 0, and ``num_batches_tracked`` stays 0, as in
    PyTorch).  Unbatched input (without N) is accepted.

    Parameters
    ----------
    num_features : int, C
    eps : float >= 0
    momentum : float in [0, 1] or None
    affine : bool, learnable per-channel ``weight`` (ones) and ``bias`` (zeros)
    track_running_stats : bool
        Keep ``running_mean`` (zeros), ``running_var`` (ones) and
        ``num_batches_tracked``, and normalise with them in eval.
    dtype : float16, float32 or float64, of the parameters and buffers
    device : None, "cpu" or "cuda"
    """

    #: (unbatched rank, batched rank)
    _ranks = None

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False,
                 track_running_stats=False, *, dtype=np.float32, device=None):
        super().__init__(_validate.eps_value(eps), dtype=dtype, device=device)
        self.num_features = _positive_int(num_features, "num_features")
        self.momentum = _validate.momentum_value(momentum, allow_none=True)
        self.affine = _check_bool(affine, "affine")
        self.track_running_stats = _check_bool(track_running_stats, "track_running_stats")
        C, tracking = self.num_features, self.track_running_stats
        self.register_parameter("weight", np.ones(C) if self.affine else None)
        self.register_parameter("bias", np.zeros(C) if self.affine else None)
        self.register_buffer("running_mean", np.zeros(C) if tracking else None)
        self.register_buffer("running_var", np.ones(C) if tracking else None)
        self.register_buffer("num_batches_tracked", 0 if tracking else None, dtype=np.int64)

    def _batched(self, x):
        """``(x with a batch axis, whether it was added)`` after the rank and channel checks."""
        name = type(self).__name__
        _validate.ranks(x.shape, "x", self._ranks, name)
        unbatched = x.ndim == self._ranks[0]
        xb = x.reshape((1, *x.shape)) if unbatched else x   # device arrays take no None index
        if xb.shape[1] != self.num_features:
            msg = (f"{name}({self.num_features}) expects x with {self.num_features} channels, "
                   f"got shape {tuple(x.shape)}")
            if self.affine or self.track_running_stats:
                raise ValueError(msg)
            warnings.warn(msg + " (num_features is unused without affine or running stats)",
                          stacklevel=4)
        return xb, unbatched

    def _train(self, x, weight, bias):
        xb, unbatched = self._batched(x)
        rm, rv = self.running_mean, self.running_var
        if self.training or not self.track_running_stats:
            y, mean, invstd = instance_norm_train(
                xb, weight, bias, self.eps, running_mean=rm if self.training else None,
                running_var=rv if self.training else None,
                momentum=0.0 if self.momentum is None else self.momentum)
            batch_stats = True
        else:
            mean = rm.astype(np.float64)
            invstd = 1.0 / np.sqrt(rv.astype(np.float64) + self.eps)
            y = instance_norm(xb, rm, rv, weight, bias, use_input_stats=False, eps=self.eps)
            batch_stats = False
        return (y[0] if unbatched else y), (x.shape, xb, mean, invstd, batch_stats)

    def _grads(self, dy, saved, weight):
        x_shape, xb, mean, invstd, batch_stats = saved
        dy = self._input(_dispatch.backend(xb), dy, "dy")
        _validate.same_shape(dy, x_shape, "dy", like="the forward input")
        dx, dweight, dbias = instance_norm_backward(dy.reshape(xb.shape), xb, mean, invstd, weight,
                                                    batch_stats=batch_stats)
        return dx.reshape(x_shape), dweight, dbias

    def reset_parameters(self):
        """:meth:`reset_running_stats`, then weight 1 and bias 0 (in place)."""
        self.reset_running_stats()
        super().reset_parameters()

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class InstanceNorm1d(_InstanceNorm):
    """Instance norm of ``(N, C, L)`` or unbatched ``(C, L)`` input; see ``_InstanceNorm``."""

    _ranks = (2, 3)


class InstanceNorm2d(_InstanceNorm):
    """Instance norm of ``(N, C, H, W)`` or unbatched ``(C, H, W)`` input; see ``_InstanceNorm``."""

    _ranks = (3, 4)


class InstanceNorm3d(_InstanceNorm):
    """Instance norm of ``(N, C, D, H, W)`` or ``(C, D, H, W)`` input; see ``_InstanceNorm``."""

    _ranks = (4, 5)
