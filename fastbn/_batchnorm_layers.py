"""Batch norm layers: ``BatchNorm1d/2d/3d`` over the functional API (no autograd).

The forward only decides which statistics normalise, whether the running
statistics update and with which momentum factor, then calls the functional
API; it saves what ``backward`` needs (the input, the statistics used and a
copy of the affine parameters).  The classes differ only in their rank check.

Frozen batch norm (fine-tuning) is three independent switches on top of
``train()``/``eval()``:

* ``use_batch_stats`` -- which statistics normalise: True batch, False running,
  None as PyTorch (batch in training or without running stats, else running);
* ``update_running_stats`` -- True updates the running statistics from every
  batch the layer sees (train or eval), False never, None as PyTorch
  (in training, when batch statistics normalise);
* ``requires_grad_(False)`` -- the affine parameters receive no gradient.

``backward`` is exact in every combination: the batch-statistics formula when
batch statistics normalised, the frozen-statistics one (``dx = weight * invstd
* dy``) when the running statistics did.
"""

import math
import numbers
from typing import NamedTuple

import numpy as np

from . import _dispatch, _memory, _renorm, _validate
from ._batchnorm import (_batch_norm_train, _eval_fast, _plain_shape3, batch_norm,
                         batch_norm_backward)
from ._module import Module, RunningStats, _check_bool

_MAX_RANK = 64  # NumPy's limit, for checking the axis before an input is seen


class _Group(NamedTuple):
    """What backward needs from one (virtual) batch's forward step."""

    mean: object              # float64 (C,): the statistics that normalised (device ones for
                              # a device input with batch statistics; else NumPy)
    invstd: object
    weight: object            # copies of the affine parameters used (or None)
    bias: object
    r: object                 # renorm corrections (float64 (C,)) or None
    d: object
    batch_stats: bool

    def param_grads(self, sum_g, sum_gx):
        """``(dweight, dbias)`` in the weight's dtype from the gradient sums (None without weight).

        ``sum_gx`` is ``sum g * (x - mean)``: ``dweight = sum g * xhat = sum_gx * invstd``.
        """
        if self.weight is None:
            return None, None
        return (sum_gx * self.invstd).astype(self.weight.dtype), sum_g.astype(self.weight.dtype)


class _Saved(NamedTuple):
    x: object
    output: object            # the forward output, kept only for ReLU after a residual
    has_residual: bool
    slices: object            # per-group index along the batch axis, or None for one group
    groups: list


def _optional_bool(value, name):
    return None if value is None else _check_bool(value, name)


def _into(y, s, compute):
    """``compute(out)`` for ghost batch ``s``, with its first result written to ``y[s]``.

    A NumPy ``y`` is written through ``out=y[s]``; a device ``y`` gets a copy
    (the functional calls take NumPy ``out`` arrays only).
    """
    out = y[s] if isinstance(y, np.ndarray) else None
    result = compute(out)
    if out is None:
        y[s] = result[0]
    return result


class _BatchNorm(RunningStats, Module):
    """Batch normalization over every axis but the channel ``axis``.

    ``y = act((x - mean) / sqrt(var + eps) * weight + bias [+ residual])``; the
    biased batch variance normalises, the unbiased one feeds ``running_var``:
    ``running = (1 - momentum) * running + momentum * batch`` (``momentum=None``:
    the cumulative average over ``num_batches_tracked`` batches).

    Parameters
    ----------
    num_features : int
        C, the number of channels.
    eps : float >= 0
    momentum : float in [0, 1] or None
    affine : bool
        Learnable ``weight`` (ones) and ``bias`` (zeros); None otherwise.
    track_running_stats : bool
        Keep ``running_mean`` (zeros), ``running_var`` (ones) and
        ``num_batches_tracked``; without them batch statistics are also used in eval.
    axis : int
        The channel axis (1; -1 for channels-last).
    dtype : float16, float32 or float64, of the parameters and buffers
    device : None, "cpu" or "cuda"
    activation : None or "relu"
        Applied after the residual add of ``forward(x, residual)``.
    use_batch_stats, update_running_stats : bool or None
        The frozen-BN switches (module docstring); None follows the mode.
    renorm : bool
        Batch Renormalization in training (see ``fastbn._renorm``); needs running stats.
    rmax, dmax : float or callable
        Renorm's limits, or callables of the step (``num_batches_tracked``) giving them.
    virtual_batch_size : int or None
        Ghost batch norm: whenever batch statistics are computed, the batch
        axis (0) is split into consecutive groups of this many samples and the
        layer runs on each group in turn, as if called once per group
        (each normalised with its own statistics, the running statistics
        updated once per group).  The batch size must be a multiple of it.
    """

    #: Allowed input ranks (None: any rank >= 2); the subclasses' only difference.
    _ranks = None

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, *, axis=1, dtype=np.float32, device=None,
                 activation=None, use_batch_stats=None, update_running_stats=None, renorm=False,
                 rmax=3.0, dmax=5.0, virtual_batch_size=None):
        super().__init__(dtype=dtype, device=device)
        if isinstance(num_features, bool) or not isinstance(num_features, numbers.Integral) \
                or num_features < 1:
            raise ValueError(f"num_features must be an int >= 1, got {num_features!r}")
        self.num_features = int(num_features)
        self.eps = _validate.eps_value(eps)
        self.momentum = _validate.momentum_value(momentum, allow_none=True)
        self.affine = _check_bool(affine, "affine")
        self.track_running_stats = _check_bool(track_running_stats, "track_running_stats")
        self.axis = axis
        self.activation = activation
        self.use_batch_stats = use_batch_stats
        self.update_running_stats = update_running_stats
        self.renorm, self.rmax, self.dmax = renorm, rmax, dmax
        self.virtual_batch_size = virtual_batch_size
        self._check_config()
        C = self.num_features
        self.register_parameter("weight", np.ones(C) if self.affine else None)
        self.register_parameter("bias", np.zeros(C) if self.affine else None)
        tracking = self.track_running_stats
        self.register_buffer("running_mean", np.zeros(C) if tracking else None)
        self.register_buffer("running_var", np.ones(C) if tracking else None)
        self.register_buffer("num_batches_tracked", 0 if tracking else None, dtype=np.int64)
        self._saved = None

    def _check_config(self):
        """Check the mutable configuration attributes (at construction and every forward)."""
        _validate.axis_index(self.axis, max(self._ranks or (_MAX_RANK,)))
        _validate.activation_name(self.activation)
        use_batch = _optional_bool(self.use_batch_stats, "use_batch_stats")
        update = _optional_bool(self.update_running_stats, "update_running_stats")
        renorm = _check_bool(self.renorm, "renorm")
        for name in ("rmax", "dmax"):
            if not callable(getattr(self, name)):
                _renorm.renorm_limits(**{"rmax": 1.0, "dmax": 0.0, name: getattr(self, name)})
        k = self.virtual_batch_size
        if k is not None and (isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1):
            raise ValueError(f"virtual_batch_size must be None or an int >= 1, got {k!r}")
        if not self.track_running_stats:
            for flag, name in ((use_batch is False, "use_batch_stats=False"),
                               (update is True, "update_running_stats=True"), (renorm, "renorm")):
                if flag:
                    raise ValueError(f"{name} needs running statistics "
                                     f"(track_running_stats=True)")

    # -- state ----------------------------------------------------------------------------

    def reset_parameters(self):
        """:meth:`reset_running_stats`, then weight 1 and bias 0 (in place)."""
        self.reset_running_stats()
        if self.affine:
            self.weight[...] = 1
            self.bias[...] = 0

    def extra_repr(self):
        text = (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")
        defaults = {"axis": 1, "activation": None, "use_batch_stats": None,
                    "update_running_stats": None, "renorm": False, "virtual_batch_size": None}
        extras = [f"{k}={getattr(self, k)!r}" for k, v in defaults.items() if getattr(self, k) != v]
        return ", ".join([text] + extras)

    # -- forward --------------------------------------------------------------------------

    def _modes(self):
        """``(use_batch, update)``: which statistics normalise, whether running stats update."""
        use_batch = self.use_batch_stats
        if use_batch is None:
            use_batch = self.training or not self.track_running_stats
        update = self.update_running_stats
        if update is None:
            update = self.training and use_batch and self.track_running_stats
        return use_batch, update

    def _check_input(self, x):
        name = type(self).__name__
        if self._ranks is None:
            _validate.min_rank(x.shape, "x", 2)
        else:
            _validate.ranks(x.shape, "x", self._ranks, name)
        axis = _validate.axis_index(self.axis, x.ndim)
        if x.shape[axis] != self.num_features:
            raise ValueError(f"{name}({self.num_features}) expects x with {self.num_features} "
                             f"channels at axis {self.axis}, got shape {tuple(x.shape)}")
        return axis

    def _group_slices(self, x, axis):
        """Index tuples of the ghost batches along axis 0, or None for one batch."""
        k = self.virtual_batch_size
        if k is None:
            return None
        if axis == 0:
            raise ValueError("virtual_batch_size needs a batch axis 0 distinct from the channel "
                             f"axis, got axis={self.axis}")
        n = x.shape[0]
        if n % k:
            raise ValueError(f"virtual_batch_size={k} must divide the batch size, got x of shape "
                             f"{tuple(x.shape)}")
        return [(slice(i, i + k),) for i in range(0, n, k)]

    def _factor(self):
        """The running-average factor of the next update (cumulative when momentum is None)."""
        if self.momentum is None:
            return 1.0 / (int(self.num_batches_tracked) + 1)
        return self.momentum

    def _renorm_limits(self):
        step = int(self.num_batches_tracked)
        rmax, dmax = (v(step) if callable(v) else v for v in (self.rmax, self.dmax))
        return _renorm.renorm_limits(rmax, dmax)

    def _step(self, x, residual, out, use_batch, update):
        """Forward one (virtual) batch; returns ``(y, _Group)``."""
        weight, bias = (None if p is None else self._array(p, p.dtype)
                        for p in (self.weight, self.bias))
        rm, rv = self.running_mean, self.running_var
        kw = dict(axis=self.axis, out=out, activation=self.activation, residual=residual)
        if not use_batch:
            mean = rm.astype(np.float64)
            invstd = 1.0 / np.sqrt(rv.astype(np.float64) + self.eps)
            moments = _renorm.batch_moments(x, self.axis) if update else None
            y = batch_norm(x, rm, rv, weight, bias, False, eps=self.eps, **kw)
            if update:
                count, batch_mean, m2 = moments
                be = _dispatch.backend(x)
                if be.update_running(rm, rv, batch_mean, be.divide(m2, count - 1),
                                     self._factor()):
                    self.num_batches_tracked += 1
            return y, _Group(mean, invstd, weight, bias, None, None, False)
        r = d = None
        momentum = self._factor() if update else 0.0
        if self.renorm:
            rmax, dmax = self._renorm_limits()
            y, mean, invstd, r, d, updated = _renorm._batch_renorm_train(
                x, rm, rv, weight, bias, self.eps, rmax=rmax, dmax=dmax, momentum=momentum,
                update_running=update, device=None, **kw)
        else:
            y, mean, invstd, updated = _batch_norm_train(
                x, weight, bias, self.eps, running_mean=rm if update else None,
                running_var=rv if update else None, momentum=momentum, device=None, **kw)
        if updated:
            self.num_batches_tracked += 1
        return y, _Group(mean, invstd, weight, bias, r, d, True)

    def forward(self, x, residual=None):
        """Normalise ``x`` (shape ``(N, C, *)``, channel at ``axis``); returns y like x.

        ``residual`` (shaped like x) is added before the activation.  Saves what
        :meth:`backward` needs.  Raises ValueError/TypeError before any change.
        """
        if residual is None:
            y = self._eval_fast(x)
            if y is None:
                y = self._train_fast(x)
            if y is not None:
                return y
        self._check_config()
        be = _dispatch.backend(x)
        x = self._input(be, x, "x")
        axis = self._check_input(x)
        if residual is not None:
            residual = self._input(be, residual, "residual")
            _validate.same_shape(residual, x.shape, "residual")
        use_batch, update = self._modes()
        slices = self._group_slices(x, axis) if use_batch or update else None
        if slices is None:
            y, group = self._step(x, residual, None, use_batch, update)
            groups = [group]
        else:
            y = self._empty_like(x)
            groups = []
            for s in slices:
                res = None if residual is None else residual[s]
                groups.append(_into(y, s, lambda out: self._step(x[s], res, out, use_batch,
                                                                 update))[1])
        keep = residual is not None and self.activation == "relu"
        self._saved = _Saved(x, y if keep else None, residual is not None, slices, groups)
        return y

    def _eval_fast(self, x):
        """The plain eval forward of a NumPy input in a few microseconds, or None.

        Inference services call an eval layer thousands of times a second; this
        skips the per-call bookkeeping of the general path when nothing but the
        running statistics is involved, and defers the backward's statistics to
        :meth:`_frozen_group` (the parameters are referenced, not copied).
        Anything unusual returns None and takes the general path, which also
        produces every error message.
        """
        if (self.training or not self.track_running_stats or self.use_batch_stats
                or self.update_running_stats or type(x) is not np.ndarray
                or (self._ranks is not None and x.ndim not in self._ranks)
                or not -x.ndim <= self.axis < x.ndim or x.shape[self.axis] != self.num_features):
            return None
        y = _eval_fast(x, self.running_mean, self.running_var, self.weight, self.bias, self.eps,
                       self.axis, self.activation)
        if y is None:
            return None
        self._saved = _Saved(x, None, False, None, [self._frozen_group])
        return y

    def _train_fast(self, x):
        """The plain training forward of a NumPy input with little bookkeeping, or None.

        A small batch trains at its kernels' speed only if the step around them
        is short: up to about (16, 64, 8, 8) the general path's validation and
        dispatch took longer than the kernels.  This takes the usual call --
        training with running statistics (no renorm, no ghost batches, the
        mode switches unset), a ``_plain_shape3`` input, the layer's own
        parameters and buffers as it made them -- and does what ``_step``
        does with it, with the same kernels and bits.  Anything else returns
        None and takes the general path, which also raises every error; so
        does a subclass with a ``_step`` of its own (SyncBatchNorm's global
        statistics).
        """
        if not (type(self)._step is _BatchNorm._step
                and self.training and self.track_running_stats and self.use_batch_stats is None
                and self.update_running_stats is None and self.renorm is False
                and self.virtual_batch_size is None and self.activation in (None, "relu")):
            return None
        C = self.num_features
        shape3 = _plain_shape3(x, self.axis)
        if (shape3 is None or shape3[1] != C or shape3[0] * shape3[2] < 2
                or (self._ranks is not None and x.ndim not in self._ranks)
                or type(self.eps) is not float or not 0.0 <= self.eps < math.inf
                or not (self.momentum is None
                        or (type(self.momentum) is float and 0.0 <= self.momentum <= 1.0))
                or not all(_validate.is_channel_vector(b, C, writable=True)
                           for b in (self.running_mean, self.running_var))
                or not (self.weight is None and self.bias is None
                        or all(_validate.is_channel_vector(p, C)
                               for p in (self.weight, self.bias)))):
            return None
        weight, bias = (None if p is None else np.array(p, copy=True)
                        for p in (self.weight, self.bias))
        y = _memory.empty_like(x)
        be = _dispatch.backend(x)
        mean, invstd, m2 = be.train_forward(
            x.reshape(shape3), be.vector64(weight, C, 1.0), be.vector64(bias, C, 0.0), self.eps,
            None, self.activation == "relu", y.reshape(shape3))
        if be.update_running(self.running_mean, self.running_var, mean,
                             m2 / (shape3[0] * shape3[2] - 1), self._factor()):
            self.num_batches_tracked += 1
        self._saved = _Saved(x, None, False, None,
                             [_Group(mean, invstd, weight, bias, None, None, True)])
        return y

    def _backward_fast(self, s, dy):
        """dx of a plain training forward (one batch, no residual) with little bookkeeping, or None.

        The counterpart of :meth:`_train_fast` (see there): the same kernels as
        ``batch_norm_backward`` and the same parameter gradients, accumulated;
        anything unusual, or a subclass's own ``_group_backward``, returns None
        for the general path.
        """
        x, g = s.x, s.groups[0]
        if type(self)._group_backward is not _BatchNorm._group_backward \
                or s.slices is not None or s.has_residual or callable(g) or g.r is not None \
                or not g.batch_stats or self.activation not in (None, "relu"):
            return None
        shape3 = _plain_shape3(x, self.axis)
        if shape3 is None or shape3[1] != g.mean.shape[0] or type(dy) is not np.ndarray \
                or dy.dtype != x.dtype or dy.shape != x.shape or not dy.flags.c_contiguous:
            return None
        be = _dispatch.backend(x)
        C = shape3[1]
        dx = _memory.empty_like(x)
        mask = be.MASK_RECOMPUTE if self.activation == "relu" else be.MASK_NONE
        sum_g, sum_gx = be.backward(dy.reshape(shape3), x.reshape(shape3), None, g.mean, g.invstd,
                                    be.vector64(g.weight, C, 1.0), be.vector64(g.bias, C, 0.0),
                                    mask, True, dx.reshape(shape3), None)
        if self.affine:
            dweight, dbias = g.param_grads(sum_g, sum_gx)
            self._accumulate_grads({"weight": dweight, "bias": dbias})
        return dx

    def _frozen_group(self):
        """The backward's view of an eval forward: constant running statistics."""
        return _Group(self.running_mean.astype(np.float64),
                      1.0 / np.sqrt(self.running_var.astype(np.float64) + self.eps),
                      self.weight, self.bias, None, None, False)

    # -- backward -------------------------------------------------------------------------

    def _group_backward(self, dy, x, output, g, has_residual, out):
        kw = dict(axis=self.axis, bias=g.bias, activation=self.activation, output=output,
                  residual=has_residual, out=out)
        if g.r is not None:
            return _renorm.batch_renorm_backward(dy, x, g.mean, g.invstd, g.r, g.d, g.weight, **kw)
        return batch_norm_backward(dy, x, g.mean, g.invstd, g.weight, batch_stats=g.batch_stats,
                                   **kw)

    def backward(self, dy):
        """Input gradient of the last forward; accumulates ``grad_weight``/``grad_bias``.

        Returns ``dx``, or ``(dx, dresidual)`` when the forward had a residual.
        Exact for every mode: with running statistics ``dx = weight * invstd * g``.

        Raises
        ------
        ValueError
            Before any forward, or for ``dy`` not shaped like the forward's input.
        """
        s = self._saved
        if s is None:
            raise ValueError(f"{type(self).__name__}.backward() called before forward(): "
                             "there is nothing to differentiate")
        dx = self._backward_fast(s, dy)
        if dx is not None:
            return dx
        be = _dispatch.backend(s.x)
        dy = self._input(be, dy, "dy")
        _validate.same_shape(dy, s.x.shape, "dy", like="the forward input")
        if callable(s.groups[0]):
            s = s._replace(groups=[s.groups[0]()])
        if s.slices is None:
            dx, dweight, dbias, *dres = self._group_backward(dy, s.x, s.output, s.groups[0],
                                                             s.has_residual, None)
        else:
            dx = self._empty_like(s.x)
            dres = [self._empty_like(s.x)] if s.has_residual else []
            dweight = dbias = 0.0
            for sl, g in zip(s.slices, s.groups):
                output = None if s.output is None else s.output[sl]
                _, gw, gb, *gr = _into(dx, sl, lambda out: self._group_backward(
                    dy[sl], s.x[sl], output, g, s.has_residual, out))
                if gr:
                    dres[0][sl] = gr[0]
                if gw is not None:
                    dweight = dweight + be.to_host(gw).astype(np.float64)
                    dbias = dbias + be.to_host(gb).astype(np.float64)
        if self.affine:
            self._accumulate_grads({"weight": dweight, "bias": dbias})
        return (dx, dres[0]) if s.has_residual else dx


class BatchNorm1d(_BatchNorm):
    """Batch norm of ``(N, C)`` or ``(N, C, L)`` input (channel last with ``axis=-1``).

    See :class:`fastbn._batchnorm_layers._BatchNorm` for the parameters.
    """

    _ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch norm of ``(N, C, H, W)`` input (``(N, H, W, C)`` with ``axis=-1``).

    See :class:`fastbn._batchnorm_layers._BatchNorm` for the parameters.
    """

    _ranks = (4,)


class BatchNorm3d(_BatchNorm):
    """Batch norm of ``(N, C, D, H, W)`` input (``(N, D, H, W, C)`` with ``axis=-1``).

    See :class:`fastbn._batchnorm_layers._BatchNorm` for the parameters.
    """

    _ranks = (5,)
