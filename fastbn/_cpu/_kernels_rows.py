"""Channel-contiguous kernels: ``x2`` is ``(R, C)`` ((N, C) and channels-last).

Inner loops run across the contiguous channels (independent per-channel
accumulators, so they vectorise without reassociation); threads split the rows
into blocks of ``rows_per_block`` fixed by the shape, whose partials are folded
in block order by ``_kernels_common``.
"""

import numpy as np
from numba import prange

from ._jit import BOOL, F64, I64, PARTIALS, VEC_IN, arr, device, kernel, relu
from ._primitives import (MASK_FROM_OUTPUT, MASK_FROM_OUTPUT_STORE, MASK_NONE, MASK_RECOMPUTE,
                          input_grad_coefficients,
                          input_grad_value, upstream_grad)


@kernel(lambda t: (arr(t, 2, True), I64, PARTIALS))
def rows_partials(x2, rows_per_block, part):
    """``part[c, j] = (count, mean, m2)`` of row block ``j``, in one pass.

    Deviations from the block's first row as pivots (see
    ``_primitives.chunk_moments`` for why that is accurate).
    """
    R, C = x2.shape
    nblocks = (R + rows_per_block - 1) // rows_per_block
    for j in prange(nblocks):
        r0 = j * rows_per_block
        r1 = min(R, r0 + rows_per_block)
        pivot = np.empty(C)
        for c in range(C):
            pivot[c] = x2[r0, c]
        s1 = np.zeros(C)
        s2 = np.zeros(C)
        for r in range(r0, r1):
            for c in range(C):
                d = x2[r, c] - pivot[c]
                s1[c] += d
                s2[c] += d * d
        n = float(r1 - r0)
        for c in range(C):
            shift = s1[c] / n
            part[c, j, 0] = n
            part[c, j, 1] = pivot[c] + shift
            part[c, j, 2] = max(s2[c] - s1[c] * shift, 0.0)


@kernel(lambda t: (arr(t, 2, True), I64, VEC_IN, VEC_IN, VEC_IN, VEC_IN, arr(t, 2, True), BOOL, BOOL,
                   arr(t, 2)))
def rows_normalize(x2, rows_per_block, mean, invstd, weight, bias, res2, has_residual, use_relu, y2):
    """``y = act((x - mean) * invstd * weight + bias [+ residual])`` row block by row block."""
    R, C = x2.shape
    nblocks = (R + rows_per_block - 1) // rows_per_block
    k = invstd * weight
    for j in prange(nblocks):
        for r in range(j * rows_per_block, min(R, (j + 1) * rows_per_block)):
            for c in range(C):
                v = (x2[r, c] - mean[c]) * k[c] + bias[c]
                if has_residual:
                    v += res2[r, c]
                y2[r, c] = relu(v) if use_relu else v


@device
def _grad_sums_row(dy, x, y, mean, k, bias, mask_mode, sg, sgx):
    for c in range(x.shape[0]):
        g = upstream_grad(dy[c], x[c], y[c], mean[c], k[c], bias[c], mask_mode)
        sg[c] += g
        sgx[c] += g * (x[c] - mean[c])


@kernel(lambda t: (arr(t, 2, True), arr(t, 2, True), arr(t, 2, True), I64, VEC_IN, VEC_IN, VEC_IN,
                   VEC_IN, I64, PARTIALS))
def rows_grad_partials(dy2, x2, y2, rows_per_block, mean, invstd, weight, bias, mask_mode, part):
    """``part[c, j] = (sum g, sum g * (x - mean))`` of row block ``j``."""
    R, C = x2.shape
    nblocks = (R + rows_per_block - 1) // rows_per_block
    k = invstd * weight
    for j in prange(nblocks):
        sg = np.zeros(C)
        sgx = np.zeros(C)
        for r in range(j * rows_per_block, min(R, (j + 1) * rows_per_block)):
            if mask_mode == MASK_RECOMPUTE:
                _grad_sums_row(dy2[r], x2[r], y2[r], mean, k, bias, MASK_RECOMPUTE, sg, sgx)
            elif mask_mode >= MASK_FROM_OUTPUT:
                _grad_sums_row(dy2[r], x2[r], y2[r], mean, k, bias, MASK_FROM_OUTPUT, sg, sgx)
            else:
                _grad_sums_row(dy2[r], x2[r], y2[r], mean, k, bias, MASK_NONE, sg, sgx)
        for c in range(C):
            part[c, j, 0] = sg[c]
            part[c, j, 1] = sgx[c]


@device
def _input_grad_row(dy, x, y, mean, k, bias, mask_mode, a, c1, c2, batch_stats, dx, dres):
    """dx over one row, and g into ``dres`` in ``MASK_FROM_OUTPUT_STORE`` mode."""
    for c in range(x.shape[0]):
        g = upstream_grad(dy[c], x[c], y[c], mean[c], k[c], bias[c], mask_mode)
        if mask_mode == MASK_FROM_OUTPUT_STORE:
            dres[c] = g
        dx[c] = input_grad_value(g, x[c], mean[c], a[c], c1[c], c2[c], batch_stats)


@kernel(lambda t: (arr(t, 2, True), arr(t, 2, True), arr(t, 2, True), I64, VEC_IN, VEC_IN, VEC_IN,
                   VEC_IN, I64, VEC_IN, VEC_IN, F64, BOOL, arr(t, 2), arr(t, 2)))
def rows_input_grad(dy2, x2, y2, rows_per_block, mean, invstd, weight, bias, mask_mode, sum_g, sum_gx,
                    count, batch_stats, dx2, dres2):
    """dx row block by row block from the per-channel gradient sums over ``count`` rows."""
    R, C = x2.shape
    nblocks = (R + rows_per_block - 1) // rows_per_block
    k = invstd * weight
    a = np.empty(C)
    c1 = np.empty(C)
    c2 = np.empty(C)
    for c in range(C):
        a[c], c1[c], c2[c] = input_grad_coefficients(sum_g[c], sum_gx[c], invstd[c], weight[c],
                                                     count, batch_stats)
    for j in prange(nblocks):
        for r in range(j * rows_per_block, min(R, (j + 1) * rows_per_block)):
            dy, x, y, dx, dres = dy2[r], x2[r], y2[r], dx2[r], dres2[r]
            if mask_mode == MASK_RECOMPUTE:
                _input_grad_row(dy, x, y, mean, k, bias, MASK_RECOMPUTE, a, c1, c2, batch_stats,
                                dx, dres)
            elif mask_mode == MASK_FROM_OUTPUT:
                _input_grad_row(dy, x, y, mean, k, bias, MASK_FROM_OUTPUT, a, c1, c2, batch_stats,
                                dx, dres)
            elif mask_mode == MASK_FROM_OUTPUT_STORE:
                _input_grad_row(dy, x, y, mean, k, bias, MASK_FROM_OUTPUT_STORE, a, c1, c2,
                                batch_stats, dx, dres)
            else:
                _input_grad_row(dy, x, y, mean, k, bias, MASK_NONE, a, c1, c2, batch_stats, dx,
                                dres)
