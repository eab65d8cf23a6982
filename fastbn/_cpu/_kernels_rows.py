"""Row kernels: ``x2`` is ``(R, C * inner)``, each row holding ``inner`` values per channel.

``inner == 1`` is the channel-contiguous layout ((N, C), channels-last); a
small ``inner`` is ``(N, C, inner)`` with short runs (e.g. 7x7 feature maps),
viewed as rows of ``C * inner`` elements, where per-run loops would spend more
on overhead than on data.  Inner loops run across a row (independent
per-element accumulators, so they vectorise without reassociation) against
per-channel vectors expanded to one value per element; the reductions take
``BLOCK_ROWS`` tiles per step (their pairwise sum added to each accumulator),
which quarters the accumulators' loads and stores (the gradient sums of short
tiles take one per step instead, see ``rows_grad_partials``).  With narrow rows, ``m``
consecutive rows form one contiguous *tile* of ``m * C * inner`` elements
(``m = tile_rows``); rows past the last full tile of a block run one at a
time in the reductions, while the normalise pass writes a block as one span.
Threads split the rows into blocks of ``rows_per_block`` (a multiple of
``m``) fixed by the shape, whose partials are folded in block order by
``_kernels_common``, so nothing depends on the thread count.  Partials are
block-major (``part[j, c]``) so that each block writes one contiguous span.
"""

import numpy as np
from numba import prange

from ._jit import (BOOL, F64, I64, PARTIALS, VEC_IN, arr, as_element, contiguous_view, device,
                   kernel, prefetch_lines, relu)
from ._nontemporal import run_writer, store_fence
from ._primitives import (BLOCK_ROWS, MASK_FROM_OUTPUT, MASK_FROM_OUTPUT_STORE, MASK_NONE,
                          MASK_RECOMPUTE, block_sum, input_grad_affine, input_grad_value,
                          output_affine, upstream_grad, upstream_grad64)


@device
def _expanded(v, m, inner):
    """Per-channel ``v`` with one value per element of ``m`` rows of ``inner`` values per channel.

    The first ``C * inner`` values are the expansion for a single row.
    """
    C = v.shape[0]
    out = np.empty(m * C * inner, v.dtype)
    for q in range(m):
        for c in range(C):
            for i in range(inner):
                out[(q * C + c) * inner + i] = v[c]
    return out


@device
def _tiles(a2, r0, r1, m):
    """Rows ``[r0, r1)`` of ``a2`` as full tiles ``(k, m * width)``, and the first row left over."""
    k = (r1 - r0) // m
    return contiguous_view(a2[r0:r0 + k * m], (k, m * a2.shape[1])), r0 + k * m


@device
def _prefetch_tiles(tiles, t0, t1):
    """Hint tiles ``[t0, t1)`` of ``tiles`` (clipped to its end) into cache.

    The statistics read ``BLOCK_ROWS`` tiles side by side, a short stream per
    tile, which the hardware prefetcher picks up late when tiles are short;
    asking for the next block while this one is reduced keeps the loads
    flowing there (see ``_config.ROW_STATS_PREFETCH_MAX_TILE_BYTES``).
    """
    for t in range(t0, min(t1, tiles.shape[0])):
        prefetch_lines(tiles[t], 0, tiles.shape[1])


@device
def _output_affine_vectors(mean, invstd, weight, bias, like):
    """``output_affine`` of every channel: three vectors in the dtype of ``like``."""
    C = mean.shape[0]
    m = np.empty(C, like.dtype)
    k = np.empty(C, like.dtype)
    shift = np.empty(C, like.dtype)
    for c in range(C):
        m[c], k[c], shift[c] = output_affine(mean[c], invstd[c] * weight[c], bias[c], like)
    return m, k, shift


@device
def _fold_elements(acc, out, inner):
    """``out[c] += acc[e]`` for each element ``e`` of channel ``c``, in order (acc spans rows)."""
    C = out.shape[0]
    for q in range(acc.shape[0] // (C * inner)):
        for c in range(C):
            for i in range(inner):
                out[c] += acc[(q * C + c) * inner + i]


@device
def _block(j, R, rows_per_block):
    r0 = j * rows_per_block
    return r0, min(R, r0 + rows_per_block)


@device
def _num_blocks(R, rows_per_block):
    return (R + rows_per_block - 1) // rows_per_block


@device
def _deviation_sums(x, pivot, s1, s2):
    for i in range(x.shape[0]):
        d = x[i] - pivot[i]
        s1[i] += d
        s2[i] += d * d


@device
def _deviation_sums_block(xs, pivot, s1, s2):
    """``_deviation_sums`` of ``BLOCK_ROWS`` tiles ``xs[0..3]`` at once (pairwise per element)."""
    for i in range(xs.shape[1]):
        d0 = xs[0, i] - pivot[i]
        d1 = xs[1, i] - pivot[i]
        d2 = xs[2, i] - pivot[i]
        d3 = xs[3, i] - pivot[i]
        s1[i] += block_sum(d0, d1, d2, d3)
        s2[i] += block_sum(d0 * d0, d1 * d1, d2 * d2, d3 * d3)


@device
def _deviation_sums_tiles(tiles, pivot, prefetch, s1, s2):
    """Deviation sums over whole tiles: ``BLOCK_ROWS`` at a time, then the rest one by one."""
    nblocks = tiles.shape[0] // BLOCK_ROWS
    for q in range(nblocks):
        if prefetch:
            _prefetch_tiles(tiles, (q + 1) * BLOCK_ROWS, (q + 2) * BLOCK_ROWS)
        _deviation_sums_block(tiles[q * BLOCK_ROWS:(q + 1) * BLOCK_ROWS], pivot, s1, s2)
    for t in range(nblocks * BLOCK_ROWS, tiles.shape[0]):
        _deviation_sums(tiles[t], pivot, s1, s2)


@kernel(lambda t: (arr(t, 2, True), I64, I64, I64, BOOL, PARTIALS))
def rows_partials(x2, inner, rows_per_block, tile_rows, prefetch, part):
    """``part[j, c] = (count, mean, m2)`` of row block ``j``, in one pass.

    Deviations from the block's first row as pivots (see
    ``_primitives.chunk_moments`` for why that is accurate).  Leftover rows
    accumulate into the first row's lanes of the tile accumulators.
    ``prefetch``: ask for the next ``BLOCK_ROWS`` tiles while adding these
    (the driver's choice, by tile length and input size).
    """
    R, W = x2.shape
    C = W // inner
    for j in prange(_num_blocks(R, rows_per_block)):
        r0, r1 = _block(j, R, rows_per_block)
        pivot = np.empty(C)
        for c in range(C):
            pivot[c] = x2[r0, c * inner]
        pivot_t = _expanded(pivot, tile_rows, inner)
        s1_t = np.zeros(pivot_t.shape[0])
        s2_t = np.zeros(pivot_t.shape[0])
        tiles, rest = _tiles(x2, r0, r1, tile_rows)
        _deviation_sums_tiles(tiles, pivot_t, prefetch, s1_t, s2_t)
        _deviation_sums_tiles(x2[rest:r1], pivot_t[:W], prefetch, s1_t[:W], s2_t[:W])
        s1 = np.zeros(C)
        s2 = np.zeros(C)
        _fold_elements(s1_t, s1, inner)
        _fold_elements(s2_t, s2, inner)
        n = float((r1 - r0) * inner)
        for c in range(C):
            shift = s1[c] / n
            part[j, c, 0] = n
            part[j, c, 1] = pivot[c] + shift
            part[j, c, 2] = max(s2[c] - s1[c] * shift, 0.0)


@device
def _flat(a2, r0, r1):
    """Rows ``[r0, r1)`` of ``a2`` as one 1-D span."""
    return contiguous_view(a2[r0:r1], ((r1 - r0) * a2.shape[1],))


@device
def _normalize_span(params, lo, hi, y):
    """Elements ``[lo, hi)`` of a row block's flat output (``run_writer``'s span).

    The expanded vectors repeat every tile (whole rows), so the span is cut at
    tile boundaries and each piece ``[a, b)`` reads them from ``a % tile`` on.
    """
    x, res, m, k, shift, has_residual, use_relu = params
    tile = m.shape[0]
    a = lo
    while a < hi:
        off = a % tile
        b = min(hi, a + tile - off)
        xs, rs, ys = x[a:b], res[a:b], y[a - lo:b - lo]
        ms, ks, ss = m[off:off + b - a], k[off:off + b - a], shift[off:off + b - a]
        for i in range(xs.shape[0]):
            v = (xs[i] - ms[i]) * ks[i] + ss[i]
            if has_residual:
                v += rs[i]
            ys[i] = relu(v) if use_relu else v
        a = b


_write_normalized = run_writer(_normalize_span)


@kernel(lambda t: (arr(t, 2, True), I64, I64, I64, VEC_IN, VEC_IN, VEC_IN, VEC_IN, arr(t, 2, True),
                   BOOL, BOOL, BOOL, arr(t, 2)))
def rows_normalize(x2, inner, rows_per_block, tile_rows, mean, invstd, weight, bias, res2,
                   has_residual, use_relu, nontemporal, y2):
    """``y = act((x - mean) * invstd * weight + bias [+ residual])`` row block by row block.

    In the data's dtype, with the constants of ``output_affine``.  A block's
    rows are contiguous, so its output is written as one flat span through
    ``run_writer`` (``nontemporal``: streaming stores, a fence per block).
    Against tile-by-tile loops with plain stores, the training forward took
    0.82-0.93x the time on (4096, 1024), (65536, 64) and channels-last 64 with
    streaming stores, 1.03-1.06x without; per tile, streaming stores had cost
    1.08x (one short buffer per tile).
    """
    R = x2.shape[0]
    m, k, shift = _output_affine_vectors(mean, invstd, weight, bias, x2)
    m_t = _expanded(m, tile_rows, inner)
    k_t = _expanded(k, tile_rows, inner)
    shift_t = _expanded(shift, tile_rows, inner)
    for j in prange(_num_blocks(R, rows_per_block)):
        r0, r1 = _block(j, R, rows_per_block)
        _write_normalized((_flat(x2, r0, r1), _flat(res2, r0, r1), m_t, k_t, shift_t, has_residual,
                           use_relu), _flat(y2, r0, r1), nontemporal)
        if nontemporal:
            store_fence()


@device
def _grad_sums_span(dy, x, y, mean, affine, mask_mode, sg, sgx):
    """Sums of g and g * (x - mean) (float64 ``mean``); ``affine``: ``output_affine`` vectors."""
    m, k, shift = affine
    for i in range(x.shape[0]):
        g = upstream_grad64(dy[i], x[i], y[i], (m[i], k[i], shift[i]), mask_mode)
        sg[i] += g
        sgx[i] += g * (x[i] - mean[i])


@device
def _grad_sums_block(dy, x, y, mean, affine, mask_mode, sg, sgx):
    """``_grad_sums_span`` of ``BLOCK_ROWS`` tiles (rows of the 2-D arguments) at once."""
    m, k, shift = affine
    for i in range(x.shape[1]):
        a = (m[i], k[i], shift[i])
        g0 = upstream_grad64(dy[0, i], x[0, i], y[0, i], a, mask_mode)
        g1 = upstream_grad64(dy[1, i], x[1, i], y[1, i], a, mask_mode)
        g2 = upstream_grad64(dy[2, i], x[2, i], y[2, i], a, mask_mode)
        g3 = upstream_grad64(dy[3, i], x[3, i], y[3, i], a, mask_mode)
        sg[i] += block_sum(g0, g1, g2, g3)
        sgx[i] += block_sum(g0 * (x[0, i] - mean[i]), g1 * (x[1, i] - mean[i]),
                            g2 * (x[2, i] - mean[i]), g3 * (x[3, i] - mean[i]))


@device
def _grad_sums_tiles(dy_t, x_t, y_t, mean, affine, mask_mode, blocked, sg, sgx):
    """Gradient sums over whole tiles: ``BLOCK_ROWS`` at a time if ``blocked``, then one by one."""
    nblocks = x_t.shape[0] // BLOCK_ROWS if blocked else 0
    for q in range(nblocks):
        b = slice(q * BLOCK_ROWS, (q + 1) * BLOCK_ROWS)
        _grad_sums_block(dy_t[b], x_t[b], y_t[b], mean, affine, mask_mode, sg, sgx)
    for t in range(nblocks * BLOCK_ROWS, x_t.shape[0]):
        _grad_sums_span(dy_t[t], x_t[t], y_t[t], mean, affine, mask_mode, sg, sgx)


@device
def _grad_sums_mode(dy_t, x_t, y_t, mean, affine, mask_mode, blocked, sg, sgx):
    """``_grad_sums_tiles`` specialised by a literal mask mode (so it vectorises)."""
    if mask_mode == MASK_RECOMPUTE:
        _grad_sums_tiles(dy_t, x_t, y_t, mean, affine, MASK_RECOMPUTE, blocked, sg, sgx)
    elif mask_mode >= MASK_FROM_OUTPUT:
        _grad_sums_tiles(dy_t, x_t, y_t, mean, affine, MASK_FROM_OUTPUT, blocked, sg, sgx)
    else:
        _grad_sums_tiles(dy_t, x_t, y_t, mean, affine, MASK_NONE, blocked, sg, sgx)


@kernel(lambda t: (arr(t, 2, True), arr(t, 2, True), arr(t, 2, True), I64, I64, I64, VEC_IN,
                   VEC_IN, VEC_IN, VEC_IN, I64, BOOL, PARTIALS))
def rows_grad_partials(dy2, x2, y2, inner, rows_per_block, tile_rows, mean, invstd, weight, bias,
                       mask_mode, blocked, part):
    """``part[j, c] = (sum g, sum g * (x - mean))`` of row block ``j``.

    ``blocked``: add ``BLOCK_ROWS`` tiles per step, or one tile per step, which
    streams short tiles from memory faster (two streams instead of eight);
    the driver picks by tile length, so the rounding depends on the shape only.
    """
    R, W = x2.shape
    C = mean.shape[0]
    mean_t = _expanded(mean, tile_rows, inner)
    m, k, shift = _output_affine_vectors(mean, invstd, weight, bias, x2)
    affine_t = (_expanded(m, tile_rows, inner), _expanded(k, tile_rows, inner),
                _expanded(shift, tile_rows, inner))
    affine_r = (affine_t[0][:W], affine_t[1][:W], affine_t[2][:W])
    for j in prange(_num_blocks(R, rows_per_block)):
        r0, r1 = _block(j, R, rows_per_block)
        dy_t, rest = _tiles(dy2, r0, r1, tile_rows)
        x_t, _ = _tiles(x2, r0, r1, tile_rows)
        y_t, _ = _tiles(y2, r0, r1, tile_rows)
        sg_t = np.zeros(mean_t.shape[0])
        sgx_t = np.zeros(mean_t.shape[0])
        _grad_sums_mode(dy_t, x_t, y_t, mean_t, affine_t, mask_mode, blocked, sg_t, sgx_t)
        _grad_sums_mode(dy2[rest:r1], x2[rest:r1], y2[rest:r1], mean_t[:W], affine_r, mask_mode,
                        blocked, sg_t[:W], sgx_t[:W])
        sg = np.zeros(C)
        sgx = np.zeros(C)
        _fold_elements(sg_t, sg, inner)
        _fold_elements(sgx_t, sgx, inner)
        for c in range(C):
            part[j, c, 0] = sg[c]
            part[j, c, 1] = sgx[c]


@device
def _input_grad_span(dy, x, y, m, k, shift, mask_mode, scale, slope, offset, batch_stats, dx,
                     dres):
    """dx over a span, and g into ``dres`` in ``MASK_FROM_OUTPUT_STORE`` mode."""
    zero = as_element(dy, 0.0)
    for i in range(x.shape[0]):
        g = upstream_grad(dy[i], x[i], y[i], m[i], k[i], shift[i], mask_mode, zero)
        if mask_mode == MASK_FROM_OUTPUT_STORE:
            dres[i] = g
        dx[i] = input_grad_value(g, x[i], m[i], scale[i], slope[i], offset[i], batch_stats)


@device
def _input_grad_tiles(dy_t, x_t, y_t, e, mask_mode, batch_stats, dx_t, dres_t):
    """``_input_grad_span`` over every tile (rows of the 2-D arguments) with the expanded ``e``."""
    for t in range(x_t.shape[0]):
        _input_grad_span(dy_t[t], x_t[t], y_t[t], e[0], e[1], e[2], mask_mode, e[3], e[4], e[5],
                         batch_stats, dx_t[t], dres_t[t])


@device
def _input_grad_mode(dy_t, x_t, y_t, e, mask_mode, batch_stats, dx_t, dres_t):
    """``_input_grad_tiles`` specialised by a literal mask mode, chosen once per block.

    Choosing per tile instead made the pass take 1.19-1.24x as long on
    channels-last 64, (65536, 64) and (4096, 1024): the bookkeeping around
    four inlined loops then stays in the loop over tiles.
    """
    if mask_mode == MASK_RECOMPUTE:
        _input_grad_tiles(dy_t, x_t, y_t, e, MASK_RECOMPUTE, batch_stats, dx_t, dres_t)
    elif mask_mode == MASK_FROM_OUTPUT:
        _input_grad_tiles(dy_t, x_t, y_t, e, MASK_FROM_OUTPUT, batch_stats, dx_t, dres_t)
    elif mask_mode == MASK_FROM_OUTPUT_STORE:
        _input_grad_tiles(dy_t, x_t, y_t, e, MASK_FROM_OUTPUT_STORE, batch_stats, dx_t, dres_t)
    else:
        _input_grad_tiles(dy_t, x_t, y_t, e, MASK_NONE, batch_stats, dx_t, dres_t)


@kernel(lambda t: (arr(t, 2, True), arr(t, 2, True), arr(t, 2, True), I64, I64, I64, VEC_IN,
                   VEC_IN, VEC_IN, VEC_IN, I64, VEC_IN, VEC_IN, F64, BOOL, arr(t, 2), arr(t, 2)))
def rows_input_grad(dy2, x2, y2, inner, rows_per_block, tile_rows, mean, invstd, weight, bias,
                    mask_mode, sum_g, sum_gx, count, batch_stats, dx2, dres2):
    """dx row block by row block from the per-channel gradient sums over ``count`` elements.

    In the data's dtype, with the constants of ``input_grad_affine``.
    """
    R, W = x2.shape
    C = mean.shape[0]
    m, k, shift = _output_affine_vectors(mean, invstd, weight, bias, x2)
    scale = np.empty(C, x2.dtype)
    slope = np.empty(C, x2.dtype)
    offset = np.empty(C, x2.dtype)
    for c in range(C):
        scale[c], slope[c], offset[c] = input_grad_affine(sum_g[c], sum_gx[c], mean[c], invstd[c],
                                                          weight[c], count, batch_stats, x2)
    e_t = (_expanded(m, tile_rows, inner), _expanded(k, tile_rows, inner),
           _expanded(shift, tile_rows, inner), _expanded(scale, tile_rows, inner),
           _expanded(slope, tile_rows, inner), _expanded(offset, tile_rows, inner))
    e_r = (e_t[0][:W], e_t[1][:W], e_t[2][:W], e_t[3][:W], e_t[4][:W], e_t[5][:W])
    for j in prange(_num_blocks(R, rows_per_block)):
        r0, r1 = _block(j, R, rows_per_block)
        dy_t, rest = _tiles(dy2, r0, r1, tile_rows)
        x_t, _ = _tiles(x2, r0, r1, tile_rows)
        y_t, _ = _tiles(y2, r0, r1, tile_rows)
        dx_t, _ = _tiles(dx2, r0, r1, tile_rows)
        dres_t, _ = _tiles(dres2, r0, r1, tile_rows)
        _input_grad_mode(dy_t, x_t, y_t, e_t, mask_mode, batch_stats, dx_t, dres_t)
        _input_grad_mode(dy2[rest:r1], x2[rest:r1], y2[rest:r1], e_r, mask_mode, batch_stats,
                         dx2[rest:r1], dres2[rest:r1])
