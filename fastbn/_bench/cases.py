"""What ``fastbn bench`` measures: a registry of ops and the shapes they run on.

An op is one registry entry (:data:`OPS`): its family (which fixes the default
shapes and the parameter shape), the fastbn names it needs, the passes over
the big tensor it makes at the memory floor, and one setup per implementation.
A setup takes the case's :class:`Inputs` and returns a zero-argument callable,
the thing that is timed; work that is not part of the op (the forward a
backward needs, output buffers) happens in the setup.  Ops whose fastbn
functions do not exist yet are left out of the default workload.
"""

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

import fastbn

from . import reference, torch_ref


@dataclass(frozen=True)
class Shape:
    """A logical ``(N, C, *)`` shape and whether it is stored channels-last."""

    dims: tuple
    channels_last: bool = False

    @property
    def axis(self):
        """fastbn's channel axis for the stored array."""
        return -1 if self.channels_last else 1

    @property
    def array_shape(self):
        """The stored array's shape (NHWC for channels-last NCHW)."""
        if not self.channels_last:
            return self.dims
        return (self.dims[0],) + self.dims[2:] + (self.dims[1],)

    @property
    def label(self):
        return "x".join(map(str, self.dims)) + (":cl" if self.channels_last else "")


def parse_shape(text):
    """``"32x64x56x56"`` or ``"32x64x56x56:cl"`` (channels-last) to a :class:`Shape`.

    Raises
    ------
    ValueError
        If the text is not 2 or more positive integers joined by ``x``, with an
        optional ``:cl`` suffix.
    """
    body, _, suffix = text.strip().partition(":")
    try:
        dims = tuple(int(d) for d in body.split("x"))
    except ValueError:
        dims = ()
    if len(dims) < 2 or min(dims) < 1 or suffix not in ("", "cl"):
        raise ValueError(f"expected a shape like 32x64x56x56 or 32x64x56x56:cl (channels-last),"
                         f" got {text!r}")
    return Shape(dims, suffix == "cl")


@dataclass
class Inputs:
    """One case's arrays: input, upstream gradient, parameters and running statistics."""

    shape: Shape
    x: object
    dy: object
    weight: object
    bias: object
    running_mean: object
    running_var: object
    groups: int
    residual: object = None
    eps: float = 1e-5
    momentum: float = 0.1


@dataclass(frozen=True)
class Family:
    """Ops sharing shapes and parameters (``batch_norm``, ``layer_norm``, ...)."""

    name: str
    shapes: tuple          # default workload
    quick_shapes: tuple    # ``--quick``
    param_shape: Callable  # Shape -> shape of weight and bias
    accepts: Callable      # Shape -> bool: can this family run on it?
    groups: Callable = lambda shape: math.gcd(shape.dims[1], 32)  # Shape -> groups (group norm)


@dataclass(frozen=True)
class Op:
    """One benchmarked operation; setups map :class:`Inputs` to a timed callable."""

    name: str
    family: Family
    requires: tuple   # fastbn attribute names
    passes: int       # reads + writes of the full tensor at the floor
    fastbn: Callable
    numpy: Callable
    torch: Callable


def make_inputs(shape, dtype, family, seed=0):
    """Random host inputs for ``shape`` (arrays stored in ``shape.array_shape``)."""
    rng = np.random.default_rng(seed)
    c = shape.dims[1]
    pshape = family.param_shape(shape)
    return Inputs(
        shape=shape,
        x=(rng.standard_normal(shape.array_shape, dtype=np.float32) * 2 + 0.5).astype(dtype),
        dy=rng.standard_normal(shape.array_shape, dtype=np.float32).astype(dtype),
        weight=(rng.random(pshape) + 0.5).astype(dtype),
        bias=rng.standard_normal(pshape).astype(dtype),
        running_mean=np.zeros(c, dtype),
        running_var=np.ones(c, dtype),
        groups=family.groups(shape),
        residual=rng.standard_normal(shape.array_shape, dtype=np.float32).astype(dtype),
    )


def _last_dim(shape):
    return shape.dims[-1:]


def _channels(shape):
    return shape.dims[1:2]


BATCH_NORM = Family(
    "batch_norm",
    shapes=(Shape((32, 64, 56, 56)), Shape((32, 64, 56, 56), True), Shape((4096, 1024))),
    quick_shapes=(Shape((8, 32, 28, 28)), Shape((8, 32, 28, 28), True), Shape((1024, 256))),
    param_shape=_channels, accepts=lambda s: True)
BATCH_NORM_RELU = Family(
    "batch_norm_relu", shapes=(Shape((32, 64, 56, 56)),), quick_shapes=(Shape((8, 32, 28, 28)),),
    param_shape=_channels, accepts=lambda s: True)
LAYER_NORM = Family(
    "layer_norm", shapes=(Shape((64, 197, 768)),), quick_shapes=(Shape((16, 49, 256)),),
    param_shape=_last_dim, accepts=lambda s: not s.channels_last)
GROUP_NORM = Family(
    "group_norm", shapes=(Shape((32, 256, 28, 28)),), quick_shapes=(Shape((8, 64, 14, 14)),),
    param_shape=_channels, accepts=lambda s: not s.channels_last)
INSTANCE_NORM = Family(
    "instance_norm", shapes=(Shape((8, 64, 128, 128)),), quick_shapes=(Shape((4, 32, 32, 32)),),
    param_shape=_channels, accepts=lambda s: not s.channels_last and len(s.dims) >= 3,
    groups=lambda s: s.dims[1])


# fastbn setups --------------------------------------------------------------

def _out(a):
    """A preallocated output like host array ``a``; None (fastbn allocates) on a device."""
    return np.empty_like(a) if isinstance(a, np.ndarray) else None


def _fastbn_bn_forward(i):
    out = _out(i.x)
    return lambda: fastbn.batch_norm_train(i.x, i.weight, i.bias, i.eps, axis=i.shape.axis,
                                           running_mean=i.running_mean, running_var=i.running_var,
                                           momentum=i.momentum, out=out)


def _fastbn_bn_backward(i):
    _, mean, invstd = fastbn.batch_norm_train(i.x, i.weight, i.bias, i.eps, axis=i.shape.axis)
    out = _out(i.x)
    return lambda: fastbn.batch_norm_backward(i.dy, i.x, mean, invstd, i.weight,
                                              axis=i.shape.axis, out=out)


def _fastbn_bn_eval(i):
    out = _out(i.x)
    return lambda: fastbn.batch_norm(i.x, i.running_mean, i.running_var, i.weight, i.bias,
                                     training=False, eps=i.eps, axis=i.shape.axis, out=out)


def _fastbn_bn_epilogue_forward(residual):
    """BN + ReLU (``residual``: BN + add + ReLU) training forward, fused."""
    def setup(i):
        out = _out(i.x)
        res = i.residual if residual else None
        return lambda: fastbn.batch_norm_train(
            i.x, i.weight, i.bias, i.eps, axis=i.shape.axis, running_mean=i.running_mean,
            running_var=i.running_var, momentum=i.momentum, out=out, activation="relu",
            residual=res)
    return setup


def _fastbn_bn_epilogue_backward(residual):
    """Backward through ReLU (and the add) and BN, fused; returns dresidual too."""
    def setup(i):
        res = i.residual if residual else None
        y, mean, invstd = fastbn.batch_norm_train(i.x, i.weight, i.bias, i.eps, axis=i.shape.axis,
                                                  activation="relu", residual=res)
        out = _out(i.x)
        return lambda: fastbn.batch_norm_backward(
            i.dy, i.x, mean, invstd, i.weight, axis=i.shape.axis, bias=i.bias,
            activation="relu", output=y if residual else None, residual=residual, out=out)
    return setup


def _fastbn_ln_forward(i):
    return lambda: fastbn.layer_norm(i.x, _last_dim(i.shape), i.weight, i.bias, i.eps)


def _fastbn_ln_backward(i):
    ns = _last_dim(i.shape)
    _, mean, invstd = fastbn.layer_norm_train(i.x, ns, i.weight, i.bias, i.eps)
    return lambda: fastbn.layer_norm_backward(i.dy, i.x, mean, invstd, ns, i.weight)


def _fastbn_gn_forward(i):
    return lambda: fastbn.group_norm(i.x, i.groups, i.weight, i.bias, i.eps)


def _fastbn_gn_backward(i):
    _, mean, invstd = fastbn.group_norm_train(i.x, i.groups, i.weight, i.bias, i.eps)
    return lambda: fastbn.group_norm_backward(i.dy, i.x, mean, invstd, i.groups, i.weight)


def _fastbn_in_forward(i):
    return lambda: fastbn.instance_norm(i.x, weight=i.weight, bias=i.bias, eps=i.eps)


def _fastbn_in_backward(i):
    _, mean, invstd = fastbn.instance_norm_train(i.x, i.weight, i.bias, i.eps)
    return lambda: fastbn.instance_norm_backward(i.dy, i.x, mean, invstd, i.weight)


# NumPy setups ---------------------------------------------------------------

def _numpy_bn_forward(i):
    return lambda: reference.batch_norm_train(i.x, i.weight, i.bias, i.eps, i.shape.axis)


def _numpy_bn_backward(i):
    _, mean, invstd = reference.batch_norm_train(i.x, i.weight, i.bias, i.eps, i.shape.axis)
    return lambda: reference.batch_norm_backward(i.dy, i.x, mean, invstd, i.weight, i.shape.axis)


def _numpy_bn_eval(i):
    return lambda: reference.batch_norm_eval(i.x, i.running_mean, i.running_var, i.weight,
                                             i.bias, i.eps, i.shape.axis)


def _numpy_bn_epilogue_forward(residual):
    def setup(i):
        res = i.residual if residual else 0.0
        return lambda: np.maximum(
            reference.batch_norm_train(i.x, i.weight, i.bias, i.eps, i.shape.axis)[0] + res, 0)
    return setup


def _numpy_bn_epilogue_backward(residual):
    def setup(i):
        y, mean, invstd = reference.batch_norm_train(i.x, i.weight, i.bias, i.eps, i.shape.axis)
        y = np.maximum(y + (i.residual if residual else 0.0), 0)
        return lambda: reference.batch_norm_backward(np.where(y > 0, i.dy, 0), i.x, mean, invstd,
                                                     i.weight, i.shape.axis)
    return setup


def _numpy_ln_forward(i):
    return lambda: reference.layer_norm(i.x, _last_dim(i.shape), i.weight, i.bias, i.eps)


def _numpy_ln_backward(i):
    _, mean, invstd = reference.layer_norm(i.x, _last_dim(i.shape), i.weight, i.bias, i.eps)
    return lambda: reference.layer_norm_backward(i.dy, i.x, mean, invstd, _last_dim(i.shape),
                                                 i.weight)


def _numpy_gn_forward(i):
    """Group norm, and instance norm as group norm with one group per channel."""
    return lambda: reference.group_norm(i.x, i.groups, i.weight, i.bias, i.eps)


def _numpy_gn_backward(i):
    _, mean, invstd = reference.group_norm(i.x, i.groups, i.weight, i.bias, i.eps)
    return lambda: reference.group_norm_backward(i.dy, i.x, mean, invstd, i.groups, i.weight)


# The registry ---------------------------------------------------------------

OPS = (
    Op("batch_norm.forward", BATCH_NORM, ("batch_norm_train",), 2,
       _fastbn_bn_forward, _numpy_bn_forward, torch_ref.batch_norm_forward),
    Op("batch_norm.backward", BATCH_NORM, ("batch_norm_backward",), 3,
       _fastbn_bn_backward, _numpy_bn_backward, torch_ref.batch_norm_backward),
    Op("batch_norm.eval", BATCH_NORM, ("batch_norm",), 2,
       _fastbn_bn_eval, _numpy_bn_eval, torch_ref.batch_norm_eval),
    Op("batch_norm_relu.forward", BATCH_NORM_RELU, ("batch_norm_train",), 2,
       _fastbn_bn_epilogue_forward(False), _numpy_bn_epilogue_forward(False),
       torch_ref.batch_norm_relu_forward),
    Op("batch_norm_relu.backward", BATCH_NORM_RELU, ("batch_norm_backward",), 3,
       _fastbn_bn_epilogue_backward(False), _numpy_bn_epilogue_backward(False),
       torch_ref.batch_norm_relu_backward),
    Op("batch_norm_add_relu.forward", BATCH_NORM_RELU, ("batch_norm_train",), 3,
       _fastbn_bn_epilogue_forward(True), _numpy_bn_epilogue_forward(True),
       torch_ref.batch_norm_add_relu_forward),
    Op("batch_norm_add_relu.backward", BATCH_NORM_RELU, ("batch_norm_backward",), 5,
       _fastbn_bn_epilogue_backward(True), _numpy_bn_epilogue_backward(True),
       torch_ref.batch_norm_add_relu_backward),
    Op("layer_norm.forward", LAYER_NORM, ("layer_norm",), 2,
       _fastbn_ln_forward, _numpy_ln_forward, torch_ref.layer_norm_forward),
    Op("layer_norm.backward", LAYER_NORM, ("layer_norm_train", "layer_norm_backward"), 3,
       _fastbn_ln_backward, _numpy_ln_backward, torch_ref.layer_norm_backward),
    Op("group_norm.forward", GROUP_NORM, ("group_norm",), 2,
       _fastbn_gn_forward, _numpy_gn_forward, torch_ref.group_norm_forward),
    Op("group_norm.backward", GROUP_NORM, ("group_norm_train", "group_norm_backward"), 3,
       _fastbn_gn_backward, _numpy_gn_backward, torch_ref.group_norm_backward),
    Op("instance_norm.forward", INSTANCE_NORM, ("instance_norm",), 2,
       _fastbn_in_forward, _numpy_gn_forward, torch_ref.instance_norm_forward),
    Op("instance_norm.backward", INSTANCE_NORM, ("instance_norm_train", "instance_norm_backward"),
       3, _fastbn_in_backward, _numpy_gn_backward, torch_ref.instance_norm_backward),
)


def _names_of(op):
    """What ``--ops`` may call ``op`` by: its name, its family, its name without the suffix."""
    return op.name, op.family.name, op.name.partition(".")[0]


#: What ``--ops`` accepts besides op names: the families, and each op's name
#: without its ``.forward``/``.backward`` suffix (``batch_norm_add_relu``).
GROUPS = tuple(dict.fromkeys(name for op in OPS for name in _names_of(op)[1:]))


def available(op):
    """Whether this fastbn has every function ``op`` needs."""
    return all(hasattr(fastbn, name) for name in op.requires)


def select(names=None):
    """The ops named by op names or :data:`GROUPS` (all available ops when ``names`` is None).

    Raises
    ------
    ValueError
        For an unknown name, or an op this fastbn does not provide yet.
    """
    if names is None:
        return [op for op in OPS if available(op)]
    chosen = []
    for name in names:
        matches = [op for op in OPS if name in _names_of(op)]
        if not matches:
            valid = ", ".join(GROUPS + tuple(op.name for op in OPS))
            raise ValueError(f"unknown op {name!r}; choose from {valid}")
        for op in matches:
            if not available(op):
                missing = [n for n in op.requires if not hasattr(fastbn, n)]
                raise ValueError(f"op {op.name!r} needs fastbn.{missing[0]}, "
                                 f"which this fastbn does not have")
            if op not in chosen:
                chosen.append(op)
    return chosen


def cases(ops, shapes=None, quick=False):
    """``(op, shape)`` pairs: the given shapes (where the family accepts them) or the defaults."""
    pairs = []
    for op in ops:
        own = op.family.quick_shapes if quick else op.family.shapes
        pairs += [(op, s) for s in (shapes or own) if op.family.accepts(s)]
    return pairs
