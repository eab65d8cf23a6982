"""Host driver of the row-statistics kernels (layer, group, instance and RMS norm).

Every function takes C-contiguous ``(1, R, K)`` views and float64 vectors,
already validated: per-row ``mean``/``invstd`` of length ``R`` and affine
``weight``/``bias`` of length ``G * K // inner`` (see ``_kernels_rowwise`` for
``G`` and ``inner``).  With enough rows a task takes whole rows (read once,
second pass from cache); with few long rows the work is cut into pieces.
Both fold the same partials in the same order, so the thread count never
changes a bit of the result.
"""

import numpy as np

from .. import _config
from . import _kernels_common as common
from . import _kernels_rowwise as rw
from ._jit import launch_threads
from ._nontemporal import wanted_for as nontemporal_for
from ._primitives import checked_lanes


def _geometry(K, G, inner):
    """``geom = (G, inner, width, lanes)`` for rows of ``K`` (see ``_kernels_rowwise``)."""
    width = min(K, _config.CHUNK_ELEMENTS)
    return np.array([G, inner, width, checked_lanes(_config.SUM_LANES)], dtype=np.int64)


def _whole_rows(R, nthreads):
    """Whether one-row-per-task keeps every thread busy.

    The pieces path is taken only when ``R <= _config.ROW_BLOCKS``, where every row is its
    own block of affine partials, which is what keeps both paths bitwise equal.
    """
    return R > _config.ROW_BLOCKS or R >= _config.ROWS_PER_THREAD * nthreads or (R >= nthreads
                                                                and R % nthreads == 0)


def forward(x3, G, inner, weight, bias, eps, centered, y3):
    """Per-row statistics and ``y3``; returns float64 ``(mean, invstd, biased_var)`` of length R.

    ``centered`` False is RMSNorm: ``mean`` is 0 and ``var`` is ``mean(x**2)``.
    """
    nthreads = launch_threads(x3.size)
    R, K = x3.shape[1], x3.shape[2]
    geom = _geometry(K, G, inner)
    mean, var = np.empty(R), np.empty(R)
    if _whole_rows(R, nthreads):
        rw.train_fused(x3, geom, weight, bias, float(eps), centered, nontemporal_for(y3), y3, mean,
                       var)
        return mean, 1.0 / np.sqrt(var + eps), var
    part = np.empty((R, -(-K // int(geom[2])), 3))
    rw.row_partials(x3, geom, centered, part)
    count, m2 = np.empty(R), np.empty(R)
    common.merge_moments(part, count, mean, m2)
    np.divide(m2, count, out=var)
    invstd = 1.0 / np.sqrt(var + eps)
    rw.pieces_normalize(x3, geom, mean, invstd, weight, bias, nontemporal_for(y3), y3)
    return mean, invstd, var


def normalize(x3, G, inner, mean, invstd, weight, bias, y3):
    """``y3 = (x3 - mean) * invstd * weight + bias`` with given per-row statistics."""
    launch_threads(x3.size)
    rw.pieces_normalize(x3, _geometry(x3.shape[2], G, inner), mean, invstd, weight, bias,
                        nontemporal_for(y3), y3)


def backward(dy3, x3, G, inner, mean, invstd, weight, centered, batch_stats, want_affine, dx3):
    """dx into ``dx3``; returns float64 ``(dweight, dbias)``, or ``(None, None)`` unless wanted.

    ``batch_stats`` False: frozen statistics (``dx = invstd * w * dy``).
    """
    nthreads = launch_threads(x3.size)
    R, K = x3.shape[1], x3.shape[2]
    geom = _geometry(K, G, inner)
    channels = weight.shape[0]
    dw, db = np.zeros(channels), np.zeros(channels)
    if _whole_rows(R, nthreads):
        shape = (min(R, _config.ROW_BLOCKS), channels if want_affine else 0)
        pdw, pdb = np.zeros(shape), np.zeros(shape)
        rw.backward_fused(dy3, x3, geom, mean, invstd, weight, centered, batch_stats,
                          want_affine, nontemporal_for(dx3), dx3, pdw, pdb)
        if not want_affine:
            return None, None
        rw.fold_blocks(pdw, pdb, dw, db)
        return dw, db
    npieces = K // inner if inner > 1 else -(-K // int(geom[2]))
    part = np.empty((R, npieces, 4))
    rw.piece_grad_partials(dy3, x3, geom, mean, weight, part)
    sum_wg, sum_wgx = np.empty(R), np.empty(R)
    rw.fold_piece_partials(part, geom, invstd, inner > 1, sum_wg, sum_wgx, dw, db)
    rw.pieces_input_grad(dy3, x3, geom, mean, invstd, weight, sum_wg, sum_wgx, centered,
                         batch_stats, nontemporal_for(dx3), dx3)
    if not want_affine:
        return None, None
    if inner == 1:
        rw.column_grads(dy3, x3, geom, mean, invstd, dw, db)
    return dw, db
