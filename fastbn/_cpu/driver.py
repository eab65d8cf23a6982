"""Host driver of the Numba CPU backend: allocate, pick the decomposition, launch.

Every function takes canonical C-contiguous views (``x3`` of shape
``(O, C, I)``) and float64 per-channel vectors, already validated by the public
layer.  ``I == 1`` (channel-contiguous) and short runs go to the row kernels.  Which
decomposition runs may depend on the thread count; the result never does,
because every path folds the same chunk partials in the same order.  Each
public function sets the thread count once (``launch_threads``) and composes
the underscored ones, which run on it.
"""

import numpy as np

from .. import _config
from . import _kernels_common as common
from ._jit import launch_threads
from ._nontemporal import wanted_for as nontemporal_for
from . import _kernels_rows as rows
from . import _kernels_runs as runs

from ._primitives import MASK_FROM_OUTPUT, MASK_FROM_OUTPUT_STORE, checked_lanes


def _chunking(x3):
    """``(group, width, nsub, lanes, prefetch_next)``: the chunk partition of a channel of ``x3``.

    See ``_primitives``; ``prefetch_next`` is a hint for the per-channel
    kernels and does not change the partition.
    """
    I = x3.shape[2]
    chunk = _config.CHUNK_ELEMENTS
    if I >= chunk:
        group, width, nsub = 1, chunk, -(-I // chunk)
    else:
        group, width, nsub = max(1, chunk // I), I, 1
    prefetch_next = I * x3.itemsize <= _config.PREFETCH_MAX_RUN_BYTES
    return np.array([group, width, nsub, checked_lanes(_config.RUN_SUM_LANES), prefetch_next],
                    dtype=np.int64)


def _num_chunks(O, geom):
    return -(-O // int(geom[0])) * int(geom[2])


def _as_rows(x3):
    """Whether the row kernels take ``x3``: channel-contiguous, or runs too short for run loops."""
    return x3.shape[2] <= _config.ROW_KERNEL_MAX_INNER


def _tile_rows(width, elements):
    """Rows of ``width`` elements per tile of at least ``elements`` (one row if wider)."""
    return max(1, elements // width)


def _row_blocking(x3, tile_elements=None):
    """``(inner, rows_per_block, tile_rows)`` of the row kernels, fixed by the shape.

    Tiles of at least ``tile_elements`` (``ROW_TILE_ELEMENTS`` by default);
    the row blocks are those of the default tiles either way, about
    ``ROW_BLOCK_ELEMENTS`` each, equal in size and balanced by
    ``_balanced_blocks``.
    """
    R, C, inner = x3.shape
    width = C * inner
    output_tile_rows = _tile_rows(width, _config.ROW_TILE_ELEMENTS)
    tiles = max(_config.ROW_BLOCK_MIN_TILES,
                _config.ROW_BLOCK_ELEMENTS // (width * output_tile_rows))
    blocks = _balanced_blocks(-(-R // (tiles * output_tile_rows)),
                              R // (_config.ROW_BLOCK_MIN_TILES * output_tile_rows))
    rows_per_block = output_tile_rows * -(-R // (blocks * output_tile_rows))
    tile_rows = output_tile_rows if tile_elements is None else _tile_rows(width, tile_elements)
    return inner, rows_per_block, tile_rows


def _balanced_blocks(blocks, most):
    """``blocks`` rounded up to a multiple of ``ROW_BLOCKS_MULTIPLE`` if there are that many.

    Blocks of equal size, as many as a multiple of the usual thread counts,
    give every thread the same share (13 blocks on 2 threads: 7 against 6).
    Not past ``most`` blocks (each keeps ``ROW_BLOCK_MIN_TILES`` tiles).
    """
    multiple = _config.ROW_BLOCKS_MULTIPLE
    balanced = -(-blocks // multiple) * multiple
    return balanced if blocks >= multiple and balanced <= most else blocks


def _prefetch_row_tiles(x3, tile_rows):
    """Whether the row statistics hint their next tiles: short tiles read from memory."""
    tile_bytes = tile_rows * x3.shape[1] * x3.shape[2] * x3.itemsize
    return (tile_bytes <= _config.ROW_STATS_PREFETCH_MAX_TILE_BYTES
            and x3.nbytes >= _config.NONTEMPORAL_MIN_BYTES)


def _per_channel(x3, nthreads, streams):
    """Whether to take one channel per thread, reading its slab once from memory.

    Only if the channel's slab (``streams`` full-size inputs) fits in
    ``SLAB_CACHE_BYTES``, so the second pass finds it in cache, and there are
    enough channels to keep every thread busy; otherwise streaming passes.
    """
    O, C, I = x3.shape
    fits = streams * O * I * x3.itemsize <= _config.SLAB_CACHE_BYTES
    busy = C >= nthreads and (C % nthreads == 0 or C >= _config.CHANNELS_PER_THREAD * nthreads)
    return fits and busy


def _rows(a3):
    return a3.reshape(a3.shape[0], a3.shape[1] * a3.shape[2])


def _moment_partials(x3):
    O, C, I = x3.shape
    if _as_rows(x3):
        blocking = _row_blocking(x3, _config.ROW_STATS_TILE_ELEMENTS)
        part = np.empty((-(-O // blocking[1]), C, 3))
        rows.rows_partials(_rows(x3), *blocking, _prefetch_row_tiles(x3, blocking[2]), part)
        part = part.transpose(1, 0, 2)
    else:
        geom = _chunking(x3)
        part = np.empty((C, _num_chunks(O, geom), 3))
        runs.runs_partials(x3, geom, part)
    return part


def moments(x3):
    """Per-channel ``(count, mean, m2)`` over axes 0 and 2 of ``x3``, float64."""
    launch_threads(x3.size)
    return _moments(x3)


def _moments(x3):
    C = x3.shape[1]
    part = _moment_partials(x3)
    count, mean, m2 = np.empty(C), np.empty(C), np.empty(C)
    common.merge_moments(part, count, mean, m2)
    return count, mean, m2


def normalize(x3, mean, invstd, weight, bias, res3, use_relu, y3):
    """``y3 = act((x3 - mean) * invstd * weight + bias [+ res3])``."""
    launch_threads(x3.size)
    _normalize(x3, mean, invstd, weight, bias, res3, use_relu, y3)


def _normalize(x3, mean, invstd, weight, bias, res3, use_relu, y3):
    has_res = res3 is not None
    res3 = res3 if has_res else x3
    if _as_rows(x3):
        rows.rows_normalize(_rows(x3), *_row_blocking(x3), mean, invstd, weight, bias,
                            _rows(res3), has_res, use_relu, nontemporal_for(y3), _rows(y3))
    else:
        runs.runs_normalize(x3, mean, invstd, weight, bias, res3, has_res, use_relu,
                            nontemporal_for(y3), y3)


def train_forward(x3, weight, bias, eps, res3, use_relu, y3):
    """Batch statistics and the normalised output; returns ``(mean, invstd, m2)``."""
    nthreads = launch_threads(x3.size)
    O, C, I = x3.shape
    if not _as_rows(x3) and _per_channel(x3, nthreads, 1):
        mean, invstd, m2 = np.empty(C), np.empty(C), np.empty(C)
        has_res = res3 is not None
        runs.runs_train_fused(x3, _chunking(x3), weight, bias, float(eps),
                              res3 if has_res else x3, has_res, use_relu, nontemporal_for(y3), y3,
                              mean, invstd, m2)
        return mean, invstd, m2
    _, mean, m2 = _moments(x3)
    invstd = 1.0 / np.sqrt(m2 / (O * I) + eps)
    _normalize(x3, mean, invstd, weight, bias, res3, use_relu, y3)
    return mean, invstd, m2


def _grad_setup(x3, y3, mask_mode, dx3, dres3):
    """``(y3, mode, dres3)`` for the kernels, with stand-ins for arrays they will not touch.

    A residual's gradient is stored only with the mask from the saved output
    (``dres3`` is required there and only there).
    """
    if dres3 is not None:
        return y3, MASK_FROM_OUTPUT_STORE, dres3
    return (y3 if mask_mode == MASK_FROM_OUTPUT else x3), mask_mode, dx3


def grad_sums(dy3, x3, y3, mean, invstd, weight, bias, mask_mode):
    """Per-channel ``(sum g, sum g * (x - mean))``, g = dy through the activation."""
    launch_threads(x3.size)
    return _grad_sums(dy3, x3, y3, mean, invstd, weight, bias, mask_mode)


def _grad_sums(dy3, x3, y3, mean, invstd, weight, bias, mask_mode):
    O, C, I = x3.shape
    y3 = y3 if mask_mode == MASK_FROM_OUTPUT else x3
    sum_g, sum_gx = np.empty(C), np.empty(C)
    if _as_rows(x3):
        blocking = _row_blocking(x3)
        part = np.empty((-(-O // blocking[1]), C, 2))
        blocked = blocking[2] * C * I >= _config.ROW_SUMS_BLOCKED_MIN_TILE
        rows.rows_grad_partials(_rows(dy3), _rows(x3), _rows(y3), *blocking, mean, invstd, weight,
                                bias, mask_mode, blocked, part)
        part = part.transpose(1, 0, 2)
    else:
        geom = _chunking(x3)
        part = np.empty((C, _num_chunks(O, geom), 2))
        runs.runs_grad_partials(dy3, x3, y3, geom, mean, invstd, weight, bias, mask_mode, part)
    common.sum_grad_partials(part, sum_g, sum_gx)
    return sum_g, sum_gx


def input_grad(dy3, x3, y3, mean, invstd, weight, bias, mask_mode, sum_g, sum_gx, count,
               batch_stats, dx3, dres3):
    """dx from gradient sums taken over ``count`` elements per channel (all ranks' for sync BN)."""
    launch_threads(x3.size)
    _input_grad(dy3, x3, y3, mean, invstd, weight, bias, mask_mode, sum_g, sum_gx, count,
                batch_stats, dx3, dres3)


def _input_grad(dy3, x3, y3, mean, invstd, weight, bias, mask_mode, sum_g, sum_gx, count,
                batch_stats, dx3, dres3):
    O, C, I = x3.shape
    y3, mask_mode, dres3 = _grad_setup(x3, y3, mask_mode, dx3, dres3)
    if _as_rows(x3):
        rows.rows_input_grad(_rows(dy3), _rows(x3), _rows(y3), *_row_blocking(x3), mean, invstd,
                             weight, bias, mask_mode, sum_g, sum_gx, float(count), batch_stats,
                             _rows(dx3), _rows(dres3))
    else:
        runs.runs_input_grad(dy3, x3, y3, mean, invstd, weight, bias, mask_mode, sum_g, sum_gx,
                             float(count), batch_stats, nontemporal_for(dx3), dx3, dres3)


def backward(dy3, x3, y3, mean, invstd, weight, bias, mask_mode, batch_stats, dx3, dres3):
    """dx (and the activation-masked dy into ``dres3`` if given); returns ``(sum_g, sum_g_xc)``.

    ``y3`` is the saved forward output, read only for ``MASK_FROM_OUTPUT``.
    Many channels: one pass per channel slab with the second pass from cache.
    """
    nthreads = launch_threads(x3.size)
    O, C, I = x3.shape
    if not _as_rows(x3) and _per_channel(x3, nthreads, 2):
        y3, mask_mode, dres3 = _grad_setup(x3, y3, mask_mode, dx3, dres3)
        sum_g, sum_gx = np.empty(C), np.empty(C)
        runs.runs_backward_fused(dy3, x3, y3, _chunking(x3), mean, invstd, weight, bias, mask_mode,
                                 batch_stats, nontemporal_for(dx3), dx3, dres3, sum_g, sum_gx)
        return sum_g, sum_gx
    sum_g, sum_gx = _grad_sums(dy3, x3, y3, mean, invstd, weight, bias, mask_mode)
    _input_grad(dy3, x3, y3, mean, invstd, weight, bias, mask_mode, sum_g, sum_gx, O * I,
                batch_stats, dx3, dres3)
    return sum_g, sum_gx
