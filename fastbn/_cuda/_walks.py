"""A thread's pass over its elements of a block's walk, shared by the runs and rows kernels.

Arrays are flat views of ``(O, C, I)`` arrays; channel ``c``'s element
``(o, i)`` is at ``o * C * I + c * I + i``.  A chunk is runs ``o0 <= o < o1``,
elements ``i0 <= i < i0 + w`` of each (rows family: ``I == 1``, ``w == 1``,
one column's rows).  A walk ``(e, i, e1, i0, w, step_e, step_i, carry)``
visits the chunk's elements ``T`` apart from flat offset ``e`` (run element
``i``) while ``e < e1 = o1 * C * I + c * I + i0`` (``walk_next``: ``e`` moves
``step_e``, and ``carry`` more when ``i`` wraps).  Each step loads ``UNROLL``
elements of every input before it uses any: one element a step leaves one
load in flight per thread (a store may alias the next load as far as the
compiler knows, and a sum waits on each load), too few to keep the memory
busy.  A step's offsets serve all arrays.  The sums still add the elements
in walk order into one accumulator: the same rounding as one element a step.
"""

from numba import cuda, float64, uint64

from .._backend_cpu import MASK_FROM_OUTPUT
from ._device import (UNROLL, accumulate, gather, input_grad_value, normalized, shifted_moments,
                      upstream_grad, walk_ahead)


@cuda.jit(device=True)
def moments(x, walk):
    """``(count, mean, m2)`` of this thread's elements of ``x``."""
    e, i, e1 = walk[0], walk[1], walk[2]
    p = cuda.local.array(UNROLL, uint64)
    xv = cuda.local.array(UNROLL, float64)
    n = shift = s1 = s2 = 0.0
    while e < e1:
        e, i, inside = walk_ahead(p, walk, e, i)
        gather(xv, x, p)
        for u in range(UNROLL):
            if u < inside:
                n, shift, s1, s2 = accumulate(n, shift, s1, s2, xv[u])
    return shifted_moments(n, shift, s1, s2)


@cuda.jit(device=True)
def normalize(x, res, y, walk, m, k, b, has_residual, use_relu):
    """``y = act((x - m) * k + b [+ res])`` over this thread's elements."""
    e, i, e1 = walk[0], walk[1], walk[2]
    p = cuda.local.array(UNROLL, uint64)
    xv = cuda.local.array(UNROLL, float64)
    rv = cuda.local.array(UNROLL, float64)
    while e < e1:
        e, i, inside = walk_ahead(p, walk, e, i)
        gather(xv, x, p)
        if has_residual:
            gather(rv, res, p)
        for u in range(UNROLL):
            if u < inside:
                r = rv[u] if has_residual else 0.0
                y[p[u]] = normalized(xv[u], m, k, b, r, has_residual, use_relu)


@cuda.jit(device=True)
def _upstream(dy, x, y, p, inside, v, m, k, b, mask_mode):
    """The step's g (dy through the ReLU) into ``v[0]``, x into ``v[1]`` (y: ``v[2]``)."""
    gather(v[0], dy, p)
    gather(v[1], x, p)
    if mask_mode == MASK_FROM_OUTPUT:
        gather(v[2], y, p)
    for u in range(UNROLL):
        if u < inside:
            yu = v[2, u] if mask_mode == MASK_FROM_OUTPUT else 0.0
            v[0, u] = upstream_grad(v[0, u], v[1, u], yu, m, k, b, mask_mode, 0.0)


@cuda.jit(device=True)
def grad_sums(dy, x, y, walk, m, k, b, mask_mode):
    """``(sum g, sum g * (x - m))`` over this thread's elements."""
    e, i, e1 = walk[0], walk[1], walk[2]
    p = cuda.local.array(UNROLL, uint64)
    v = cuda.local.array((3, UNROLL), float64)
    sg = sgx = 0.0
    while e < e1:
        e, i, inside = walk_ahead(p, walk, e, i)
        _upstream(dy, x, y, p, inside, v, m, k, b, mask_mode)
        for u in range(UNROLL):
            if u < inside:
                sg += v[0, u]
                sgx += v[0, u] * (v[1, u] - m)
    return sg, sgx


@cuda.jit(device=True)
def input_grad(dy, x, y, walk, m, k, b, mask_mode, coefficients, batch_stats, dx, dres, has_dres):
    """dx (and g into ``dres`` if ``has_dres``) over this thread's elements."""
    scale, slope, offset = coefficients
    e, i, e1 = walk[0], walk[1], walk[2]
    p = cuda.local.array(UNROLL, uint64)
    v = cuda.local.array((3, UNROLL), float64)
    while e < e1:
        e, i, inside = walk_ahead(p, walk, e, i)
        _upstream(dy, x, y, p, inside, v, m, k, b, mask_mode)
        for u in range(UNROLL):
            if u < inside:
                if has_dres:
                    dres[p[u]] = v[0, u]
                dx[p[u]] = input_grad_value(v[0, u], v[1, u], m, scale, slope, offset,
                                            batch_stats)
