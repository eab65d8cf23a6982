"""Inlined building blocks of the channel-runs kernels (``x3`` is ``(O, C, I)``).

A channel's reduced elements are split into chunks fixed by the shape alone:
either ``group`` whole runs ``x3[o0:o1, c, :]`` (short runs) or one run cut into
``nsub`` pieces of ``width`` elements (long runs).  Sums inside a chunk use
eight independent accumulators, which keeps the loop free of a serial
dependency so LLVM emits packed SIMD without reassociating (no fast-math), and
fixes the rounding for every thread count.
"""

from ._jit import device, inverse_std, relu  # noqa: F401 (inverse_std is re-exported)

LANES = 8


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
def segment_sum(x3, o, c, i0, i1):
    """Sum of ``x3[o, c, i0:i1]`` in float64."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    i = i0
    while i + LANES <= i1:
        a0 += x3[o, c, i]
        a1 += x3[o, c, i + 1]
        a2 += x3[o, c, i + 2]
        a3 += x3[o, c, i + 3]
        a4 += x3[o, c, i + 4]
        a5 += x3[o, c, i + 5]
        a6 += x3[o, c, i + 6]
        a7 += x3[o, c, i + 7]
        i += LANES
    tail = 0.0
    while i < i1:
        tail += x3[o, c, i]
        i += 1
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) + tail


@device
def segment_squared_deviation(x3, o, c, i0, i1, mean):
    """Sum of ``(x3[o, c, i0:i1] - mean)**2`` in float64."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    i = i0
    while i + LANES <= i1:
        d0 = x3[o, c, i] - mean
        d1 = x3[o, c, i + 1] - mean
        d2 = x3[o, c, i + 2] - mean
        d3 = x3[o, c, i + 3] - mean
        d4 = x3[o, c, i + 4] - mean
        d5 = x3[o, c, i + 5] - mean
        d6 = x3[o, c, i + 6] - mean
        d7 = x3[o, c, i + 7] - mean
        a0 += d0 * d0
        a1 += d1 * d1
        a2 += d2 * d2
        a3 += d3 * d3
        a4 += d4 * d4
        a5 += d5 * d5
        a6 += d6 * d6
        a7 += d7 * d7
        i += LANES
    tail = 0.0
    while i < i1:
        d = x3[o, c, i] - mean
        tail += d * d
        i += 1
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) + tail


@device
def chunk_moments(x3, c, o0, o1, i0, i1):
    """``(count, mean, m2)`` of a chunk: a sum pass, then a deviation pass over cached data."""
    s = 0.0
    for o in range(o0, o1):
        s += segment_sum(x3, o, c, i0, i1)
    n = float((o1 - o0) * (i1 - i0))
    mean = s / n
    m2 = 0.0
    for o in range(o0, o1):
        m2 += segment_squared_deviation(x3, o, c, i0, i1, mean)
    return n, mean, m2


@device
def normalize_run(x3, o, c, mean, k, shift, res3, has_residual, use_relu, y3):
    """``y = act((x - mean) * k + shift [+ residual])`` over one run, in float64."""
    I = x3.shape[2]
    if has_residual:
        for i in range(I):
            v = (x3[o, c, i] - mean) * k + shift + res3[o, c, i]
            y3[o, c, i] = relu(v) if use_relu else v
    else:
        for i in range(I):
            v = (x3[o, c, i] - mean) * k + shift
            y3[o, c, i] = relu(v) if use_relu else v


@device
def upstream_grad(dy, x, y, mean, k, shift, mask_mode):
    """dy through the activation: ``mask_mode`` 0 none, 1 ReLU recomputed from x, 2 ReLU from saved y."""
    if mask_mode == 1:
        return dy if (x - mean) * k + shift > 0.0 else 0.0
    if mask_mode == 2:
        return dy if y > 0.0 else 0.0
    return dy


@device
def chunk_grad_sums(dy3, x3, y3, c, o0, o1, i0, i1, mean, k, shift, mask_mode):
    """``(sum g, sum g * (x - mean))`` over a chunk, g the upstream gradient."""
    sg = 0.0
    sgx = 0.0
    for o in range(o0, o1):
        g0 = g1 = g2 = g3 = 0.0
        h0 = h1 = h2 = h3 = 0.0
        i = i0
        while i + 4 <= i1:
            e0 = upstream_grad(dy3[o, c, i], x3[o, c, i], y3[o, c, i], mean, k, shift, mask_mode)
            e1 = upstream_grad(dy3[o, c, i + 1], x3[o, c, i + 1], y3[o, c, i + 1], mean, k, shift, mask_mode)
            e2 = upstream_grad(dy3[o, c, i + 2], x3[o, c, i + 2], y3[o, c, i + 2], mean, k, shift, mask_mode)
            e3 = upstream_grad(dy3[o, c, i + 3], x3[o, c, i + 3], y3[o, c, i + 3], mean, k, shift, mask_mode)
            g0 += e0
            g1 += e1
            g2 += e2
            g3 += e3
            h0 += e0 * (x3[o, c, i] - mean)
            h1 += e1 * (x3[o, c, i + 1] - mean)
            h2 += e2 * (x3[o, c, i + 2] - mean)
            h3 += e3 * (x3[o, c, i + 3] - mean)
            i += 4
        while i < i1:
            e = upstream_grad(dy3[o, c, i], x3[o, c, i], y3[o, c, i], mean, k, shift, mask_mode)
            g0 += e
            h0 += e * (x3[o, c, i] - mean)
            i += 1
        sg += (g0 + g1) + (g2 + g3)
        sgx += (h0 + h1) + (h2 + h3)
    return sg, sgx


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
    """One element of dx (frozen statistics never read x, so inf input stays finite)."""
    if batch_stats:
        return a * (g - c1 - (x - mean) * c2)
    return a * g


@device
def input_grad_run(dy3, x3, y3, o, c, mean, k, shift, mask_mode, a, c1, c2, batch_stats,
                   dx3, dres3, has_dres):
    """dx (and the residual's gradient g) over one run."""
    I = x3.shape[2]
    for i in range(I):
        g = upstream_grad(dy3[o, c, i], x3[o, c, i], y3[o, c, i], mean, k, shift, mask_mode)
        if has_dres:
            dres3[o, c, i] = g
        dx3[o, c, i] = input_grad_value(g, x3[o, c, i], mean, a, c1, c2, batch_stats)


