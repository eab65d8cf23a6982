"""Channel-runs kernels: ``x3`` is ``(O, C, I)`` with runs of ``I > 1`` elements.

``geom`` is the chunk geometry ``(group, width, nsub, lanes, prefetch_next)``
from the driver (see ``_primitives``); it is an array so that ``lanes`` stays a
runtime value.

Two decompositions compute the same chunk partials and fold them in the same
order, so they give bitwise identical results:

* per channel (``*_fused``): a thread takes a whole channel, folds its chunks,
  then makes the second pass over the channel's slab while it is in cache;
* per chunk (``runs_partials`` / ``runs_grad_partials`` then a fold in
  ``_kernels_common``): for few channels and a large reduced axis.

Kernels that write a full-size output take ``nontemporal`` (the driver's
choice, by output size): the runs are then written through non-temporal
stores (``_nontemporal``), and each task ends with ``store_fence``.
"""

from numba import prange

from ._jit import BOOL, F64, GEOM, I64, PARTIALS, VEC, VEC_IN, arr, chan_merge, inverse_std, kernel
from ._primitives import (chunk_bounds, chunk_grad_sums, chunk_moments, input_grad_affine,
                          input_grad_run, normalize_run, num_chunks, output_affine)
from ._nontemporal import store_fence


@kernel(lambda t: (arr(t, 3, True), GEOM, PARTIALS))
def runs_partials(x3, geom, part):
    """``part[c, j] = (count, mean, m2)`` of chunk ``j`` of channel ``c``."""
    O, C, I = x3.shape
    group, width, nsub, lanes = geom[0], geom[1], geom[2], geom[3]
    nch = num_chunks(O, group, nsub)
    for t in prange(C * nch):  # in memory order: the channels of chunk row j side by side
        j = t // C
        c = t - j * C
        o0, o1, i0, i1 = chunk_bounds(j, O, I, group, width, nsub)
        n, m, m2 = chunk_moments(x3, c, o0, o1, i0, i1, lanes, False)
        part[c, j, 0] = n
        part[c, j, 1] = m
        part[c, j, 2] = m2


@kernel(lambda t: (arr(t, 3, True), VEC_IN, VEC_IN, VEC_IN, VEC_IN, arr(t, 3, True), BOOL, BOOL,
                   BOOL, arr(t, 3)))
def runs_normalize(x3, mean, invstd, weight, bias, res3, has_residual, use_relu, nontemporal, y3):
    """``y = act((x - mean) * invstd * weight + bias [+ residual])`` for every run."""
    O, C, I = x3.shape
    for t in prange(O * C):
        o = t // C
        c = t - o * C
        affine = output_affine(mean[c], invstd[c] * weight[c], bias[c], x3)
        normalize_run(x3, o, c, affine, res3, has_residual, use_relu, nontemporal, y3)
        if nontemporal:
            store_fence()


@kernel(lambda t: (arr(t, 3, True), GEOM, VEC_IN, VEC_IN, F64, arr(t, 3, True), BOOL, BOOL,
                   BOOL, arr(t, 3), VEC, VEC, VEC))
def runs_train_fused(x3, geom, weight, bias, eps, res3, has_residual, use_relu, nontemporal, y3,
                     mean_out, invstd_out, m2_out):
    """Training forward, one channel per thread: statistics, then normalise the cached slab."""
    O, C, I = x3.shape
    group, width, nsub, lanes = geom[0], geom[1], geom[2], geom[3]
    prefetch_next = geom[4] != 0
    nch = num_chunks(O, group, nsub)
    for c in prange(C):
        n = m = m2 = 0.0
        for j in range(nch):
            o0, o1, i0, i1 = chunk_bounds(j, O, I, group, width, nsub)
            nb, mb, m2b = chunk_moments(x3, c, o0, o1, i0, i1, lanes, prefetch_next)
            n, m, m2 = chan_merge(n, m, m2, nb, mb, m2b)
        invstd = inverse_std(m2 / n, eps)
        affine = output_affine(m, invstd * weight[c], bias[c], x3)
        for o in range(O):
            normalize_run(x3, o, c, affine, res3, has_residual, use_relu, nontemporal, y3)
        if nontemporal:
            store_fence()
        mean_out[c] = m
        invstd_out[c] = invstd
        m2_out[c] = m2


@kernel(lambda t: (arr(t, 3, True), arr(t, 3, True), arr(t, 3, True), GEOM, VEC_IN, VEC_IN, VEC_IN,
                   VEC_IN, I64, PARTIALS))
def runs_grad_partials(dy3, x3, y3, geom, mean, invstd, weight, bias, mask_mode, part):
    """``part[c, j] = (sum g, sum g * (x - mean))`` of chunk ``j`` of channel ``c``."""
    O, C, I = x3.shape
    group, width, nsub, lanes = geom[0], geom[1], geom[2], geom[3]
    nch = num_chunks(O, group, nsub)
    for t in prange(C * nch):  # in memory order, as in runs_partials
        j = t // C
        c = t - j * C
        o0, o1, i0, i1 = chunk_bounds(j, O, I, group, width, nsub)
        affine = output_affine(mean[c], invstd[c] * weight[c], bias[c], x3)
        sg, sgx = chunk_grad_sums(dy3, x3, y3, c, o0, o1, i0, i1, mean[c], affine, mask_mode, lanes,
                                  False)
        part[c, j, 0] = sg
        part[c, j, 1] = sgx


@kernel(lambda t: (arr(t, 3, True), arr(t, 3, True), arr(t, 3, True), VEC_IN, VEC_IN, VEC_IN,
                   VEC_IN, I64, VEC_IN, VEC_IN, F64, BOOL, BOOL, arr(t, 3), arr(t, 3)))
def runs_input_grad(dy3, x3, y3, mean, invstd, weight, bias, mask_mode, sum_g, sum_gx, count,
                    batch_stats, nontemporal, dx3, dres3):
    """dx for every run from the per-channel gradient sums over ``count`` elements per channel."""
    O, C, I = x3.shape
    for t in prange(O * C):
        o = t // C
        c = t - o * C
        affine = output_affine(mean[c], invstd[c] * weight[c], bias[c], x3)
        coefficients = input_grad_affine(sum_g[c], sum_gx[c], mean[c], invstd[c], weight[c], count,
                                         batch_stats, x3)
        input_grad_run(dy3, x3, y3, o, c, affine, mask_mode, coefficients, batch_stats,
                       nontemporal, dx3, dres3)
        if nontemporal:
            store_fence()


@kernel(lambda t: (arr(t, 3, True), arr(t, 3, True), arr(t, 3, True), GEOM, VEC_IN, VEC_IN, VEC_IN,
                   VEC_IN, I64, BOOL, BOOL, arr(t, 3), arr(t, 3), VEC, VEC))
def runs_backward_fused(dy3, x3, y3, geom, mean, invstd, weight, bias, mask_mode, batch_stats,
                        nontemporal, dx3, dres3, sum_g_out, sum_gx_out):
    """Backward, one channel per thread: gradient sums, then dx from the cached slab.

    The dx pass walks the runs last to first.  The slab (dy and x, two runs
    per ``o``) is about the size of a core's L2, so walking it first to last
    again met the lines the sums pass read first, evicted by then, and each
    miss evicted the next run it needed (LRU); backwards, the most recent
    runs come first.  (32, 64, 56, 56): 0.90-0.93x the time of the forward
    walk; the forward's single-array slab gained nothing (0.99-1.06x).
    """
    O, C, I = x3.shape
    group, width, nsub, lanes = geom[0], geom[1], geom[2], geom[3]
    prefetch_next = geom[4] != 0
    nch = num_chunks(O, group, nsub)
    count = float(O * I)
    for c in prange(C):
        affine = output_affine(mean[c], invstd[c] * weight[c], bias[c], x3)
        sg = 0.0
        sgx = 0.0
        for j in range(nch):
            o0, o1, i0, i1 = chunk_bounds(j, O, I, group, width, nsub)
            a_g, a_gx = chunk_grad_sums(dy3, x3, y3, c, o0, o1, i0, i1, mean[c], affine, mask_mode,
                                        lanes, prefetch_next)
            sg += a_g
            sgx += a_gx
        coefficients = input_grad_affine(sg, sgx, mean[c], invstd[c], weight[c], count,
                                         batch_stats, x3)
        for o in range(O - 1, -1, -1):
            input_grad_run(dy3, x3, y3, o, c, affine, mask_mode, coefficients, batch_stats,
                           nontemporal, dx3, dres3)
        if nontemporal:
            store_fence()
        sum_g_out[c] = sg
        sum_gx_out[c] = sgx
