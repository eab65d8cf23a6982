"""Per-channel folds of chunk partials, in a fixed order (chunk 0, 1, 2, ...).

Serial: a fold is a few operations per chunk, far less than a parallel region
costs.  ``part`` is indexed ``[c, j]``; the row kernels write theirs block-major
(contiguous per block) and pass a transposed view, hence any-layout signatures.
"""

from numba import types

from ._jit import F64, VEC, chan_merge, compiled

PARTIALS_VIEW = types.Array(F64, 3, "A", readonly=True)


@compiled([(PARTIALS_VIEW, VEC, VEC, VEC)])
def merge_moments(part, count_out, mean_out, m2_out):
    """Chan-merge ``part[c, :] = (count, mean, m2)`` left to right for each channel.

    Chunk by chunk, across the channels in the inner loop (it vectorises; each
    channel's merge order is unchanged).
    """
    C, nch, _ = part.shape
    count_out[:] = 0.0
    mean_out[:] = 0.0
    m2_out[:] = 0.0
    for j in range(nch):
        for c in range(C):
            count_out[c], mean_out[c], m2_out[c] = chan_merge(
                count_out[c], mean_out[c], m2_out[c], part[c, j, 0], part[c, j, 1], part[c, j, 2])


@compiled([(PARTIALS_VIEW, VEC, VEC)])
def sum_grad_partials(part, sum_g_out, sum_gx_out):
    """Add ``part[c, :] = (sum g, sum g * xc)`` left to right for each channel (chunk by chunk)."""
    C, nch, _ = part.shape
    sum_g_out[:] = 0.0
    sum_gx_out[:] = 0.0
    for j in range(nch):
        for c in range(C):
            sum_g_out[c] += part[c, j, 0]
            sum_gx_out[c] += part[c, j, 1]
