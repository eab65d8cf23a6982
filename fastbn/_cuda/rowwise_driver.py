"""Host driver of the row-statistics CUDA kernels (layer, group, instance and RMS norm).

Mirrors ``fastbn._cpu.rowwise_driver``: every function takes C-contiguous
``(1, R, K)`` device views and float64 device vectors, already validated:
per-row ``mean``/``invstd`` of length ``R`` and affine ``weight``/``bias`` of
length ``G * K // inner`` (see ``_kernels_rowwise`` for ``G`` and ``inner``).
A row of at most ``config.ROW_BLOCK_ELEMENTS`` is one block's (read once, the
second pass from cache); longer rows take a partials launch, a fixed-order
merge per row and an elementwise launch.  Launches, allocation and the merge
are the batch-norm driver's (``driver``).
"""

from . import _kernels_rowwise as rw
from . import config
from . import driver as base


def _chunks(K):
    """``(width, nch)``: the chunk width of a long row and the chunks per row."""
    width = min(K, config.CHUNK_ELEMENTS)
    return width, -(-K // width)


def _whole_rows(K):
    return K <= config.ROW_BLOCK_ELEMENTS


def repeated(v, n):
    """A new float64 device vector of length ``n`` repeating device vector ``v``."""
    out = base.empty(n)
    if n:
        base._launch_vector(rw.repeat, n, v, out)
    return out


def forward(x3, G, inner, weight, bias, eps, centered, y3):
    """Per-row statistics and ``y3``; returns float64 ``(mean, invstd, biased_var)`` of length R.

    ``centered`` False is RMSNorm: ``mean`` is 0 and ``var`` is ``mean(x**2)``.
    """
    R, K = x3.shape[1], x3.shape[2]
    if R == 0 or _whole_rows(K):
        mean, invstd, var = base.empty(R), base.empty(R), base.empty(R)
        if R:
            base._launch(rw.train_rows, R, x3, G, inner, weight, bias, float(eps), bool(centered),
                         y3, mean, invstd, var)
        return mean, invstd, var
    width, nch = _chunks(K)
    part = base.empty((R, nch, 3))
    base._launch(rw.moment_partials, R * nch, x3, width, bool(centered), part)
    merged = base._merge(part, True, eps)
    invstd = merged[3]
    normalize(x3, G, inner, merged[1], invstd, weight, bias, y3)
    return merged[1], invstd, base.divide(merged[2], K)


def normalize(x3, G, inner, mean, invstd, weight, bias, y3):
    """``y3 = (x3 - mean) * invstd * weight + bias`` with given per-row statistics."""
    R, K = x3.shape[1], x3.shape[2]
    width, nch = _chunks(K)
    if R:
        base._launch(rw.normalize, R * nch, x3, G, inner, width, mean, invstd, weight, bias, y3)


def _row_sums(dy3, x3, G, inner, mean, weight):
    """``(part, nsub, sums)``: piece partials (pieces of a segment: ``nsub``) and the row sums.

    ``sums[0]`` and ``sums[1]`` are each row's ``sum w dy`` and ``sum w dy (x - mean)``.
    """
    R, K = x3.shape[1], x3.shape[2]
    seg_len = K if inner == 1 else inner
    width = min(seg_len, config.CHUNK_ELEMENTS)
    nsub = -(-seg_len // width)
    part = base.empty((R, K // seg_len * nsub, 4))
    base._launch(rw.grad_partials, R * part.shape[1], dy3, x3, G, inner, seg_len, nsub, width,
                 mean, weight, part)
    return part, nsub, base._merge(part, False)


def _affine_grads(dy3, x3, G, inner, mean, invstd, channels, part, nsub):
    """Float64 ``(dweight, dbias)``: per channel from the piece partials, per element by columns."""
    R, K = x3.shape[1], x3.shape[2]
    if inner > 1:
        out = base.empty((2, channels))
        base._launch(rw.channel_grads, channels, part, G, nsub, invstd, out)
        return out[1], out[0]
    N = R // G
    rows_per_block, tile, nrb, blocks = base._rows_tiles(N, channels)
    cols = base.empty((channels, nrb, 3))
    base._launch(rw.column_grad_partials, blocks, dy3.reshape(N, channels),
                 x3.reshape(N, channels), rows_per_block, tile, G, K, mean, invstd, cols)
    out = base.empty((2, channels))
    base._launch_vector(rw.fold_columns, channels, cols, out)
    return out[1], out[0]


def backward(dy3, x3, G, inner, mean, invstd, weight, centered, batch_stats, want_affine, dx3):
    """dx into ``dx3``; returns float64 ``(dweight, dbias)``, or ``(None, None)`` unless wanted.

    ``batch_stats`` False: frozen statistics (``dx = invstd * w * dy``).
    """
    R, K = x3.shape[1], x3.shape[2]
    channels = weight.shape[0]
    if R == 0:
        return (base.filled(channels, 0.0), base.filled(channels, 0.0)) if want_affine \
            else (None, None)
    count = float(K)
    if _whole_rows(K):
        nsub = 1
        part = base.empty((R, K // inner if inner > 1 else 1, 4))
        base._launch(rw.backward_rows, R, dy3, x3, G, inner, mean, invstd, weight, count,
                     bool(centered), bool(batch_stats), dx3, part)
    else:
        part, nsub, sums = _row_sums(dy3, x3, G, inner, mean, weight)
        width, nch = _chunks(K)
        base._launch(rw.input_grad, R * nch, dy3, x3, G, inner, width, mean, invstd, weight,
                     sums[0], sums[1], count, bool(centered), bool(batch_stats), dx3)
    if not want_affine:
        return None, None
    return _affine_grads(dy3, x3, G, inner, mean, invstd, channels, part, nsub)
