"""Row-statistics kernels: layer, group, instance and RMS norm.

``x3`` is ``(1, R, K)``: ``R`` rows of ``K`` elements, each normalised with its
own statistics (the channel-runs family of ``_kernels_runs`` with ``O == 1``, so
the chunk moments are the same code).  A row is ``S = K // inner`` segments of
``inner`` elements; row ``r``'s segment ``s`` uses affine channel
``(r % G) * S + s``:

======================  =====  =========  ==========================
op                      ``G``  ``inner``  affine channel
======================  =====  =========  ==========================
layer norm, RMSNorm     1      1          element ``i`` of the row
group norm (N, C, *)    G      prod(*)    ``g * C/G + i // inner``
instance norm           C      prod(*)    ``r % C``
======================  =====  =========  ==========================

Work is cut into *pieces*: ``width``-element chunks of the row when
``inner == 1`` (per-element affine), whole segments otherwise (per-channel
affine).  Every path sums pieces in piece order and rows in row order, and
the pieces depend only on the shape, so results are bitwise identical for
every thread count.  ``centered`` False is RMSNorm: the mean is 0 and ``m2``
the sum of squares.  ``geom`` is ``(G, inner, width, lanes)`` from the driver
(an array, so ``lanes`` stays a runtime value; see ``_primitives``).
"""

import numpy as np
from numba import prange

from ._jit import (BOOL, F64, GEOM, PARTIALS, PARTIALS_IN, VEC, VEC_IN, arr, as_element,
                   chan_merge, compiled, device, inverse_std, kernel)
from ._nontemporal import run_writer, store_fence
from ._primitives import (BLOCK_ROWS, MASK_NONE, block_sum, chunk_grad_sums, chunk_moments,
                          fold_lanes, input_grad_affine, input_grad_value, lane_accumulators,
                          lane_blocks, output_affine, write_normalized)

#: Elements of whole rows per task of ``train_fused`` (a row is never split).
TASK_ELEMENTS = 1 << 14

# --- device functions -----------------------------------------------------------------------


@device
def unpack(geom, K):
    """``(G, inner, width, lanes, S, npieces)`` from the driver's ``geom`` and the row length."""
    G, inner, width, lanes = geom[0], geom[1], geom[2], geom[3]
    S = K // inner
    return G, inner, width, lanes, S, (S if inner > 1 else (K + width - 1) // width)


@device
def piece_bounds(p, K, inner, width):
    """Element range ``[i0, i1)`` of piece ``p`` of a row."""
    if inner == 1:
        i0 = p * width
        return i0, min(K, i0 + width)
    return p * inner, (p + 1) * inner


@device
def sum_squares(seg, lanes):
    """Sum of ``seg**2`` in float64."""
    acc = lane_accumulators(lanes)
    blocks, start = lane_blocks(seg, lanes)
    for t in range(blocks.shape[0]):
        for k in range(lanes):
            v0 = np.float64(blocks[t, 0, k])
            v1 = np.float64(blocks[t, 1, k])
            v2 = np.float64(blocks[t, 2, k])
            v3 = np.float64(blocks[t, 3, k])
            acc[k] += block_sum(v0 * v0, v1 * v1, v2 * v2, v3 * v3)
    tail = 0.0
    for i in range(start, seg.shape[0]):
        v = np.float64(seg[i])
        tail += v * v
    return fold_lanes(acc) + tail


@device
def chunk_stats(x3, r, i0, i1, centered, lanes):
    """``(count, mean, m2)`` of ``x3[0, r, i0:i1]`` (uncentered: mean 0, m2 the sum of squares)."""
    if centered:
        return chunk_moments(x3, r, 0, 1, i0, i1, lanes, False)
    return float(i1 - i0), 0.0, sum_squares(x3[0, r, i0:i1], lanes)


@device
def row_stats(x3, r, width, nsub, centered, lanes):
    """``(mean, biased variance)`` of row ``r``: its chunks Chan-merged in order."""
    K = x3.shape[2]
    n = m = m2 = 0.0
    for j in range(nsub):
        i0 = j * width
        nb, mb, m2b = chunk_stats(x3, r, i0, min(K, i0 + width), centered, lanes)
        n, m, m2 = chan_merge(n, m, m2, nb, mb, m2b)
    return m, m2 / n


@device
def in_dtype_of(v, like):
    """Vector ``v`` converted once to the dtype of ``like``, the output passes' dtype."""
    return v.astype(like.dtype)


@device
def _element_affine_span(params, lo, hi, y):
    """``y = ((x - m) * k + s) * w + b`` for elements ``[lo, hi)`` of a piece.

    Loops index from 0 over slices: an offset index would keep Numba's
    negative index wrap-around in the loop and block vectorisation.
    """
    x, w, b, m, k, s = params
    xs, ws, bs = x[lo:hi], w[lo:hi], b[lo:hi]
    for i in range(xs.shape[0]):
        y[i] = ((xs[i] - m) * k + s) * ws[i] + bs[i]


_write_element_affine = run_writer(_element_affine_span)


@device
def normalize_piece(x, p, i0, i1, mean, invstd, weight, bias, base, inner, nontemporal, y):
    """``y = (x - mean) * invstd * w + b`` over a piece of a row, in the data's dtype.

    ``weight``/``bias`` are in the data's dtype (``in_dtype_of``) and the
    constants come from ``output_affine``; a per-element affine (``inner`` 1)
    is applied to ``xhat = (x - m) * invstd + s``.  ``nontemporal``: write
    through ``_nontemporal.run_writer``'s streaming stores.
    """
    if inner == 1:
        m, k, s = output_affine(mean, invstd, 0.0, x)
        _write_element_affine((x[i0:i1], weight[base + i0:base + i1], bias[base + i0:base + i1],
                               m, k, s), y[i0:i1], nontemporal)
    else:
        m, k, shift = output_affine(mean, invstd * weight[base + p], bias[base + p], x)
        write_normalized((x[i0:i1], x[i0:i1], m, k, shift, False, False), y[i0:i1], nontemporal)


@device
def weighted_grad_sums(dy, x, w, mean, lanes):
    """``(sum w dy, sum w dy (x - mean))`` over equal-length segments."""
    acc_g = lane_accumulators(lanes)
    acc_h = lane_accumulators(lanes)
    bdy, start = lane_blocks(dy, lanes)
    bx, _ = lane_blocks(x, lanes)
    bw, _ = lane_blocks(w, lanes)
    for t in range(bdy.shape[0]):
        for k in range(lanes):
            e0 = bdy[t, 0, k] * bw[t, 0, k]
            e1 = bdy[t, 1, k] * bw[t, 1, k]
            e2 = bdy[t, 2, k] * bw[t, 2, k]
            e3 = bdy[t, 3, k] * bw[t, 3, k]
            acc_g[k] += block_sum(e0, e1, e2, e3)
            acc_h[k] += block_sum(e0 * (bx[t, 0, k] - mean), e1 * (bx[t, 1, k] - mean),
                                  e2 * (bx[t, 2, k] - mean), e3 * (bx[t, 3, k] - mean))
    tail_g = tail_h = 0.0
    for i in range(start, dy.shape[0]):
        e = dy[i] * w[i]
        tail_g += e
        tail_h += e * (x[i] - mean)
    return fold_lanes(acc_g) + tail_g, fold_lanes(acc_h) + tail_h


@device
def piece_grad_sums(dy3, x3, r, p, i0, i1, mean, weight, base, inner, lanes):
    """``(sum w dy, sum w dy xc, sum dy, sum dy xc)`` over a piece, ``xc = x - mean``.

    The last two are the piece's channel sums (segments only: with a
    per-element affine they are taken per column by ``accumulate_columns``).
    """
    if inner == 1:
        a, b = weighted_grad_sums(dy3[0, r, i0:i1], x3[0, r, i0:i1], weight[base + i0:base + i1],
                                  mean, lanes)
        return a, b, 0.0, 0.0
    s1, s2 = chunk_grad_sums(dy3, x3, x3, r, 0, 1, i0, i1, mean, (0.0, 0.0, 0.0), MASK_NONE,
                             lanes, False)  # no activation: the mask's constants are not read
    return weight[base + p] * s1, weight[base + p] * s2, s1, s2


@device
def grad_coefficients(sum_wg, sum_wgx, mean, invstd, K, centered, batch_stats, like):
    """``input_grad_affine`` of a row whose ``g`` is ``w * dy`` (the weight is inside the sums).

    So ``dx = input_grad_value(w * dy, x, m, ...)``: ``invstd * w * dy - c1 -
    (x - mean) * c2`` with ``c1 = invstd * mean(w dy)`` (0 for RMSNorm) and
    ``c2 = invstd**3 * mean(w dy (x - mean))``, in the data's dtype.
    """
    return input_grad_affine(sum_wg if centered else 0.0, sum_wgx, mean, invstd, 1.0, float(K),
                             batch_stats, like)


def _input_grad_writer(per_element):
    """The writer of dx over a piece: a weight per element, or the segment's one weight ``w[0]``."""
    @device
    def span(params, lo, hi, dx):
        """dx for elements ``[lo, hi)`` of a piece, ``g = w * dy``."""
        dy, x, w, m, scale, slope, offset, batch_stats = params
        dys, xs, ws = dy[lo:hi], x[lo:hi], w[lo:hi] if per_element else w
        w0 = w[0]
        for i in range(dys.shape[0]):
            g = dys[i] * (ws[i] if per_element else w0)
            dx[i] = input_grad_value(g, xs[i], m, scale, slope, offset, batch_stats)
    return run_writer(span)


_write_dx_elements = _input_grad_writer(True)
_write_dx_segment = _input_grad_writer(False)


@device
def input_grad_piece(dy, x, p, i0, i1, mean, coefficients, weight, base, inner, batch_stats,
                     nontemporal, dx):
    """dx over a piece of a row (frozen statistics never read x, so inf input stays finite).

    ``coefficients`` from ``grad_coefficients``; ``weight`` in the data's dtype.
    """
    m = as_element(x, mean)
    scale, slope, offset = coefficients
    if inner == 1:
        _write_dx_elements((dy[i0:i1], x[i0:i1], weight[base + i0:base + i1], m, scale, slope,
                            offset, batch_stats), dx[i0:i1], nontemporal)
    else:
        _write_dx_segment((dy[i0:i1], x[i0:i1], weight[base + p:base + p + 1], m, scale, slope,
                           offset, batch_stats), dx[i0:i1], nontemporal)


@device
def accumulate_columns_block(dy, x, mean, invstd, dw, db):
    """``accumulate_columns`` of ``BLOCK_ROWS`` rows (rows of ``dy``/``x``) at once.

    Each column takes the pairwise sum of the four rows per step, which
    quarters the loads and stores of the float64 accumulators (twice the
    data's width).  The rows' statistics are read into locals first, so the
    loop's only stores are ``dw`` and ``db`` (few overlap checks: it vectorises).
    """
    m0, m1, m2, m3 = mean[0], mean[1], mean[2], mean[3]
    k0, k1, k2, k3 = invstd[0], invstd[1], invstd[2], invstd[3]
    for i in range(dy.shape[1]):
        d0 = np.float64(dy[0, i])
        d1 = np.float64(dy[1, i])
        d2 = np.float64(dy[2, i])
        d3 = np.float64(dy[3, i])
        db[i] += block_sum(d0, d1, d2, d3)
        dw[i] += block_sum(d0 * (x[0, i] - m0) * k0, d1 * (x[1, i] - m1) * k1,
                           d2 * (x[2, i] - m2) * k2, d3 * (x[3, i] - m3) * k3)


@device
def accumulate_columns(dy, x, mean, invstd, dw, db):
    """Per-element affine grads of one row segment: ``dw += dy * xhat``, ``db += dy``."""
    for i in range(dy.shape[0]):
        db[i] += dy[i]
        dw[i] += dy[i] * (x[i] - mean) * invstd


# --- forward ---------------------------------------------------------------------------------


@kernel(lambda t: (arr(t, 3, True), GEOM, BOOL, PARTIALS))
def row_partials(x3, geom, centered, part):
    """``part[r, j] = (count, mean, m2)`` of chunk ``j`` of row ``r`` (few long rows)."""
    R, K = x3.shape[1], x3.shape[2]
    width, lanes = geom[2], geom[3]
    nsub = part.shape[1]
    for t in prange(R * nsub):
        r = t // nsub
        j = t - r * nsub
        i0 = j * width
        n, m, m2 = chunk_stats(x3, r, i0, min(K, i0 + width), centered, lanes)
        part[r, j, 0] = n
        part[r, j, 1] = m
        part[r, j, 2] = m2


@kernel(lambda t: (arr(t, 3, True), GEOM, VEC_IN, VEC_IN, VEC_IN, VEC_IN, BOOL, arr(t, 3)))
def pieces_normalize(x3, geom, mean, invstd, weight, bias, nontemporal, y3):
    """Normalise every piece with per-row ``mean`` and ``invstd`` (one task per piece)."""
    R, K = x3.shape[1], x3.shape[2]
    G, inner, width, _, S, npieces = unpack(geom, K)
    weight_t, bias_t = in_dtype_of(weight, x3), in_dtype_of(bias, x3)
    for t in prange(R * npieces):
        r = t // npieces
        p = t - r * npieces
        i0, i1 = piece_bounds(p, K, inner, width)
        normalize_piece(x3[0, r], p, i0, i1, mean[r], invstd[r], weight_t, bias_t, (r % G) * S,
                        inner, nontemporal, y3[0, r])
        if nontemporal:
            store_fence()


@kernel(lambda t: (arr(t, 3, True), GEOM, VEC_IN, VEC_IN, F64, BOOL, BOOL, arr(t, 3), VEC, VEC))
def train_fused(x3, geom, weight, bias, eps, centered, nontemporal, y3, mean_out, var_out):
    """Training forward: statistics of a row, then normalise the row while it is in cache.

    A task takes ``TASK_ELEMENTS // K`` rows (at least one), so that short
    rows do not pay a store fence each.
    """
    R, K = x3.shape[1], x3.shape[2]
    G, inner, width, lanes, S, npieces = unpack(geom, K)
    nsub = (K + width - 1) // width
    weight_t, bias_t = in_dtype_of(weight, x3), in_dtype_of(bias, x3)
    rows_per_task = max(1, TASK_ELEMENTS // K)
    for t in prange((R + rows_per_task - 1) // rows_per_task):
        for r in range(t * rows_per_task, min(R, (t + 1) * rows_per_task)):
            mean, var = row_stats(x3, r, width, nsub, centered, lanes)
            invstd = inverse_std(var, eps)
            for p in range(npieces):
                i0, i1 = piece_bounds(p, K, inner, width)
                normalize_piece(x3[0, r], p, i0, i1, mean, invstd, weight_t, bias_t, (r % G) * S,
                                inner, nontemporal, y3[0, r])
            mean_out[r] = mean
            var_out[r] = var
        if nontemporal:
            store_fence()


# --- backward --------------------------------------------------------------------------------


@kernel(lambda t: (arr(t, 3, True), arr(t, 3, True), GEOM, VEC_IN, VEC_IN, VEC_IN, BOOL, BOOL, BOOL,
                   BOOL, arr(t, 3), arr(F64, 2), arr(F64, 2)))
def backward_fused(dy3, x3, geom, mean, invstd, weight, centered, batch_stats, want_affine,
                   nontemporal, dx3, pdw, pdb):
    """Backward, one block of rows per task: row sums, dx from the cached row, affine partials.

    Rows are split evenly into ``len(pdw)`` blocks; ``pdw[b]``/``pdb[b]`` (zeroed by
    the caller) receive block ``b``'s affine grads.  Layer and RMS norm's
    per-element affine grads (batch statistics) are added ``BLOCK_ROWS`` rows
    at a time (``accumulate_columns_block``) once those rows' dx is written,
    the rows a block has beyond a multiple of four (and frozen statistics) one
    at a time (``accumulate_columns``).  Blocks depend on the
    shape only, and with at most ``ROW_BLOCKS`` rows each row is its own
    block, as in the pieces path (``column_grads``): same bits either way.
    """
    R, K = x3.shape[1], x3.shape[2]
    G, inner, width, lanes, S, npieces = unpack(geom, K)
    rows_per_block = (R + pdw.shape[0] - 1) // pdw.shape[0]
    weight_t = in_dtype_of(weight, x3)
    for b in prange((R + rows_per_block - 1) // rows_per_block):
        r0, r1 = b * rows_per_block, min(R, (b + 1) * rows_per_block)
        grouped = r0
        if want_affine and inner == 1 and batch_stats and G == 1:
            grouped = r0 + (r1 - r0) // BLOCK_ROWS * BLOCK_ROWS
        for r in range(r0, r1):
            base = (r % G) * S
            sum_wg = sum_wgx = 0.0
            for p in range(npieces):
                i0, i1 = piece_bounds(p, K, inner, width)
                a, c, s1, s2 = piece_grad_sums(dy3, x3, r, p, i0, i1, mean[r], weight, base, inner,
                                               lanes)
                sum_wg += a
                sum_wgx += c
                if want_affine and inner > 1:
                    pdb[b, base + p] += s1
                    pdw[b, base + p] += s2 * invstd[r]
            coefficients = grad_coefficients(sum_wg, sum_wgx, mean[r], invstd[r], K, centered,
                                             batch_stats, x3)
            if r < grouped:  # the whole row as one piece, with literal flags (a tighter loop)
                input_grad_piece(dy3[0, r], x3[0, r], 0, 0, K, mean[r], coefficients, weight_t, 0,
                                 1, True, nontemporal, dx3[0, r])
            else:
                for p in range(npieces):
                    i0, i1 = piece_bounds(p, K, inner, width)
                    input_grad_piece(dy3[0, r], x3[0, r], p, i0, i1, mean[r], coefficients,
                                     weight_t, base, inner, batch_stats, nontemporal, dx3[0, r])
            if not want_affine or inner > 1:
                continue
            if r >= grouped:
                accumulate_columns(dy3[0, r], x3[0, r], mean[r], invstd[r], pdw[b, base:base + K],
                                   pdb[b, base:base + K])
            elif (r - r0) % BLOCK_ROWS == BLOCK_ROWS - 1:
                rows = slice(r + 1 - BLOCK_ROWS, r + 1)
                accumulate_columns_block(dy3[0, rows], x3[0, rows], mean[rows], invstd[rows],
                                         pdw[b], pdb[b])
        if nontemporal:
            store_fence()


@kernel(lambda t: (arr(t, 3, True), arr(t, 3, True), GEOM, VEC_IN, VEC_IN, PARTIALS))
def piece_grad_partials(dy3, x3, geom, mean, weight, part):
    """``part[r, p] = piece_grad_sums`` of piece ``p`` of row ``r`` (few long rows)."""
    R, K = x3.shape[1], x3.shape[2]
    G, inner, width, lanes, S, npieces = unpack(geom, K)
    for t in prange(R * npieces):
        r = t // npieces
        p = t - r * npieces
        i0, i1 = piece_bounds(p, K, inner, width)
        a, c, s1, s2 = piece_grad_sums(dy3, x3, r, p, i0, i1, mean[r], weight, (r % G) * S, inner,
                                       lanes)
        part[r, p, 0] = a
        part[r, p, 1] = c
        part[r, p, 2] = s1
        part[r, p, 3] = s2


@compiled([(PARTIALS_IN, GEOM, VEC_IN, BOOL, VEC, VEC, VEC, VEC)])
def fold_piece_partials(part, geom, invstd, segment_grads, sum_wg, sum_wgx, dw, db):
    """Fold ``piece_grad_partials`` in piece then row order (the order of ``backward_fused``).

    With ``segment_grads`` the channel sums also go to ``dw``/``db`` (zeroed by the caller).
    """
    R, npieces, _ = part.shape
    for r in range(R):
        base = (r % geom[0]) * npieces
        a = c = 0.0
        for p in range(npieces):
            a += part[r, p, 0]
            c += part[r, p, 1]
            if segment_grads:
                db[base + p] += part[r, p, 2]
                dw[base + p] += part[r, p, 3] * invstd[r]
        sum_wg[r] = a
        sum_wgx[r] = c


@kernel(lambda t: (arr(t, 3, True), arr(t, 3, True), GEOM, VEC_IN, VEC_IN, VEC_IN, VEC_IN, VEC_IN,
                   BOOL, BOOL, BOOL, arr(t, 3)))
def pieces_input_grad(dy3, x3, geom, mean, invstd, weight, sum_wg, sum_wgx, centered,
                      batch_stats, nontemporal, dx3):
    """dx for every piece from the per-row sums (one task per piece)."""
    R, K = x3.shape[1], x3.shape[2]
    G, inner, width, _, S, npieces = unpack(geom, K)
    weight_t = in_dtype_of(weight, x3)
    for t in prange(R * npieces):
        r = t // npieces
        p = t - r * npieces
        i0, i1 = piece_bounds(p, K, inner, width)
        coefficients = grad_coefficients(sum_wg[r], sum_wgx[r], mean[r], invstd[r], K, centered,
                                         batch_stats, x3)
        input_grad_piece(dy3[0, r], x3[0, r], p, i0, i1, mean[r], coefficients, weight_t,
                         (r % G) * S, inner, batch_stats, nontemporal, dx3[0, r])
        if nontemporal:
            store_fence()


@kernel(lambda t: (arr(t, 3, True), arr(t, 3, True), GEOM, VEC_IN, VEC_IN, VEC, VEC))
def column_grads(dy3, x3, geom, mean, invstd, dw, db):
    """Per-element affine grads over rows in order, one task per column range (few long rows)."""
    R, K = x3.shape[1], x3.shape[2]
    G, width = geom[0], geom[2]
    for p in prange((K + width - 1) // width):
        i0 = p * width
        i1 = min(K, i0 + width)
        for r in range(R):
            base = (r % G) * K
            accumulate_columns(dy3[0, r, i0:i1], x3[0, r, i0:i1], mean[r], invstd[r],
                               dw[base + i0:base + i1], db[base + i0:base + i1])


@compiled([(arr(F64, 2, True), arr(F64, 2, True), VEC, VEC)])
def fold_blocks(pdw, pdb, dw, db):
    """``dw += sum over b of pdw[b]`` (and ``db`` from ``pdb``), block by block in order.

    Serial on purpose: a few rows of partials are not worth a parallel region.
    """
    for b in range(pdw.shape[0]):
        for c in range(pdw.shape[1]):
            dw[c] += pdw[b, c]
            db[c] += pdb[b, c]
