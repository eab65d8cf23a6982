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

from ._jit import device, prefetch_lines, relu
from ._nontemporal import run_writer

#: Values per lane per step of the lane loops (a block is ``BLOCK_ROWS * lanes`` elements).
BLOCK_ROWS = 4

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


@device
def lane_blocks(seg, lanes):
    """``seg`` as full ``(n, BLOCK_ROWS, lanes)`` blocks, and the index where the tail starts."""
    step = BLOCK_ROWS * lanes
    n = seg.shape[0] // step
    return seg[:n * step].reshape((n, BLOCK_ROWS, lanes)), n * step


@device
def lane_rows(seg, start, lanes):
    """``seg[start:]`` (a block tail) as full ``(m, lanes)`` rows, and the index of the scalar rest.

    The rows still run across the lane accumulators, so a run whose length is
    not a multiple of ``BLOCK_ROWS * lanes`` leaves fewer than ``lanes``
    elements to the scalar loop.
    """
    m = (seg.shape[0] - start) // lanes
    return seg[start:start + m * lanes].reshape((m, lanes)), start + m * lanes


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
    acc1 = np.zeros(lanes)
    acc2 = np.zeros(lanes)
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
def _normalize_span(params, lo, hi, y):
    """``y = act((x - mean) * k + shift [+ residual])`` for elements ``[lo, hi)`` of a run."""
    x, res, mean, k, shift, has_residual, use_relu = params
    xs = x[lo:hi]
    if has_residual:
        rs = res[lo:hi]
        for i in range(xs.shape[0]):
            v = (xs[i] - mean) * k + shift + rs[i]
            y[i] = relu(v) if use_relu else v
    else:
        for i in range(xs.shape[0]):
            v = (xs[i] - mean) * k + shift
            y[i] = relu(v) if use_relu else v


_write_normalized = run_writer(_normalize_span)


@device
def normalize_run(x3, o, c, mean, k, shift, res3, has_residual, use_relu, nontemporal, y3):
    """``y = act((x - mean) * k + shift [+ residual])`` over one run, in float64."""
    _write_normalized((x3[o, c], res3[o, c], mean, k, shift, has_residual, use_relu), y3[o, c],
                      nontemporal)


@device
def upstream_grad(dy, x, y, mean, k, shift, mask_mode):
    """dy through the activation: the ReLU mask recomputed from x, or from the saved y.

    Always float64, so that sums of g are float64 sums in every mode.
    """
    if mask_mode == MASK_RECOMPUTE:
        return np.float64(dy) if (x - mean) * k + shift > 0.0 else 0.0
    if mask_mode >= MASK_FROM_OUTPUT:
        return np.float64(dy) if y > 0.0 else 0.0
    return np.float64(dy)


@device
def _grad_sums_run(dy, x, y, ahead, prefetch_next, mean, k, shift, mask_mode, lanes, acc_g,
                   acc_h):
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
            g0 = upstream_grad(bdy[t, 0, j], bx[t, 0, j], by[t, 0, j], mean, k, shift, mask_mode)
            g1 = upstream_grad(bdy[t, 1, j], bx[t, 1, j], by[t, 1, j], mean, k, shift, mask_mode)
            g2 = upstream_grad(bdy[t, 2, j], bx[t, 2, j], by[t, 2, j], mean, k, shift, mask_mode)
            g3 = upstream_grad(bdy[t, 3, j], bx[t, 3, j], by[t, 3, j], mean, k, shift, mask_mode)
            acc_g[j] += block_sum(g0, g1, g2, g3)
            acc_h[j] += block_sum(g0 * (bx[t, 0, j] - mean), g1 * (bx[t, 1, j] - mean),
                                  g2 * (bx[t, 2, j] - mean), g3 * (bx[t, 3, j] - mean))
    rdy, rest = lane_rows(dy, start, lanes)
    rx, _ = lane_rows(x, start, lanes)
    ry, _ = lane_rows(y, start, lanes)
    for t in range(rdy.shape[0]):
        for j in range(lanes):
            g = upstream_grad(rdy[t, j], rx[t, j], ry[t, j], mean, k, shift, mask_mode)
            acc_g[j] += g
            acc_h[j] += g * (rx[t, j] - mean)
    tail_g = 0.0
    tail_h = 0.0
    for i in range(rest, dy.shape[0]):
        g = upstream_grad(dy[i], x[i], y[i], mean, k, shift, mask_mode)
        tail_g += g
        tail_h += g * (x[i] - mean)
    return tail_g, tail_h


@device
def chunk_grad_sums(dy3, x3, y3, c, o0, o1, i0, i1, mean, k, shift, mask_mode, lanes,
                    prefetch_next):
    """``(sum g, sum g * (x - mean))`` over a chunk, g the upstream gradient."""
    acc_g = np.zeros(lanes)
    acc_h = np.zeros(lanes)
    tail_g = 0.0
    tail_h = 0.0
    for o in range(o0, o1):
        dy, x, y = dy3[o, c, i0:i1], x3[o, c, i0:i1], y3[o, c, i0:i1]
        ahead = (next_run(dy3, o, c, i0, i1), next_run(x3, o, c, i0, i1),
                 next_run(y3, o, c, i0, i1))
        if mask_mode == MASK_RECOMPUTE:
            a, b = _grad_sums_run(dy, x, y, ahead, prefetch_next, mean, k, shift, MASK_RECOMPUTE,
                                  lanes, acc_g, acc_h)
        elif mask_mode >= MASK_FROM_OUTPUT:
            a, b = _grad_sums_run(dy, x, y, ahead, prefetch_next, mean, k, shift,
                                  MASK_FROM_OUTPUT, lanes, acc_g, acc_h)
        else:
            a, b = _grad_sums_run(dy, x, y, ahead, prefetch_next, mean, k, shift, MASK_NONE, lanes,
                                  acc_g, acc_h)
        tail_g += a
        tail_h += b
    return fold_lanes(acc_g) + tail_g, fold_lanes(acc_h) + tail_h


@device
def input_grad_coefficients(sg, sgx, invstd, weight, count, batch_stats):
    """``(a, c1, c2)`` with ``dx = a * (g - c1 - (x - mean) * c2)``.

    With frozen statistics (``batch_stats`` False) mean and invstd are constants
    and ``dx = a * g``.
    """
    a = weight * invstd
    if not batch_stats:
        return a, 0.0, 0.0
    return a, sg / count, invstd * invstd * sgx / count


@device
def input_grad_value(g, x, mean, a, c1, c2, batch_stats):
    """One element of dx; with frozen statistics x is not used (inf input stays finite)."""
    xc = (x - mean) if batch_stats else 0.0
    return a * (g - c1 - xc * c2)


def _input_grad_writer(mask_mode):
    """The writer of dx over a run for one mask mode (a constant of the compiled loop)."""
    @device
    def span(params, lo, hi, dx):
        """dx over elements ``[lo, hi)`` of a run, and g into ``dres`` in the store mode."""
        dy, x, y, dres, mean, k, shift, a, c1, c2, batch_stats = params
        dys, xs, ys, dress = dy[lo:hi], x[lo:hi], y[lo:hi], dres[lo:hi]
        for i in range(xs.shape[0]):
            g = upstream_grad(dys[i], xs[i], ys[i], mean, k, shift, mask_mode)
            if mask_mode == MASK_FROM_OUTPUT_STORE:
                dress[i] = g
            dx[i] = input_grad_value(g, xs[i], mean, a, c1, c2, batch_stats)
    return run_writer(span)


_write_dx_none = _input_grad_writer(MASK_NONE)
_write_dx_recompute = _input_grad_writer(MASK_RECOMPUTE)
_write_dx_from_output = _input_grad_writer(MASK_FROM_OUTPUT)
_write_dx_store = _input_grad_writer(MASK_FROM_OUTPUT_STORE)


@device
def input_grad_run(dy3, x3, y3, o, c, mean, k, shift, mask_mode, a, c1, c2, batch_stats,
                   nontemporal, dx3, dres3):
    """dx (and g into ``dres3``) over one run, with the span specialised by mode."""
    dx = dx3[o, c]
    params = (dy3[o, c], x3[o, c], y3[o, c], dres3[o, c], mean, k, shift, a, c1, c2, batch_stats)
    if mask_mode == MASK_RECOMPUTE:
        _write_dx_recompute(params, dx, nontemporal)
    elif mask_mode == MASK_FROM_OUTPUT:
        _write_dx_from_output(params, dx, nontemporal)
    elif mask_mode == MASK_FROM_OUTPUT_STORE:
        _write_dx_store(params, dx, nontemporal)
    else:
        _write_dx_none(params, dx, nontemporal)
