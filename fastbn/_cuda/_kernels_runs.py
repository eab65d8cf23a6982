"""Channel-runs kernels: ``x3`` is ``(O, C, I)`` with runs of ``I > 1`` elements.

One block per (channel ``c``, chunk ``j``): the chunk partition is the CPU's
(``group`` whole runs, or ``nsub`` pieces of ``width`` elements of one run),
fixed by the shape and ``config.CHUNK_ELEMENTS``.  The block's threads walk the
chunk's elements in memory order (coalesced), ``T`` apart.  Statistics kernels
write one partial per block, merged per channel by ``_kernels_common``; the
elementwise kernels use the same blocks.
"""

from numba import cuda, float64

from .._backend_cpu import MASK_FROM_OUTPUT

from ._device import (accumulate, block_reduce, chunk_bounds, input_grad_coefficients,
                      input_grad_value, normalized, shifted_moments, store_partial, upstream_grad,
                      walk_next, walk_start)
from ._jit import kernel


@cuda.jit(device=True)
def _block_chunk(x3, group, width, nsub, nch):
    """``(c, j, o0, o1, i0, w, step_o, step_i)`` of this block's chunk and walk."""
    O, C, I = x3.shape
    c = cuda.blockIdx.x // nch
    j = cuda.blockIdx.x - c * nch
    o0, o1, i0, i1 = chunk_bounds(j, O, I, group, width, nsub)
    w = i1 - i0
    T = cuda.blockDim.x
    return c, j, o0, o1, i0, w, T // w, T % w


@kernel
def moment_partials(x3, group, width, nsub, part):
    """``part[c, j] = (count, mean, m2)`` of chunk ``j`` of channel ``c``."""
    sh = cuda.shared.array(0, float64)
    t = cuda.threadIdx.x
    c, j, o0, o1, i0, w, step_o, step_i = _block_chunk(x3, group, width, nsub, part.shape[1])
    n = shift = s1 = s2 = 0.0
    o, i = walk_start(t, o0, i0, w)
    while o < o1:
        n, shift, s1, s2 = accumulate(n, shift, s1, s2, float64(x3[o, c, i]))
        o, i = walk_next(o, i, i0, w, step_o, step_i)
    n, mean, m2 = shifted_moments(n, shift, s1, s2)
    n, mean, m2 = block_reduce(sh, t, t, 1, cuda.blockDim.x, True, n, mean, m2)
    if t == 0:
        store_partial(part, c, j, n, mean, m2)


@kernel
def normalize(x3, group, width, nsub, nch, mean, invstd, weight, bias, res3, has_residual,
              use_relu, y3):
    """``y = act((x - mean) * invstd * weight + bias [+ residual])`` over one chunk per block."""
    t = cuda.threadIdx.x
    c, j, o0, o1, i0, w, step_o, step_i = _block_chunk(x3, group, width, nsub, nch)
    m = mean[c]
    k = invstd[c] * weight[c]
    b = bias[c]
    o, i = walk_start(t, o0, i0, w)
    while o < o1:
        r = float64(res3[o, c, i]) if has_residual else 0.0
        y3[o, c, i] = normalized(float64(x3[o, c, i]), m, k, b, r, has_residual, use_relu)
        o, i = walk_next(o, i, i0, w, step_o, step_i)


@kernel
def grad_partials(dy3, x3, y3, group, width, nsub, mean, invstd, weight, bias, mask_mode, part):
    """``part[c, j] = (sum g, sum g * (x - mean), 0)`` of chunk ``j`` (g: dy through the ReLU)."""
    sh = cuda.shared.array(0, float64)
    t = cuda.threadIdx.x
    c, j, o0, o1, i0, w, step_o, step_i = _block_chunk(x3, group, width, nsub, part.shape[1])
    m = mean[c]
    k = invstd[c] * weight[c]
    b = bias[c]
    sg = sgx = 0.0
    o, i = walk_start(t, o0, i0, w)
    while o < o1:
        xv = float64(x3[o, c, i])
        yv = float64(y3[o, c, i]) if mask_mode == MASK_FROM_OUTPUT else 0.0
        g = upstream_grad(float64(dy3[o, c, i]), xv, yv, m, k, b, mask_mode, 0.0)
        sg += g
        sgx += g * (xv - m)
        o, i = walk_next(o, i, i0, w, step_o, step_i)
    sg, sgx, _ = block_reduce(sh, t, t, 1, cuda.blockDim.x, False, sg, sgx, 0.0)
    if t == 0:
        store_partial(part, c, j, sg, sgx, 0.0)


@kernel
def input_grad(dy3, x3, y3, group, width, nsub, nch, mean, invstd, weight, bias, mask_mode, sum_g,
               sum_gx, count, batch_stats, dx3, dres3, has_dres):
    """dx (and the activation-masked dy into ``dres3``) over one chunk per block.

    ``sum_g`` and ``sum_gx`` are the per-channel ``sum g`` and
    ``sum g * (x - mean)`` over ``count`` elements per channel.
    """
    t = cuda.threadIdx.x
    c, j, o0, o1, i0, w, step_o, step_i = _block_chunk(x3, group, width, nsub, nch)
    m = mean[c]
    k = invstd[c] * weight[c]
    b = bias[c]
    scale, slope, offset = input_grad_coefficients(sum_g[c], sum_gx[c], invstd[c], weight[c],
                                                    count, batch_stats, 0.0)
    o, i = walk_start(t, o0, i0, w)
    while o < o1:
        xv = float64(x3[o, c, i])
        yv = float64(y3[o, c, i]) if mask_mode == MASK_FROM_OUTPUT else 0.0
        g = upstream_grad(float64(dy3[o, c, i]), xv, yv, m, k, b, mask_mode, 0.0)
        if has_dres:
            dres3[o, c, i] = g
        dx3[o, c, i] = input_grad_value(g, xv, m, scale, slope, offset, batch_stats)
        o, i = walk_next(o, i, i0, w, step_o, step_i)
