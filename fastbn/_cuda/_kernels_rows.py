"""Channel-contiguous kernels: ``x2`` is ``(R, C)`` ((N, C) and channels-last).

One block per (column tile ``q``, row block ``j``).  A tile is ``tile``
adjacent channels (a power of two up to a warp): thread ``t`` owns column
``t % tile`` and rows ``t // tile`` apart by ``T // tile``, so a warp reads
whole row segments (coalesced).  The row blocks of ``rows_per_block`` rows are
fixed by the shape; statistics kernels write one partial per (channel, row
block), merged per channel by ``_kernels_common``.
"""

from numba import cuda, float64

from .._backend_cpu import MASK_FROM_OUTPUT
from ._device import (accumulate, block_reduce, input_grad_coefficients, input_grad_value,
                      normalized, shifted_moments, store_partial, upstream_grad)
from ._jit import kernel


@cuda.jit(device=True)
def _block_tile(R, rows_per_block, tile, nrb):
    """``(t, lane, height, c, j, r0, r1)``: this thread's column and this block's rows."""
    t = cuda.threadIdx.x
    q = cuda.blockIdx.x // nrb
    j = cuda.blockIdx.x - q * nrb
    r0 = j * rows_per_block
    r1 = min(R, r0 + rows_per_block)
    return t, t // tile, cuda.blockDim.x // tile, q * tile + t % tile, j, r0, r1


@kernel
def moment_partials(x2, rows_per_block, tile, part):
    """``part[c, j] = (count, mean, m2)`` of row block ``j`` of channel ``c``."""
    sh = cuda.shared.array(0, float64)
    R, C = x2.shape
    t, lane, height, c, j, r0, r1 = _block_tile(R, rows_per_block, tile, part.shape[1])
    n = shift = s1 = s2 = 0.0
    if c < C:
        for r in range(r0 + lane, r1, height):
            n, shift, s1, s2 = accumulate(n, shift, s1, s2, float64(x2[r, c]))
    n, mean, m2 = shifted_moments(n, shift, s1, s2)
    n, mean, m2 = block_reduce(sh, t, lane, tile, height, True, n, mean, m2)
    if lane == 0 and c < C:
        store_partial(part, c, j, n, mean, m2)


@kernel
def normalize(x2, rows_per_block, tile, nrb, mean, invstd, weight, bias, res2, has_residual,
              use_relu, y2):
    """``y = act((x - mean) * invstd * weight + bias [+ residual])`` over one tile per block."""
    R, C = x2.shape
    t, lane, height, c, j, r0, r1 = _block_tile(R, rows_per_block, tile, nrb)
    if c < C:
        m = mean[c]
        k = invstd[c] * weight[c]
        b = bias[c]
        for r in range(r0 + lane, r1, height):
            v = float64(res2[r, c]) if has_residual else 0.0
            y2[r, c] = normalized(float64(x2[r, c]), m, k, b, v, has_residual, use_relu)


@kernel
def grad_partials(dy2, x2, y2, rows_per_block, tile, mean, invstd, weight, bias, mask_mode, part):
    """``part[c, j] = (sum g, sum g * (x - mean), 0)`` of row block ``j``."""
    sh = cuda.shared.array(0, float64)
    R, C = x2.shape
    t, lane, height, c, j, r0, r1 = _block_tile(R, rows_per_block, tile, part.shape[1])
    sg = sgx = 0.0
    if c < C:
        m = mean[c]
        k = invstd[c] * weight[c]
        b = bias[c]
        for r in range(r0 + lane, r1, height):
            xv = float64(x2[r, c])
            yv = float64(y2[r, c]) if mask_mode == MASK_FROM_OUTPUT else 0.0
            g = upstream_grad(float64(dy2[r, c]), xv, yv, m, k, b, mask_mode, 0.0)
            sg += g
            sgx += g * (xv - m)
    sg, sgx, _ = block_reduce(sh, t, lane, tile, height, False, sg, sgx, 0.0)
    if lane == 0 and c < C:
        store_partial(part, c, j, sg, sgx, 0.0)


@kernel
def input_grad(dy2, x2, y2, rows_per_block, tile, nrb, mean, invstd, weight, bias, mask_mode,
               sum_g, sum_gx, count, batch_stats, dx2, dres2, has_dres):
    """dx (and the activation-masked dy into ``dres2``) over one tile per block."""
    R, C = x2.shape
    t, lane, height, c, j, r0, r1 = _block_tile(R, rows_per_block, tile, nrb)
    if c < C:
        m = mean[c]
        k = invstd[c] * weight[c]
        b = bias[c]
        scale, slope, offset = input_grad_coefficients(sum_g[c], sum_gx[c], invstd[c], weight[c],
                                                        count, batch_stats, 0.0)
        for r in range(r0 + lane, r1, height):
            xv = float64(x2[r, c])
            yv = float64(y2[r, c]) if mask_mode == MASK_FROM_OUTPUT else 0.0
            g = upstream_grad(float64(dy2[r, c]), xv, yv, m, k, b, mask_mode, 0.0)
            if has_dres:
                dres2[r, c] = g
            dx2[r, c] = input_grad_value(g, xv, m, scale, slope, offset, batch_stats)
