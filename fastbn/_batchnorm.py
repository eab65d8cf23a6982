"""Functional batch normalization: validate once, pick the backend, launch.

Shapes are ``(N, C, *)`` with the channel at ``axis`` (any axis; ``-1`` is
channels-last).  Statistics are float64 whatever the input dtype; the biased
variance normalises, the unbiased one feeds ``running_var`` (as in PyTorch).
"""

import functools
import math

import numpy as np

from . import _dispatch, _memory, _threads, _validate

_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class _Prepared:
    """A validated call: backend, input, its canonical view and per-channel float64 vectors."""

    def __init__(self, be, x, axis, arg_name="x"):
        self.be = be
        self.caller = x  # the caller's array: results are returned as its kind
        self.x = be.as_input(x, arg_name)
        _validate.min_rank(self.x.shape, arg_name, 2)
        self.axis = _validate.axis_index(axis, self.x.ndim)
        self.channels = self.x.shape[self.axis]
        self.count = _validate.reduced_count(self.x.shape, (self.axis,), arg_name)
        self.xc = be.to_compute(self.x)
        self.plan = be.plan(self.xc, (self.axis,))

    def view(self, a):
        """Canonical view of an array shaped like x (converted to the compute dtype)."""
        return None if a is None else self.be.canonical(self.be.cast(a, self.xc.dtype), self.plan)

    def vector(self, v, fill):
        return self.be.vector64(v, self.channels, fill)

    def output(self, out, inputs):
        return self.be.output(out, self.xc, self.plan, self.xc.dtype, inputs)

    def finish(self, result, out):
        if out is not None:
            return self.be.finish_output(result, out)
        return self.export(self.be.cast(result, self.x.dtype))

    def export(self, a):
        """``a`` as the caller's array kind (a CuPy array or torch tensor for those inputs)."""
        return self.be.export(a, self.caller)


def _check_same_as_x(prep, a, arg_name):
    if a is None:
        return None
    a = prep.be.as_input(a, arg_name)
    _validate.same_shape(a, prep.x.shape, arg_name)
    return a


def _check_vectors(prep, **vectors):
    for arg_name, v in vectors.items():
        _validate.channel_vector(v, prep.channels, arg_name)


def batch_norm_train(x, weight=None, bias=None, eps=1e-5, *, axis=1, running_mean=None,
                     running_var=None, momentum=0.1, out=None, device=None, activation=None,
                     residual=None):
    """Training-mode batch norm: normalise with the batch statistics.

    ``y = act((x - mean) * invstd * weight + bias [+ residual])`` with per-channel
    ``mean`` and ``invstd = 1 / sqrt(biased_var + eps)`` over every axis but
    ``axis``.

    Parameters
    ----------
    x : array, shape (N, C, *) (channel at ``axis``), float16/32/64
    weight, bias : arrays of shape (C,) or None
    eps : float >= 0
    axis : int, the channel axis (default 1; -1 for channels-last)
    running_mean, running_var : writable arrays of shape (C,) or None
        Updated in place: ``running = (1 - momentum) * running + momentum * batch``
        with the *unbiased* batch variance.  A batch with non-finite statistics
        is skipped with a ``RuntimeWarning``.
    momentum : float in [0, 1]
    out : array shaped like x, optional (may be x itself)
    device : None, "cpu" or "cuda"
    activation : None or "relu", applied after the residual add
    residual : array shaped like x, optional

    Returns
    -------
    y : array like x
    mean, invstd : float64 arrays of shape (C,), what ``batch_norm_backward`` needs.

    Raises
    ------
    TypeError, ValueError
        For bad arguments, before anything is computed or updated; also when a
        channel has a single value (the variance is undefined in training).
    """
    return _batch_norm_train(x, weight, bias, eps, axis=axis, running_mean=running_mean,
                             running_var=running_var, momentum=momentum, out=out, device=device,
                             activation=activation, residual=residual)[:3]


def _batch_norm_train(x, weight, bias, eps, *, axis, running_mean, running_var, momentum, out,
                      device, activation, residual):
    """:func:`batch_norm_train` returning ``(y, mean, invstd, updated)``.

    ``updated``: whether the running buffers were updated (False without them,
    or for a batch with non-finite statistics), which the layers count in
    ``num_batches_tracked`` without looking at statistics that may be on the device.
    """
    be = _dispatch.backend(x, device)
    prep = _Prepared(be, x, axis)
    if prep.count < 2:
        raise ValueError(f"expected more than 1 value per channel when training, got x of shape "
                         f"{tuple(prep.x.shape)} with {prep.count} value(s) per channel")
    _check_vectors(prep, weight=weight, bias=bias)
    _validate.channel_vector(running_mean, prep.channels, "running_mean", writable=True)
    _validate.channel_vector(running_var, prep.channels, "running_var", writable=True)
    eps = _validate.eps_value(eps)
    momentum = _validate.momentum_value(momentum)
    use_relu = _validate.activation_name(activation) == "relu"
    residual = _check_same_as_x(prep, residual, "residual")
    out = _validate.out_array(out, prep.x.shape, prep.x.dtype) if out is not None else None

    result, y3 = prep.output(out, (prep.x, residual))
    mean, invstd, m2 = be.train_forward(prep.view(prep.xc), prep.vector(weight, 1.0),
                                        prep.vector(bias, 0.0), eps, prep.view(residual), use_relu,
                                        y3)
    updated = running_mean is not None or running_var is not None
    if updated:
        updated = be.update_running(running_mean, running_var, mean,
                                    be.divide(m2, prep.count - 1), momentum)
    return prep.finish(result, out), prep.export(mean), prep.export(invstd), updated


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5, *, axis=1, out=None, device=None, activation=None, residual=None):
    """Batch norm with the meaning of ``torch.nn.functional.batch_norm``.

    In training it normalises with the batch statistics and updates the running
    buffers in place when given (see :func:`batch_norm_train`).  In eval it uses
    ``running_mean`` and ``running_var`` (required):
    ``y = act((x - running_mean) / sqrt(running_var + eps) * weight + bias [+ residual])``.
    On the CPU the eval path is the ahead-of-time compiled kernel: no JIT.

    Parameters and errors are those of :func:`batch_norm_train`; returns ``y``.
    """
    if training:
        return batch_norm_train(x, weight, bias, eps, axis=axis, running_mean=running_mean,
                                running_var=running_var, momentum=momentum, out=out,
                                device=device, activation=activation, residual=residual)[0]
    if out is None and residual is None and device is None:
        y = _eval_fast(x, running_mean, running_var, weight, bias, eps, axis, activation)
        if y is not None:
            return y
    be = _dispatch.backend(x, device)
    prep = _Prepared(be, x, axis)
    if running_mean is None or running_var is None:
        raise ValueError("running_mean and running_var are required when training=False")
    _check_vectors(prep, running_mean=running_mean, running_var=running_var, weight=weight,
                   bias=bias)
    eps = _validate.eps_value(eps)
    _validate.momentum_value(momentum)
    use_relu = _validate.activation_name(activation) == "relu"
    residual = _check_same_as_x(prep, residual, "residual")
    out = _validate.out_array(out, prep.x.shape, prep.x.dtype) if out is not None else None

    result, y3 = prep.output(out, (prep.x, residual))
    be.eval_forward(prep.view(prep.xc), running_mean, running_var, weight, bias, eps,
                    prep.view(residual), use_relu, y3)
    return prep.finish(result, out)


def _eval_fast(x, running_mean, running_var, weight, bias, eps, axis, activation):
    """The eval forward of a plain C-contiguous NumPy call in a few microseconds, or None.

    An inference service calls this thousands of times a second with tiny
    inputs, where the general path's bookkeeping would cost more than the
    kernel.  Only calls that the general path would accept unchanged take it
    (anything else returns None and goes the general way, errors included):
    a C-contiguous float32/float64 array, channel axis 1 or the last axis,
    float NumPy vectors of the right length, a valid eps and activation.
    """
    shape3 = _plain_shape3(x, axis)
    if shape3 is None:
        return None
    if not (type(eps) is float and 0.0 <= eps < math.inf
            and (activation is None or activation == "relu")):
        return None
    kernel = _inference_kernel()
    if kernel is None:
        return None
    y = _memory.empty_like(x)
    try:
        # The extension checks the per-channel vectors (NumPy, float, length C)
        # before touching anything; on a mismatch the general path explains it.
        kernel(x.reshape(shape3), running_mean, running_var, weight, bias, eps,
               activation == "relu", None, y.reshape(shape3), _threads.threads_for(x.size))
    except (TypeError, ValueError):
        return None
    return y


def _plain_shape3(x, axis):
    """The canonical ``(O, C, I)`` shape of a plain input, or None.

    Plain: a non-empty C-contiguous float32/float64 NumPy array of rank >= 2
    with the channel at axis 1 or the last axis (an int), whose canonical
    view is a reshape.  The fast paths take only such inputs.
    """
    if type(x) is not np.ndarray or x.dtype not in _FAST_DTYPES or x.ndim < 2 \
            or not x.flags.c_contiguous or x.size == 0 or type(axis) is not int:
        return None
    if axis == 1:
        return (x.shape[0], x.shape[1], x.size // (x.shape[0] * x.shape[1]))
    if axis == -1 or axis == x.ndim - 1:
        return (x.size // x.shape[-1], x.shape[-1], 1)
    return None


@functools.cache
def _inference_kernel():
    """The compiled eval kernel (``fastbn._ext._inference.normalize_eval``) or None (loaded once)."""
    from . import _inference
    return _inference._ext.normalize_eval if _inference.available() else None


def batch_norm_backward(dy, x, mean, invstd, weight=None, *, axis=1, out=None, device=None,
                        bias=None, activation=None, output=None, residual=False,
                        batch_stats=True):
    """Gradients of batch norm from the forward's ``mean`` and ``invstd``.

    With ``xhat = (x - mean) * invstd`` and ``g`` = dy through the activation:
    ``dbias = sum g``, ``dweight = sum g * xhat`` and, with batch statistics,
    ``dx = weight * invstd * (g - mean(g) - xhat * mean(g * xhat))``.  With
    ``batch_stats=False`` (eval mode, frozen statistics: ``mean``/``invstd``
    from the running buffers) ``dx = weight * invstd * g``.

    Parameters
    ----------
    dy, x : arrays of the same shape (N, C, *)
    mean, invstd : arrays of shape (C,), from the forward pass
    weight : array of shape (C,) or None (then dweight and dbias are None)
    axis, out, device : as in :func:`batch_norm_train` (``out`` receives dx)
    bias, activation, output, residual :
        The forward's epilogue.  With ``activation="relu"`` the mask is
        ``output > 0`` when the forward ``output`` is given, else recomputed from
        ``x`` and ``bias`` (required then if the forward had a bias).  A forward
        with a residual needs ``residual=True`` and ``output``; its gradient
        ``dresidual`` (dy through the activation; ``dy`` itself without one) is
        then returned as a fourth value.
    batch_stats : bool
        False for the frozen-statistics formula.

    Returns
    -------
    (dx, dweight, dbias) or, with ``residual=True``, (dx, dweight, dbias, dresidual).
    """
    return _backward(dy, x, mean, invstd, weight, axis=axis, out=out, device=device, bias=bias,
                     activation=activation, output=output, residual=residual,
                     batch_stats=batch_stats)


def _backward(dy, x, mean, invstd, weight, *, axis, out, device, bias, activation, output,
              residual, batch_stats, reduce_sums=None):
    """:func:`batch_norm_backward`, optionally with the gradient sums reduced across processes.

    ``reduce_sums(sum_g, sum_gx, count) -> (sum_g, sum_gx, count)`` receives this
    batch's per-channel float64 sums (``sum g``, ``sum g * (x - mean)``) and its
    values per channel, and returns the totals that dx and the parameter
    gradients are computed from (SyncBatchNorm's all-ranks sums).  None: this
    batch alone, in the fused one-pass kernel.
    """
    be = _dispatch.backend(x, device)
    prep = _Prepared(be, x, axis)
    dy = _check_same_as_x(prep, dy, "dy")
    _check_vectors(prep, mean=mean, invstd=invstd, weight=weight, bias=bias)
    use_relu = _validate.activation_name(activation) == "relu"
    output = _check_same_as_x(prep, output, "output")
    if use_relu and residual and output is None:
        raise ValueError("output (the forward result) is required for the ReLU mask when the "
                         "forward had a residual")
    out = _validate.out_array(out, prep.x.shape, prep.x.dtype) if out is not None else None
    if not use_relu:
        mask = be.MASK_NONE
    else:
        mask = be.MASK_FROM_OUTPUT if output is not None else be.MASK_RECOMPUTE

    result, dx3 = prep.output(out, (prep.x, dy))
    dres, dres3 = (None, None)
    if residual and use_relu:
        dres, dres3 = prep.output(None, ())
    invstd64 = prep.vector(invstd, 1.0)
    args = (prep.view(dy), prep.view(prep.xc), prep.view(output), prep.vector(mean, 0.0),
            invstd64, prep.vector(weight, 1.0), prep.vector(bias, 0.0), mask)
    if reduce_sums is None:
        sum_g, sum_gx = be.backward(*args, bool(batch_stats), dx3, dres3)
    else:
        sum_g, sum_gx, count = reduce_sums(*be.grad_sums(*args), prep.count)
        be.input_grad(*args, sum_g, sum_gx, count, bool(batch_stats), dx3, dres3)
    dweight = dbias = None
    if weight is not None:
        dweight = prep.export(be.like(be.multiply(sum_gx, invstd64), weight))
        dbias = prep.export(be.like(sum_g, weight))
    grads = (prep.finish(result, out), dweight, dbias)
    if residual:
        grads += (prep.finish(dres, None) if dres is not None else prep.export(dy),)
    return grads
