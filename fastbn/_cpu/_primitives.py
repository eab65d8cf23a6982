"""Inlined building blocks of the channel-runs kernels (``x3`` is ``(O, C, I)``).

A channel's reduced elements are split into chunks fixed by the shape alone:
either ``group`` whole runs ``x3[o0:o1, c, :]`` (short runs) or one run cut into
``nsub`` pieces of ``width`` elements (long runs).

Sums inside a chunk keep ``lanes`` independent float64 accumulators: each run
is viewed as ``(n, BLOCK_ROWS, lanes)`` blocks and the inner loop runs across
the lanes, so LLVM's loop vectoriser emits packed SIMD without reassociating
anything (no fast-math).  Each step adds the pairwise sum of a block's
``BLOCK_ROWS`` values to a lane, which quarters the loads and stores of the
accumulators (they live in memory, ``lanes`` being a runtime value), and the
lanes are folded by a fixed pairwise tree at the end.  What is left after the
blocks still runs across the lanes, one row of ``lanes`` values at a time
(``lane_rows``); only the last ``< lanes`` elements of a run are scalar.
``lanes`` is a runtime argument on purpose: a constant would be fully unrolled
first and then not vectorised.  The rounding is therefore fixed by the shape
and ``lanes``, never by the thread count.

``prefetch_next`` makes a chunk ask for the same elements of the channel's next
run while it reduces this one (one hint per block, outside the vector loop):
when one thread walks a whole channel, consecutive runs are ``C * inner``
elements apart and the hardware prefetcher, which stops at page boundaries,
does not see them coming.  The driver turns it off for runs too long to stay
in cache until they are used.

Loops whose body depends on a mode (ReLU mask source, batch or frozen
statistics) are written once and called with literal modes, so each inlined
copy is specialised and vectorised.  The full-size outputs (y, dx) are written
span by span through ``_nontemporal.run_writer``, directly or with
non-temporal stores as the driver asks.
"""

import numpy as np

from ._jit import as_element, contiguous_view, device, prefetch_lines, relu, stack_buffer
from ._nontemporal import run_writer

#: Values per lane per step of the lane loops (a block is ``BLOCK_ROWS * lanes`` elements).
BLOCK_ROWS = 4

#: Most lane accumulators a sum may keep (the size of their stack buffers).
MAX_LANES = 64

#: How backward finds the ReLU mask: none, recomputed from x, from the saved
#: output, or from the saved output while also storing g (the residual's grad).
MASK_NONE, MASK_RECOMPUTE, MASK_FROM_OUTPUT, MASK_FROM_OUTPUT_STORE = 0, 1, 2, 3


@device
def num_chunks(O, group, nsub):
    return ((O + group - 1) // group) * nsub


@device
def chunk_bounds(j, O, I, group, width, nsub):
    """Run range ``[o0, o1)`` and element range ``[i0, i1)`` of chunk ``j``."""
    ob = j // nsub
    k = j - ob * nsub
    o0 = ob * group
    i0 = k * width
    return o0, min(O, o0 + group), i0, min(I, i0 + width)


@device
def fold_lanes(acc):
    """Sum the lane accumulators by a fixed pairwise tree (``len(acc)`` a power of two)."""
    w = acc.shape[0]
    while w > 1:
        w //= 2
        for k in range(w):
            acc[k] += acc[k + w]
    return acc[0]


def checked_lanes(lanes):
    """``lanes`` (host side) if the lane loops can take it: a power of two, ``<= MAX_LANES``."""
    if not 1 <= lanes <= MAX_LANES or lanes & (lanes - 1):
        raise ValueError(f"lane accumulators must be a power of two <= {MAX_LANES}, got {lanes}")
    return lanes


@device
def lane_accumulators(lanes):
    """``lanes`` float64 zeros in a stack buffer (``lanes <= MAX_LANES``).

    A heap array per chunk cost an allocation and a free each: with 784-element
    segments, several times the stack's cost per element.
    """
    acc = stack_buffer(0.0, MAX_LANES)[:lanes]
    acc[:] = 0.0
    return acc


@device
def lane_blocks(seg, lanes):
    """``seg`` as full ``(n, BLOCK_ROWS, lanes)`` blocks, and the index where the tail starts."""
    step = BLOCK_ROWS * lanes
    n = seg.shape[0] // step
    return contiguous_view(seg[:n * step], (n, BLOCK_ROWS, lanes)), n * step


@device
def lane_rows(seg, start, lanes):
    """``seg[start:]`` (a block tail) as full ``(m, lanes)`` rows, and the index of the scalar rest.

    The rows still run across the lane accumulators, so a run whose length is
    not a multiple of ``BLOCK_ROWS * lanes`` leaves fewer than ``lanes``
    elements to the scalar loop.
    """
    m = (seg.shape[0] - start) // lanes
    return contiguous_view(seg[start:start + m * lanes], (m, lanes)), start + m * lanes


@device
def block_sum(v0, v1, v2, v3):
    """The fixed pairwise sum of one lane's ``BLOCK_ROWS`` values."""
    return (v0 + v1) + (v2 + v3)


@device
def next_run(a3, o, c, i0, i1):
    """Elements ``[i0, i1)`` of channel ``c``'s run after run ``o`` (the last run: itself)."""
    return a3[min(o + 1, a3.shape[0] - 1), c, i0:i1]


@device
def chunk_moments(x3, c, o0, o1, i0, i1, lanes, prefetch_next):
    """``(count, mean, m2)`` of a chunk in one pass, from sums of deviations from a pivot.

    The pivot ``p`` is the chunk's first element.  With ``d = x - p``,
    ``m2 = S(d*d) - S(d)**2 / n`` exactly, and because ``p`` is one of the
    chunk's values, ``n * (p - mean)**2 <= n * m2``: the cancellation costs at
    most a factor ``n`` (the chunk size) of float64 rounding, far inside float64
    accuracy, while the data is read once.  Chunks then merge with Chan's
    formula (``fastbn._welford.chan_merge``).
    """
    pivot = np.float64(x3[o0, c, i0])
    acc1 = lane_accumulators(lanes)
    acc2 = lane_accumulators(lanes)
    tail1 = 0.0
    tail2 = 0.0
    step = BLOCK_ROWS * lanes
    for o in range(o0, o1):
        seg = x3[o, c, i0:i1]
        ahead = next_run(x3, o, c, i0, i1)
        blocks, start = lane_blocks(seg, lanes)
        for t in range(blocks.shape[0]):
            if prefetch_next:
                prefetch_lines(ahead, t * step, (t + 1) * step)
            for k in range(lanes):
                d0 = blocks[t, 0, k] - pivot
                d1 = blocks[t, 1, k] - pivot
                d2 = blocks[t, 2, k] - pivot
                d3 = blocks[t, 3, k] - pivot
                acc1[k] += block_sum(d0, d1, d2, d3)
                acc2[k] += block_sum(d0 * d0, d1 * d1, d2 * d2, d3 * d3)
        rows, rest = lane_rows(seg, start, lanes)
        for t in range(rows.shape[0]):
            for k in range(lanes):
                d = rows[t, k] - pivot
                acc1[k] += d
                acc2[k] += d * d
        for i in range(rest, seg.shape[0]):
            d = seg[i] - pivot
            tail1 += d
            tail2 += d * d
    n = float((o1 - o0) * (i1 - i0))
    s1 = fold_lanes(acc1) + tail1
    shift = s1 / n
    return n, pivot + shift, max(fold_lanes(acc2) + tail2 - s1 * shift, 0.0)


@device
def output_affine(mean, k, bias, like):
    """``(m, k, shift)`` in the dtype of ``like`` with ``(x - m) * k + shift == (x - mean) * k + bias``.

    The output passes then run in the data's dtype (float32: twice the lanes
    of float64 per instruction, half the bytes of per-channel vectors).
    ``m`` is the mean rounded to that dtype and ``shift`` absorbs, in float64,
    what the rounding dropped, so ``x - m`` is exact for ``x`` near the mean
    (Sterbenz) and only the roundings of the few float32 operations remain:
    about 1e-7 of ``|y| + |bias|``, far inside the 1e-4 the reference asks,
    even for channels whose mean is 1e8 standard deviations from zero.
    Float64 data gets ``m = mean`` and ``shift = bias``: the float64 formula.
    """
    m = as_element(like, mean)
    dropped = mean - m
    shift = bias - dropped * k if dropped != 0.0 else bias
    return m, as_element(like, k), as_element(like, shift)


@device
def _normalize_span(params, lo, hi, y):
    """``y = act((x - m) * k + shift [+ residual])`` for elements ``[lo, hi)`` of a run."""
    x, res, m, k, shift, has_residual, use_relu = params
    xs = x[lo:hi]
    if has_residual:
        rs = res[lo:hi]
        for i in range(xs.shape[0]):
            v = (xs[i] - m) * k + shift + rs[i]
            y[i] = relu(v) if use_relu else v
    else:
        for i in range(xs.shape[0]):
            v = (xs[i] - m) * k + shift
            y[i] = relu(v) if use_relu else v


write_normalized = run_writer(_normalize_span)


@device
def normalize_run(x3, o, c, affine, res3, has_residual, use_relu, nontemporal, y3):
    """``y = act((x - m) * k + shift [+ residual])`` over one run; ``affine = output_affine(...)``."""
    m, k, shift = affine
    write_normalized((x3[o, c], res3[o, c], m, k, shift, has_residual, use_relu), y3[o, c],
                      nontemporal)


@device
def upstream_grad(dy, x, y, m, k, shift, mask_mode, zero):
    """dy through the activation: the ReLU mask recomputed from x, or from the saved y.

    ``(m, k, shift)`` are the forward's own constants (``output_affine``), so
    the recomputed mask is the sign of the very value the forward stored.
    ``zero`` is a 0 of dy's type, for a result of one type in every branch.
    """
    if mask_mode == MASK_RECOMPUTE:
        return dy if (x - m) * k + shift > 0.0 else zero
    if mask_mode >= MASK_FROM_OUTPUT:
        return dy if y > 0.0 else zero
    return dy


@device
def upstream_grad64(dy, x, y, affine, mask_mode):
    """``upstream_grad`` in float64 (every sum of g is a float64 sum); ``affine = (m, k, shift)``."""
    m, k, shift = affine
    return np.float64(upstream_grad(dy, x, y, m, k, shift, mask_mode, as_element(dy, 0.0)))


@device
def _grad_sums_run(dy, x, y, ahead, prefetch_next, mean, affine, mask_mode, lanes, acc_g, acc_h):
    """Add one run's ``g`` and ``g * (x - mean)`` into the lane accumulators; returns the tails.

    ``ahead`` holds the next runs ``(dy, x, y)``, prefetched if ``prefetch_next``.
    """
    bdy, start = lane_blocks(dy, lanes)
    bx, _ = lane_blocks(x, lanes)
    by, _ = lane_blocks(y, lanes)
    step = BLOCK_ROWS * lanes
    for t in range(bdy.shape[0]):
        if prefetch_next:
            prefetch_lines(ahead[0], t * step, (t + 1) * step)
            prefetch_lines(ahead[1], t * step, (t + 1) * step)
            if mask_mode >= MASK_FROM_OUTPUT:
                prefetch_lines(ahead[2], t * step, (t + 1) * step)
        for j in range(lanes):
            g0 = upstream_grad64(bdy[t, 0, j], bx[t, 0, j], by[t, 0, j], affine, mask_mode)
            g1 = upstream_grad64(bdy[t, 1, j], bx[t, 1, j], by[t, 1, j], affine, mask_mode)
            g2 = upstream_grad64(bdy[t, 2, j], bx[t, 2, j], by[t, 2, j], affine, mask_mode)
            g3 = upstream_grad64(bdy[t, 3, j], bx[t, 3, j], by[t, 3, j], affine, mask_mode)
            acc_g[j] += block_sum(g0, g1, g2, g3)
            acc_h[j] += block_sum(g0 * (bx[t, 0, j] - mean), g1 * (bx[t, 1, j] - mean),
                                  g2 * (bx[t, 2, j] - mean), g3 * (bx[t, 3, j] - mean))
    rdy, rest = lane_rows(dy, start, lanes)
    rx, _ = lane_rows(x, start, lanes)
    ry, _ = lane_rows(y, start, lanes)
    for t in range(rdy.shape[0]):
        for j in range(lanes):
            g = upstream_grad64(rdy[t, j], rx[t, j], ry[t, j], affine, mask_mode)
            acc_g[j] += g
            acc_h[j] += g * (rx[t, j] - mean)
    tail_g = 0.0
    tail_h = 0.0
    for i in range(rest, dy.shape[0]):
        g = upstream_grad64(dy[i], x[i], y[i], affine, mask_mode)
        tail_g += g
        tail_h += g * (x[i] - mean)
    return tail_g, tail_h


@device
def chunk_grad_sums(dy3, x3, y3, c, o0, o1, i0, i1, mean, affine, mask_mode, lanes, prefetch_next):
    """``(sum g, sum g * (x - mean))`` over a chunk, g the upstream gradient.

    ``affine`` is the forward's ``output_affine``, for the recomputed mask.
    """
    acc_g = lane_accumulators(lanes)
    acc_h = lane_accumulators(lanes)
    tail_g = 0.0
    tail_h = 0.0
    for o in range(o0, o1):
        dy, x, y = dy3[o, c, i0:i1], x3[o, c, i0:i1], y3[o, c, i0:i1]
        ahead = (next_run(dy3, o, c, i0, i1), next_run(x3, o, c, i0, i1),
                 next_run(y3, o, c, i0, i1))
        if mask_mode == MASK_RECOMPUTE:
            a, b = _grad_sums_run(dy, x, y, ahead, prefetch_next, mean, affine, MASK_RECOMPUTE,
                                  lanes, acc_g, acc_h)
        elif mask_mode >= MASK_FROM_OUTPUT:
            a, b = _grad_sums_run(dy, x, y, ahead, prefetch_next, mean, affine, MASK_FROM_OUTPUT,
                                  lanes, acc_g, acc_h)
        else:
            a, b = _grad_sums_run(dy, x, y, ahead, prefetch_next, mean, affine, MASK_NONE, lanes,
                                  acc_g, acc_h)
        tail_g += a
        tail_h += b
    return fold_lanes(acc_g) + tail_g, fold_lanes(acc_h) + tail_h


@device
def input_grad_coefficients(sg, sgx, invstd, weight, count, batch_stats, dropped):
    """``(scale, slope, offset)`` of ``dx = (g * scale + offset) + (x - m) * slope``.

    That is ``a * (g - mean(g) - (x - mean) * invstd**2 * mean(g * (x - mean)))``
    with ``a = weight * invstd``, ``sg = sum g``, ``sgx = sum g * (x - mean)``
    over ``count`` elements, written around ``m = mean - dropped`` (the mean
    in the data's dtype, ``output_affine``).  With frozen statistics
    (``batch_stats`` False) mean and invstd are constants and ``dx = a * g``.
    """
    scale = weight * invstd
    if not batch_stats:
        return scale, 0.0, 0.0
    slope = -scale * invstd * invstd * sgx / count
    return scale, slope, -scale * sg / count - slope * dropped


@device
def input_grad_affine(sg, sgx, mean, invstd, weight, count, batch_stats, like):
    """``input_grad_coefficients`` in the dtype of ``like``, around its ``output_affine`` mean."""
    m = as_element(like, mean)
    scale, slope, offset = input_grad_coefficients(sg, sgx, invstd, weight, count, batch_stats,
                                                   mean - m)
    return as_element(like, scale), as_element(like, slope), as_element(like, offset)


@device
def input_grad_value(g, x, m, scale, slope, offset, batch_stats):
    """One element of dx; with frozen statistics x is not used (inf input stays finite).

    ``g * scale + offset`` first: it is where a constant dy cancels exactly.
    """
    if not batch_stats:
        return g * scale
    return (g * scale + offset) + (x - m) * slope


def _input_grad_writer(mask_mode):
    """The writer of dx over a run for one mask mode (a constant of the compiled loop)."""
    @device
    def span(params, lo, hi, dx):
        """dx over elements ``[lo, hi)`` of a run."""
        dy, x, y, m, k, shift, scale, slope, offset, batch_stats = params
        dys, xs, ys = dy[lo:hi], x[lo:hi], y[lo:hi]
        zero = as_element(dy, 0.0)
        for i in range(xs.shape[0]):
            g = upstream_grad(dys[i], xs[i], ys[i], m, k, shift, mask_mode, zero)
            dx[i] = input_grad_value(g, xs[i], m, scale, slope, offset, batch_stats)
    return run_writer(span)


_write_dx_none = _input_grad_writer(MASK_NONE)
_write_dx_recompute = _input_grad_writer(MASK_RECOMPUTE)
_write_dx_from_output = _input_grad_writer(MASK_FROM_OUTPUT)


@device
def _masked_grad_span(params, lo, hi, g):
    """``g = dy`` where the saved output is positive, else 0, over elements ``[lo, hi)`` of a run."""
    dy, y = params
    dys, ys = dy[lo:hi], y[lo:hi]
    zero = as_element(dy, 0.0)
    for i in range(dys.shape[0]):
        g[i] = upstream_grad(dys[i], ys[i], ys[i], zero, zero, zero, MASK_FROM_OUTPUT, zero)


_write_masked_grad = run_writer(_masked_grad_span)


@device
def input_grad_run(dy3, x3, y3, o, c, affine, mask_mode, coefficients, batch_stats, nontemporal,
                   dx3, dres3):
    """dx (and g into ``dres3``) over one run, with the span specialised by mode.

    ``affine``: the forward's ``output_affine``; ``coefficients``: ``input_grad_affine``.
    The store mode writes g in a pass of its own over the run (still in cache),
    so that both outputs can take non-temporal stores.
    """
    dx = dx3[o, c]
    m, k, shift = affine
    scale, slope, offset = coefficients
    params = (dy3[o, c], x3[o, c], y3[o, c], m, k, shift, scale, slope, offset, batch_stats)
    if mask_mode == MASK_RECOMPUTE:
        _write_dx_recompute(params, dx, nontemporal)
    elif mask_mode >= MASK_FROM_OUTPUT:
        _write_dx_from_output(params, dx, nontemporal)
        if mask_mode == MASK_FROM_OUTPUT_STORE:
            _write_masked_grad((dy3[o, c], y3[o, c]), dres3[o, c], nontemporal)
    else:
        _write_dx_none(params, dx, nontemporal)
