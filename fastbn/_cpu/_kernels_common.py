"""Per-channel folds of chunk partials, in a fixed order (chunk 0, 1, 2, ...).

Serial: a fold is a few operations per chunk, far less than a parallel region
costs.  ``part`` is indexed ``[c, j]``; the row kernels write theirs block-major
(contiguous per block) and pass a transposed view, hence any-layout signatures.
"""

from numba import njit

from numba import types

from ._jit import F64, VEC, chan_merge

PARTIALS_VIEW = types.Array(F64, 3, "A", readonly=True)


@njit((PARTIALS_VIEW, VEC, VEC, VEC), nogil=True, cache=True)
def merge_moments(part, count_out, mean_out, m2_out):
    """Chan-merge ``part[c, :] = (count, mean, m2)`` left to right for each channel."""
    C, nch, _ = part.shape
    for c in range(C):
        n = m = m2 = 0.0
        for j in range(nch):
            n, m, m2 = chan_merge(n, m, m2, part[c, j, 0], part[c, j, 1], part[c, j, 2])
        count_out[c] = n
        mean_out[c] = m
        m2_out[c] = m2


@njit((PARTIALS_VIEW, VEC, VEC), nogil=True, cache=True)
def sum_grad_partials(part, sum_g_out, sum_gx_out):
    """Add ``part[c, :] = (sum g, sum g * xc)`` left to right for each channel."""
    C, nch, _ = part.shape
    for c in range(C):
        sg = 0.0
        sgx = 0.0
        for j in range(nch):
            sg += part[c, j, 0]
            sgx += part[c, j, 1]
        sum_g_out[c] = sg
        sum_gx_out[c] = sgx
