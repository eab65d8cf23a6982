"""Row-statistics CUDA kernels: layer, group, instance and RMS norm.

``x3`` is ``(1, R, K)`` (C-contiguous): ``R`` rows of ``K`` elements, each
normalised with its own statistics.  A row is ``S = K // inner`` segments of
``inner`` elements, and element ``i`` of row ``r`` has affine channel
``(r % G) * S + i // inner`` -- the geometry of the CPU kernels
(``fastbn._cpu._kernels_rowwise``): ``inner == 1`` is a per-element affine
(layer and RMS norm), ``inner > 1`` a per-channel one (group and instance norm).

Blocks:

* a row of at most ``config.ROW_BLOCK_ELEMENTS`` is one block's (``train_rows``,
  ``backward_rows``): the block merges its threads' moments with the shared
  Chan tree, then normalises (or computes dx from) the row while it is cached;
* longer rows are cut into pieces, one block each, whose partials a second
  launch merges per row in a fixed order (``_kernels_common.merge_partials``).

Backward pieces are ``width``-element chunks of a segment of ``seg_len``
elements (``seg_len = K`` for a per-element affine), so a per-channel piece
has one weight: its sums ``(sum dy, sum dy * (x - mean))`` give both the row
sums (times the weight) and the channel's affine partials, folded over the
samples by ``channel_grads``.  A per-element affine's grads are column sums,
taken by ``column_grad_partials`` with the tile layout of ``_kernels_rows``
and folded per column by ``fold_columns``.
No atomics anywhere: every result is bitwise reproducible for a given shape
and configuration.  ``centered`` False is RMSNorm (mean 0, ``m2`` the sum of
squares).
"""

from numba import cuda, float64

from ._device import (accumulate, block_reduce, input_grad_coefficients, input_grad_value,
                      inverse_std, shifted_moments, store_partial, walk_next, walk_start)
from ._jit import kernel
from ._kernels_rows import _block_tile


@cuda.jit(device=True)
def grad_coefficients(sum_wg, sum_wgx, invstd, count, centered, batch_stats):
    """The CPU's row coefficients in float64: ``dx = input_grad_value(w * dy, x, mean, ...)``.

    ``g = w * dy`` (the weight is inside the row sums); RMSNorm has no mean term.
    """
    return input_grad_coefficients(sum_wg if centered else 0.0, sum_wgx, invstd, 1.0, count,
                                   batch_stats, 0.0)


# --- device functions -----------------------------------------------------------------------


@cuda.jit(device=True)
def piece_bounds(p, seg_len, nsub, width):
    """Element range ``[i0, i1)`` of piece ``p``: chunk ``p % nsub`` of segment ``p // nsub``."""
    s = p // nsub
    k = p - s * nsub
    start = s * seg_len
    return start + k * width, start + min(seg_len, (k + 1) * width)


@cuda.jit(device=True)
def block_all(sh, moments, a0, a1, a2):
    """The block-tree merge of every thread's partial, returned to every thread.

    The trailing barrier lets the caller reuse ``sh`` right away.
    """
    t = cuda.threadIdx.x
    T = cuda.blockDim.x
    block_reduce(sh, t, t, 1, T, moments, a0, a1, a2)
    b0, b1, b2 = sh[0], sh[T], sh[2 * T]
    cuda.syncthreads()
    return b0, b1, b2


@cuda.jit(device=True)
def block_moments(sh, row, i0, i1, centered):
    """``(count, mean, m2)`` of ``row[i0:i1]`` (uncentered: mean 0, m2 the sum of squares)."""
    n = shift = s1 = s2 = 0.0
    for i in range(i0 + cuda.threadIdx.x, i1, cuda.blockDim.x):
        v = float64(row[i])
        if centered:
            n, shift, s1, s2 = accumulate(n, shift, s1, s2, v)
        else:
            n += 1.0
            s2 += v * v
    if centered:
        n, mean, m2 = shifted_moments(n, shift, s1, s2)
    else:
        mean, m2 = 0.0, s2
    return block_all(sh, True, n, mean, m2)


@cuda.jit(device=True)
def block_piece_sums(sh, dy, x, i0, i1, mean, weight, base, inner, nsub, p):
    """``(sum w dy, sum w dy xc, sum dy, sum dy xc)`` over ``[i0, i1)`` of a row, ``xc = x - mean``.

    Per-element affine (``inner == 1``): the weight is applied per element and
    the last two are the first two.  Per-channel: the piece lies in segment
    ``p // nsub``, whose one weight scales the plain sums.
    """
    a = b = 0.0
    for i in range(i0 + cuda.threadIdx.x, i1, cuda.blockDim.x):
        e = float64(dy[i])
        if inner == 1:
            e *= weight[base + i]
        a += e
        b += e * (float64(x[i]) - mean)
    a, b, _ = block_all(sh, False, a, b, 0.0)
    w = weight[base + p // nsub] if inner > 1 else 1.0
    return w * a, w * b, a, b


@cuda.jit(device=True)
def store_piece(part, r, p, wa, wb, a, b):
    part[r, p, 0] = wa
    part[r, p, 1] = wb
    part[r, p, 2] = a
    part[r, p, 3] = b


@cuda.jit(device=True)
def normalize_span(x, y, i0, i1, mean, invstd, weight, bias, base, inner):
    """``y = (x - mean) * invstd * w + b`` over this thread's elements of ``[i0, i1)``.

    The thread walks ``(segment, offset)`` in steps of the block size, so the
    affine channel ``base + segment`` costs no division per element.
    """
    T = cuda.blockDim.x
    step_s, step_off = T // inner, T % inner
    i = i0 + cuda.threadIdx.x
    s, off = walk_start(i, 0, 0, inner)
    while i < i1:
        ch = base + s
        y[i] = (float64(x[i]) - mean) * (invstd * weight[ch]) + bias[ch]
        i += T
        s, off = walk_next(s, off, 0, inner, step_s, step_off, 1)


@cuda.jit(device=True)
def input_grad_span(dy, x, dx, i0, i1, mean, coefficients, weight, base, inner, batch_stats):
    """dx over this thread's elements of ``[i0, i1)`` (frozen statistics never use x)."""
    scale, slope, offset = coefficients
    T = cuda.blockDim.x
    step_s, step_off = T // inner, T % inner
    i = i0 + cuda.threadIdx.x
    s, off = walk_start(i, 0, 0, inner)
    while i < i1:
        g = float64(dy[i]) * weight[base + s]
        dx[i] = input_grad_value(g, float64(x[i]), mean, scale, slope, offset, batch_stats)
        i += T
        s, off = walk_next(s, off, 0, inner, step_s, step_off, 1)


@cuda.jit(device=True)
def block_piece(nch):
    """``(r, j)``: this block's row and piece for ``nch`` pieces per row."""
    r = cuda.blockIdx.x // nch
    return r, cuda.blockIdx.x - r * nch


# --- forward ---------------------------------------------------------------------------------


@kernel
def moment_partials(x3, width, centered, part):
    """``part[r, j] = (count, mean, m2)`` of chunk ``j`` (``width`` elements) of row ``r``."""
    sh = cuda.shared.array(0, float64)
    K = x3.shape[2]
    r, j = block_piece(part.shape[1])
    i0 = j * width
    n, mean, m2 = block_moments(sh, x3[0, r], i0, min(K, i0 + width), centered)
    if cuda.threadIdx.x == 0:
        store_partial(part, r, j, n, mean, m2)


@kernel
def normalize(x3, G, inner, width, mean, invstd, weight, bias, y3):
    """Normalise chunk ``j`` of row ``r`` with per-row ``mean`` and ``invstd`` (a block each)."""
    K = x3.shape[2]
    r, j = block_piece((K + width - 1) // width)
    i0 = j * width
    normalize_span(x3[0, r], y3[0, r], i0, min(K, i0 + width), mean[r], invstd[r], weight, bias,
                   (r % G) * (K // inner), inner)


@kernel
def train_rows(x3, G, inner, weight, bias, eps, centered, y3, mean_out, invstd_out, var_out):
    """Training forward, one block per row: statistics, then normalise the cached row."""
    sh = cuda.shared.array(0, float64)
    K = x3.shape[2]
    r = cuda.blockIdx.x
    n, mean, m2 = block_moments(sh, x3[0, r], 0, K, centered)
    var = m2 / n
    invstd = inverse_std(var, eps)
    normalize_span(x3[0, r], y3[0, r], 0, K, mean, invstd, weight, bias, (r % G) * (K // inner),
                   inner)
    if cuda.threadIdx.x == 0:
        mean_out[r] = mean
        invstd_out[r] = invstd
        var_out[r] = var


# --- backward --------------------------------------------------------------------------------


@kernel
def grad_partials(dy3, x3, G, inner, seg_len, nsub, width, mean, weight, part):
    """``part[r, p] = block_piece_sums`` of piece ``p`` of row ``r`` (one block each)."""
    sh = cuda.shared.array(0, float64)
    K = x3.shape[2]
    r, p = block_piece(part.shape[1])
    i0, i1 = piece_bounds(p, seg_len, nsub, width)
    wa, wb, a, b = block_piece_sums(sh, dy3[0, r], x3[0, r], i0, i1, mean[r], weight,
                                    (r % G) * (K // inner), inner, nsub, p)
    if cuda.threadIdx.x == 0:
        store_piece(part, r, p, wa, wb, a, b)


@kernel
def input_grad(dy3, x3, G, inner, width, mean, invstd, weight, sum_wg, sum_wgx, count, centered,
               batch_stats, dx3):
    """dx over chunk ``j`` of row ``r`` from the row sums ``sum w dy``, ``sum w dy xc``."""
    K = x3.shape[2]
    r, j = block_piece((K + width - 1) // width)
    i0 = j * width
    coefficients = grad_coefficients(sum_wg[r], sum_wgx[r], invstd[r], count, centered,
                                     batch_stats)
    input_grad_span(dy3[0, r], x3[0, r], dx3[0, r], i0, min(K, i0 + width), mean[r], coefficients,
                    weight, (r % G) * (K // inner), inner, batch_stats)


@kernel
def backward_rows(dy3, x3, G, inner, mean, invstd, weight, count, centered, batch_stats, dx3,
                  part):
    """Backward, one block per row: piece sums (into ``part``) in order, then dx from the cache.

    The pieces are the row's segments (per-channel affine) or the whole row.
    """
    sh = cuda.shared.array(0, float64)
    K = x3.shape[2]
    r = cuda.blockIdx.x
    npieces = part.shape[1]
    seg_len = K // npieces
    base = (r % G) * (K // inner)
    dy, x = dy3[0, r], x3[0, r]
    sum_wg = sum_wgx = 0.0
    for p in range(npieces):
        wa, wb, a, b = block_piece_sums(sh, dy, x, p * seg_len, (p + 1) * seg_len, mean[r],
                                        weight, base, inner, 1, p)
        sum_wg += wa
        sum_wgx += wb
        if cuda.threadIdx.x == 0:
            store_piece(part, r, p, wa, wb, a, b)
    coefficients = grad_coefficients(sum_wg, sum_wgx, invstd[r], count, centered, batch_stats)
    input_grad_span(dy, x, dx3[0, r], 0, K, mean[r], coefficients, weight, base, inner,
                    batch_stats)


@kernel
def channel_grads(part, G, nsub, invstd, out):
    """``out[:, c] = (sum dy, sum dy * xhat)`` of channel ``c`` (per-channel affine).

    One block per channel folds the channel's piece partials over samples and
    sub-pieces, ``T`` apart then by the block tree: a fixed order.
    """
    sh = cuda.shared.array(0, float64)
    c = cuda.blockIdx.x
    t = cuda.threadIdx.x
    S = part.shape[1] // nsub
    g = c // S
    s = c - g * S
    a0 = a1 = 0.0
    for q in range(t, part.shape[0] // G * nsub, cuda.blockDim.x):
        n = q // nsub
        r = n * G + g
        p = s * nsub + q - n * nsub
        a0 += part[r, p, 2]
        a1 += part[r, p, 3] * invstd[r]
    a0, a1, _ = block_reduce(sh, t, t, 1, cuda.blockDim.x, False, a0, a1, 0.0)
    if t == 0:
        out[0, c] = a0
        out[1, c] = a1


@kernel
def column_grad_partials(dy2, x2, rows_per_block, tile, G, S, mean, invstd, part):
    """``part[c, j] = (sum dy, sum dy * xhat, 0)`` of row block ``j`` of column ``c``.

    Per-element affine: ``x2`` is ``(R // G, G * S)`` and row ``n`` of column
    ``c`` has the statistics of row ``n * G + c // S`` of ``x3``.
    """
    sh = cuda.shared.array(0, float64)
    N, C = x2.shape
    t, lane, height, c, j, r0, r1 = _block_tile(N, rows_per_block, tile, part.shape[1])
    a0 = a1 = 0.0
    if c < C:
        g = c // S
        for n in range(r0 + lane, r1, height):
            d = float64(dy2[n, c])
            r = n * G + g
            a0 += d
            a1 += d * (float64(x2[n, c]) - mean[r]) * invstd[r]
    a0, a1, _ = block_reduce(sh, t, lane, tile, height, False, a0, a1, 0.0)
    if lane == 0 and c < C:
        store_partial(part, c, j, a0, a1, 0.0)


@kernel
def fold_columns(part, out):
    """``out[:, c]`` = the sums of ``column_grad_partials`` over row blocks, in order.

    One thread per column: columns are many (every element of a layer norm's
    row) and row blocks few, so a block per column would mostly idle.
    """
    c = cuda.grid(1)
    if c < part.shape[0]:
        a0 = a1 = 0.0
        for j in range(part.shape[1]):
            a0 += part[c, j, 0]
            a1 += part[c, j, 1]
        out[0, c] = a0
        out[1, c] = a1


@kernel
def repeat(v, out):
    """``out[i] = v[i % len(v)]``: a per-row vector broadcast from its trailing values."""
    i = cuda.grid(1)
    if i < out.shape[0]:
        out[i] = v[i % v.shape[0]]
