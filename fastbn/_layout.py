"""Canonical views: every batch-norm-like op becomes ``(outer, C, inner)``.

Statistics run over ``outer`` and ``inner`` for each of the ``C`` kept
positions.  The reduced axes may be visited in any order, so the plan sorts them
by memory stride: a dense array of any axis order (C- or F-ordered,
channels-last, permuted) then maps to a C-contiguous ``(outer, C, inner)`` view
without a copy.  Non-dense input (slices with steps, broadcast or negative
strides) is copied once into that layout.  ``inner == 1`` is the
channel-contiguous case ((N, C), channels-last) that kernels vectorise across C.

The plan is metadata only (shape and strides), so array libraries other than
NumPy (device arrays) apply the same plan.
"""

import functools
import math
from typing import NamedTuple

import numpy as np

from . import _memory


class ViewPlan(NamedTuple):
    """How to map an array onto its canonical ``(outer, kept, inner)`` view."""

    perm: tuple          # axis order: reduced-outer..., kept..., reduced-inner...
    outer: int
    kept: int
    inner: int
    kept_axes: tuple     # the kept axes in the order they appear in ``perm``
    inverse: tuple       # the axis order that undoes ``perm`` (its argsort)

    @property
    def shape3(self):
        return (self.outer, self.kept, self.inner)


def plan_view(shape, strides, kept_axes):
    """Plan the canonical view of an array of ``shape``/``strides`` keeping ``kept_axes``.

    ``kept_axes`` are normalised (non-negative, unique) axis indices.  When the
    kept axes are adjacent in memory order the view is free; otherwise the kept
    axes go first (``outer == 1``) and applying the plan copies.  Plans are
    remembered per geometry: a training loop asks for the same few every call.
    """
    return _plan_view(tuple(shape), tuple(strides), tuple(kept_axes))


@functools.lru_cache(maxsize=256)
def _plan_view(shape, strides, kept_axes):
    ndim = len(shape)
    kept = tuple(sorted(kept_axes))
    by_stride = sorted(range(ndim), key=lambda a: (-abs(strides[a]), a))
    # Size-1 axes never affect contiguity; keep the others in memory order.
    order = [a for a in by_stride if shape[a] != 1] + [a for a in range(ndim) if shape[a] == 1]
    kept_pos = [i for i, a in enumerate(order) if a in kept]
    if kept_pos and kept_pos[-1] - kept_pos[0] + 1 == len(kept_pos):
        first, last = kept_pos[0], kept_pos[-1] + 1
        outer_axes = order[:first]
        kept_order = order[first:last]
        inner_axes = order[last:]
    else:
        outer_axes = []
        kept_order = [a for a in order if a in kept]
        inner_axes = [a for a in order if a not in kept]
    perm = tuple(outer_axes) + tuple(kept_order) + tuple(inner_axes)
    size = lambda axes: math.prod(shape[a] for a in axes)
    inverse = tuple(sorted(range(ndim), key=perm.__getitem__))
    return ViewPlan(perm, size(outer_axes), size(kept_order), size(inner_axes), tuple(kept_order),
                    inverse)


def canonical(x, plan):
    """The C-contiguous ``(outer, kept, inner)`` view of NumPy array ``x`` (a copy only if not dense)."""
    xt = x.transpose(plan.perm)
    if not xt.flags.c_contiguous:
        xt = np.ascontiguousarray(xt)
    return xt.reshape(plan.shape3)


def canonical_writable(out, plan):
    """The canonical view of ``out`` if writing it writes ``out`` itself, else None."""
    ot = out.transpose(plan.perm)
    return ot.reshape(plan.shape3) if ot.flags.c_contiguous else None


def empty_like_input(x_shape, plan, dtype):
    """A new array of ``x_shape`` laid out like the input (same axis order in memory).

    Returns ``(full, view3)``: the array in the input's shape and its canonical
    C-contiguous view (which shares memory with it).
    """
    permuted_shape = tuple(x_shape[a] for a in plan.perm)
    buf = _memory.empty(permuted_shape, dtype)
    return buf.transpose(plan.inverse), buf.reshape(plan.shape3)


def kept_shape_from_flat(vec, x_shape, plan):
    """Reshape a per-kept-position vector (length ``plan.kept``) to the kept axes' shape in axis order."""
    ordered = vec.reshape(tuple(x_shape[a] for a in plan.kept_axes))
    return ordered.transpose(np.argsort(plan.kept_axes))
