"""Channel-contiguous kernels: ``x`` is an ``(R, C)`` array, flat ((N, C) and channels-last).

One block per (column tile ``q``, row block ``j``).  A tile is ``tile``
adjacent channels (a power of two up to a warp): thread ``t`` owns column
``t % tile`` and rows ``t // tile`` apart by ``T // tile``, so a warp reads
whole row segments (coalesced); that is a walk of ``_walks`` one element wide.
The row blocks of ``rows_per_block`` rows are fixed by the shape; statistics
kernels write one partial per (channel, row block), merged per channel by
``_kernels_common``.
"""

from numba import cuda, float64

from . import _walks
from ._device import block_reduce, input_grad_coefficients, store_partial
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


@cuda.jit(device=True)
def _column_walk(C, lane, height, c, r0, r1):
    """The walk of rows ``r0 + lane, r0 + lane + height, ...`` below ``r1`` of column ``c``."""
    return (r0 + lane) * C + c, 0, r1 * C + c, 0, 1, height * C, 0, C - 1


@kernel
def moment_partials(x, R, C, rows_per_block, tile, part):
    """``part[c, j] = (count, mean, m2)`` of row block ``j`` of channel ``c``."""
    sh = cuda.shared.array(0, float64)
    t, lane, height, c, j, r0, r1 = _block_tile(R, rows_per_block, tile, part.shape[1])
    n = mean = m2 = 0.0
    if c < C:
        n, mean, m2 = _walks.moments(x, _column_walk(C, lane, height, c, r0, r1))
    n, mean, m2 = block_reduce(sh, t, lane, tile, height, True, n, mean, m2)
    if lane == 0 and c < C:
        store_partial(part, c, j, n, mean, m2)


@kernel
def normalize(x, R, C, rows_per_block, tile, nrb, mean, invstd, weight, bias, res, has_residual,
              use_relu, y):
    """``y = act((x - mean) * invstd * weight + bias [+ residual])`` over one tile per block."""
    _, lane, height, c, _, r0, r1 = _block_tile(R, rows_per_block, tile, nrb)
    if c < C:
        _walks.normalize(x, res, y, _column_walk(C, lane, height, c, r0, r1), mean[c],
                         invstd[c] * weight[c], bias[c], has_residual, use_relu)


@kernel
def grad_partials(dy, x, y, R, C, rows_per_block, tile, mean, invstd, weight, bias, mask_mode,
                  part):
    """``part[c, j] = (sum g, sum g * (x - mean), 0)`` of row block ``j``."""
    sh = cuda.shared.array(0, float64)
    t, lane, height, c, j, r0, r1 = _block_tile(R, rows_per_block, tile, part.shape[1])
    sg = sgx = 0.0
    if c < C:
        sg, sgx = _walks.grad_sums(dy, x, y, _column_walk(C, lane, height, c, r0, r1), mean[c],
                                   invstd[c] * weight[c], bias[c], mask_mode)
    sg, sgx, _ = block_reduce(sh, t, lane, tile, height, False, sg, sgx, 0.0)
    if lane == 0 and c < C:
        store_partial(part, c, j, sg, sgx, 0.0)


@kernel
def input_grad(dy, x, y, R, C, rows_per_block, tile, nrb, mean, invstd, weight, bias, mask_mode,
               sum_g, sum_gx, count, batch_stats, dx, dres, has_dres):
    """dx (and the activation-masked dy into ``dres``) over one tile per block."""
    _, lane, height, c, _, r0, r1 = _block_tile(R, rows_per_block, tile, nrb)
    if c < C:
        coefficients = input_grad_coefficients(sum_g[c], sum_gx[c], invstd[c], weight[c], count,
                                               batch_stats, 0.0)
        _walks.input_grad(dy, x, y, _column_walk(C, lane, height, c, r0, r1), mean[c],
                          invstd[c] * weight[c], bias[c], mask_mode, coefficients, batch_stats,
                          dx, dres, has_dres)
