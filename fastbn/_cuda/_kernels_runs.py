"""Channel-runs kernels: ``x`` is an ``(O, C, I)`` array, flat, with runs of ``I > 1`` elements.

One block per (channel ``c``, chunk ``j``): the chunk partition is the CPU's
(``group`` whole runs, or ``nsub`` pieces of ``width`` elements of one run),
fixed by the shape and ``config.CHUNK_ELEMENTS``.  The block's threads walk the
chunk's elements in memory order (coalesced), ``T`` apart (``_walks``).
Statistics kernels write one partial per block, merged per channel by
``_kernels_common``; the elementwise kernels use the same blocks.
"""

from numba import cuda, float64

from . import _walks
from ._device import block_reduce, chunk_bounds, input_grad_coefficients, store_partial, walk_start
from ._jit import kernel


@cuda.jit(device=True)
def _block_chunk(O, C, I, group, width, nsub, nch):
    """``(c, j, walk)``: this block's channel and chunk, and this thread's walk of it."""
    c = cuda.blockIdx.x // nch
    j = cuda.blockIdx.x - c * nch
    o0, o1, i0, i1 = chunk_bounds(j, O, I, group, width, nsub)
    w = i1 - i0
    T = cuda.blockDim.x
    o, i = walk_start(cuda.threadIdx.x, o0, i0, w)
    step_o, step_i = T // w, T % w
    S = C * I
    return c, j, (o * S + c * I + i, i, o1 * S + c * I + i0, i0, w, step_o * S + step_i, step_i,
                  S - w)


@kernel
def moment_partials(x, O, C, I, group, width, nsub, part):
    """``part[c, j] = (count, mean, m2)`` of chunk ``j`` of channel ``c``."""
    sh = cuda.shared.array(0, float64)
    t = cuda.threadIdx.x
    c, j, walk = _block_chunk(O, C, I, group, width, nsub, part.shape[1])
    n, mean, m2 = _walks.moments(x, walk)
    n, mean, m2 = block_reduce(sh, t, t, 1, cuda.blockDim.x, True, n, mean, m2)
    if t == 0:
        store_partial(part, c, j, n, mean, m2)


@kernel
def normalize(x, O, C, I, group, width, nsub, nch, mean, invstd, weight, bias, res,
              has_residual, use_relu, y):
    """``y = act((x - mean) * invstd * weight + bias [+ residual])`` over one chunk per block."""
    c, _, walk = _block_chunk(O, C, I, group, width, nsub, nch)
    _walks.normalize(x, res, y, walk, mean[c], invstd[c] * weight[c], bias[c], has_residual,
                     use_relu)


@kernel
def grad_partials(dy, x, y, O, C, I, group, width, nsub, mean, invstd, weight, bias, mask_mode,
                  part):
    """``part[c, j] = (sum g, sum g * (x - mean), 0)`` of chunk ``j`` (g: dy through the ReLU)."""
    sh = cuda.shared.array(0, float64)
    t = cuda.threadIdx.x
    c, j, walk = _block_chunk(O, C, I, group, width, nsub, part.shape[1])
    sg, sgx = _walks.grad_sums(dy, x, y, walk, mean[c], invstd[c] * weight[c], bias[c], mask_mode)
    sg, sgx, _ = block_reduce(sh, t, t, 1, cuda.blockDim.x, False, sg, sgx, 0.0)
    if t == 0:
        store_partial(part, c, j, sg, sgx, 0.0)


@kernel
def input_grad(dy, x, y, O, C, I, group, width, nsub, nch, mean, invstd, weight, bias, mask_mode,
               sum_g, sum_gx, count, batch_stats, dx, dres, has_dres):
    """dx (and the activation-masked dy into ``dres``) over one chunk per block.

    ``sum_g`` and ``sum_gx`` are the per-channel ``sum g`` and
    ``sum g * (x - mean)`` over ``count`` elements per channel.
    """
    c, _, walk = _block_chunk(O, C, I, group, width, nsub, nch)
    coefficients = input_grad_coefficients(sum_g[c], sum_gx[c], invstd[c], weight[c], count,
                                           batch_stats, 0.0)
    _walks.input_grad(dy, x, y, walk, mean[c], invstd[c] * weight[c], bias[c], mask_mode,
                      coefficients, batch_stats, dx, dres, has_dres)
