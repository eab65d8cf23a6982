"""Channel-contiguous kernels: ``x2`` is ``(R, C)`` ((N, C) and channels-last).

Inner loops run across the contiguous channels (independent per-channel
accumulators, so they vectorise without reassociation).  With few channels a
row is too short for a vector loop to pay off, so ``m`` consecutive rows are
treated as one contiguous *tile* of ``m * C`` elements against per-channel
vectors repeated ``m`` times (``m = tile_rows``); rows past the last full tile
of a block run one at a time.  Threads split the rows into blocks of
``rows_per_block`` (a multiple of ``m``) fixed by the shape, whose partials are
folded in block order by ``_kernels_common``, so nothing depends on the thread
count.
"""

import numpy as np
from numba import prange

from ._jit import BOOL, F64, I64, PARTIALS, VEC_IN, arr, device, kernel, relu
from ._primitives import (MASK_FROM_OUTPUT, MASK_FROM_OUTPUT_STORE, MASK_NONE, MASK_RECOMPUTE,
                          input_grad_coefficients, input_grad_value, upstream_grad)


@device
def _tiled(v, m):
    """Per-channel vector ``v`` repeated ``m`` times (one value per element of a tile)."""
    C = v.shape[0]
    out = np.empty(m * C)
    for q in range(m):
        for c in range(C):
            out[q * C + c] = v[c]
    return out


@device
def _tiles(a2, r0, r1, m):
    """Rows ``[r0, r1)`` of ``a2`` as full tiles ``(k, m * C)``, and the first row left over."""
    k = (r1 - r0) // m
    return a2[r0:r0 + k * m].reshape((k, m * a2.shape[1])), r0 + k * m


@device
def _fold_tiles(acc_t, out, C):
    """``out[c] += sum over q of acc_t[q * C + c]``, in tile order."""
    for q in range(acc_t.shape[0] // C):
        for c in range(C):
            out[c] += acc_t[q * C + c]


@device
def _block(j, R, rows_per_block):
    r0 = j * rows_per_block
    return r0, min(R, r0 + rows_per_block)


@device
def _deviation_sums(x, pivot, s1, s2):
    for i in range(x.shape[0]):
        d = x[i] - pivot[i]
        s1[i] += d
        s2[i] += d * d


@kernel(lambda t: (arr(t, 2, True), I64, I64, PARTIALS))
def rows_partials(x2, rows_per_block, tile_rows, part):
    """``part[c, j] = (count, mean, m2)`` of row block ``j``, in one pass.

    Deviations from the block's first row as pivots (see
    ``_primitives.chunk_moments`` for why that is accurate).
    """
    R, C = x2.shape
    m = tile_rows
    for j in prange((R + rows_per_block - 1) // rows_per_block):
        r0, r1 = _block(j, R, rows_per_block)
        pivot = np.empty(C)
        for c in range(C):
            pivot[c] = x2[r0, c]
        tiles, rest = _tiles(x2, r0, r1, m)
        pivot_t = _tiled(pivot, m)
        s1_t = np.zeros(m * C)
        s2_t = np.zeros(m * C)
        for t in range(tiles.shape[0]):
            _deviation_sums(tiles[t], pivot_t, s1_t, s2_t)
        s1 = np.zeros(C)
        s2 = np.zeros(C)
        _fold_tiles(s1_t, s1, C)
        _fold_tiles(s2_t, s2, C)
        for r in range(rest, r1):
            _deviation_sums(x2[r], pivot, s1, s2)
        n = float(r1 - r0)
        for c in range(C):
            shift = s1[c] / n
            part[c, j, 0] = n
            part[c, j, 1] = pivot[c] + shift
            part[c, j, 2] = max(s2[c] - s1[c] * shift, 0.0)


@device
def _normalize_span(x, mean, k, bias, res, has_residual, use_relu, y):
    for i in range(x.shape[0]):
        v = (x[i] - mean[i]) * k[i] + bias[i]
        if has_residual:
            v += res[i]
        y[i] = relu(v) if use_relu else v


@kernel(lambda t: (arr(t, 2, True), I64, I64, VEC_IN, VEC_IN, VEC_IN, VEC_IN, arr(t, 2, True), BOOL,
                   BOOL, arr(t, 2)))
def rows_normalize(x2, rows_per_block, tile_rows, mean, invstd, weight, bias, res2, has_residual,
                   use_relu, y2):
    """``y = act((x - mean) * invstd * weight + bias [+ residual])`` row block by row block."""
    R, C = x2.shape
    m = tile_rows
    k = invstd * weight
    for j in prange((R + rows_per_block - 1) // rows_per_block):
        r0, r1 = _block(j, R, rows_per_block)
        tiles, rest = _tiles(x2, r0, r1, m)
        res_t, _ = _tiles(res2, r0, r1, m)
        y_t, _ = _tiles(y2, r0, r1, m)
        mean_t, k_t, bias_t = _tiled(mean, m), _tiled(k, m), _tiled(bias, m)
        for t in range(tiles.shape[0]):
            _normalize_span(tiles[t], mean_t, k_t, bias_t, res_t[t], has_residual, use_relu, y_t[t])
        for r in range(rest, r1):
            _normalize_span(x2[r], mean, k, bias, res2[r], has_residual, use_relu, y2[r])


@device
def _grad_sums_span(dy, x, y, mean, k, bias, mask_mode, sg, sgx):
    for i in range(x.shape[0]):
        g = upstream_grad(dy[i], x[i], y[i], mean[i], k[i], bias[i], mask_mode)
        sg[i] += g
        sgx[i] += g * (x[i] - mean[i])


@device
def _grad_sums_mode(dy, x, y, mean, k, bias, mask_mode, sg, sgx):
    """``_grad_sums_span`` specialised by a literal mask mode (so it vectorises)."""
    if mask_mode == MASK_RECOMPUTE:
        _grad_sums_span(dy, x, y, mean, k, bias, MASK_RECOMPUTE, sg, sgx)
    elif mask_mode >= MASK_FROM_OUTPUT:
        _grad_sums_span(dy, x, y, mean, k, bias, MASK_FROM_OUTPUT, sg, sgx)
    else:
        _grad_sums_span(dy, x, y, mean, k, bias, MASK_NONE, sg, sgx)


@kernel(lambda t: (arr(t, 2, True), arr(t, 2, True), arr(t, 2, True), I64, I64, VEC_IN, VEC_IN,
                   VEC_IN, VEC_IN, I64, PARTIALS))
def rows_grad_partials(dy2, x2, y2, rows_per_block, tile_rows, mean, invstd, weight, bias, mask_mode,
                       part):
    """``part[c, j] = (sum g, sum g * (x - mean))`` of row block ``j``."""
    R, C = x2.shape
    m = tile_rows
    k = invstd * weight
    for j in prange((R + rows_per_block - 1) // rows_per_block):
        r0, r1 = _block(j, R, rows_per_block)
        dy_t, rest = _tiles(dy2, r0, r1, m)
        x_t, _ = _tiles(x2, r0, r1, m)
        y_t, _ = _tiles(y2, r0, r1, m)
        mean_t, k_t, bias_t = _tiled(mean, m), _tiled(k, m), _tiled(bias, m)
        sg_t = np.zeros(m * C)
        sgx_t = np.zeros(m * C)
        for t in range(x_t.shape[0]):
            _grad_sums_mode(dy_t[t], x_t[t], y_t[t], mean_t, k_t, bias_t, mask_mode, sg_t, sgx_t)
        sg = np.zeros(C)
        sgx = np.zeros(C)
        _fold_tiles(sg_t, sg, C)
        _fold_tiles(sgx_t, sgx, C)
        for r in range(rest, r1):
            _grad_sums_mode(dy2[r], x2[r], y2[r], mean, k, bias, mask_mode, sg, sgx)
        for c in range(C):
            part[c, j, 0] = sg[c]
            part[c, j, 1] = sgx[c]


@device
def _input_grad_span(dy, x, y, mean, k, bias, mask_mode, a, c1, c2, batch_stats, dx, dres):
    """dx over a span, and g into ``dres`` in ``MASK_FROM_OUTPUT_STORE`` mode."""
    for i in range(x.shape[0]):
        g = upstream_grad(dy[i], x[i], y[i], mean[i], k[i], bias[i], mask_mode)
        if mask_mode == MASK_FROM_OUTPUT_STORE:
            dres[i] = g
        dx[i] = input_grad_value(g, x[i], mean[i], a[i], c1[i], c2[i], batch_stats)


@device
def _input_grad_mode(dy, x, y, mean, k, bias, mask_mode, a, c1, c2, batch_stats, dx, dres):
    """``_input_grad_span`` specialised by a literal mask mode (so it vectorises)."""
    if mask_mode == MASK_RECOMPUTE:
        _input_grad_span(dy, x, y, mean, k, bias, MASK_RECOMPUTE, a, c1, c2, batch_stats, dx, dres)
    elif mask_mode == MASK_FROM_OUTPUT:
        _input_grad_span(dy, x, y, mean, k, bias, MASK_FROM_OUTPUT, a, c1, c2, batch_stats, dx,
                         dres)
    elif mask_mode == MASK_FROM_OUTPUT_STORE:
        _input_grad_span(dy, x, y, mean, k, bias, MASK_FROM_OUTPUT_STORE, a, c1, c2, batch_stats,
                         dx, dres)
    else:
        _input_grad_span(dy, x, y, mean, k, bias, MASK_NONE, a, c1, c2, batch_stats, dx, dres)


@kernel(lambda t: (arr(t, 2, True), arr(t, 2, True), arr(t, 2, True), I64, I64, VEC_IN, VEC_IN,
                   VEC_IN, VEC_IN, I64, VEC_IN, VEC_IN, F64, BOOL, arr(t, 2), arr(t, 2)))
def rows_input_grad(dy2, x2, y2, rows_per_block, tile_rows, mean, invstd, weight, bias, mask_mode,
                    sum_g, sum_gx, count, batch_stats, dx2, dres2):
    """dx row block by row block from the per-channel gradient sums over ``count`` rows."""
    R, C = x2.shape
    m = tile_rows
    k = invstd * weight
    a = np.empty(C)
    c1 = np.empty(C)
    c2 = np.empty(C)
    for c in range(C):
        a[c], c1[c], c2[c] = input_grad_coefficients(sum_g[c], sum_gx[c], invstd[c], weight[c],
                                                     count, batch_stats)
    for j in prange((R + rows_per_block - 1) // rows_per_block):
        r0, r1 = _block(j, R, rows_per_block)
        dy_t, rest = _tiles(dy2, r0, r1, m)
        x_t, _ = _tiles(x2, r0, r1, m)
        y_t, _ = _tiles(y2, r0, r1, m)
        dx_t, _ = _tiles(dx2, r0, r1, m)
        dres_t, _ = _tiles(dres2, r0, r1, m)
        mean_t, k_t, bias_t = _tiled(mean, m), _tiled(k, m), _tiled(bias, m)
        a_t, c1_t, c2_t = _tiled(a, m), _tiled(c1, m), _tiled(c2, m)
        for t in range(x_t.shape[0]):
            _input_grad_mode(dy_t[t], x_t[t], y_t[t], mean_t, k_t, bias_t, mask_mode, a_t, c1_t,
                             c2_t, batch_stats, dx_t[t], dres_t[t])
        for r in range(rest, r1):
            _input_grad_mode(dy2[r], x2[r], y2[r], mean, k, bias, mask_mode, a, c1, c2,
                             batch_stats, dx2[r], dres2[r])
