"""Host driver of the CUDA backend: allocate, choose the launch shape, launch.

Every function takes canonical C-contiguous device views (``x3`` of shape
``(O, C, I)``) and float64 per-channel device vectors, already validated by the
public layer; ``I == 1`` goes to the channel-contiguous row kernels.  Statistics
take three launches (block partials, the per-channel merge, the elementwise
pass): the merge is a fixed tree, never atomics, so results are reproducible.
"""

import numpy as np

from . import _kernels_common as common
from . import _kernels_rows as rows
from . import _kernels_runs as runs
from . import config, devarray
from .arrays import as_device, is_device
from .launch import launch


def _threads():
    """Threads per block from ``config`` (a power of two)."""
    T = config.THREADS_PER_BLOCK
    if T < 1 or T & (T - 1):
        raise ValueError(f"fastbn._cuda.config.THREADS_PER_BLOCK must be a power of two, got {T}")
    return T


def _launch(kernel, blocks, *args):
    """Launch ``kernel`` on ``blocks`` blocks with shared memory for the block merge."""
    T = _threads()
    launch(kernel, blocks, T, 3 * T * 8, *args)


def _launch_vector(kernel, n, *args):
    """Launch a one-thread-per-channel kernel over ``n`` channels."""
    T = _threads()
    launch(kernel, -(-n // T), T, 0, *args)


def empty(shape, dtype=np.float64):
    return devarray.empty((shape,) if isinstance(shape, int) else shape, dtype)


def device_vector(v):
    """A per-channel float64 vector on the device (host vectors are copied up: they are tiny)."""
    if is_device(v):
        return as_device(v, "vector")
    return devarray.to_device(np.ascontiguousarray(v, np.float64))


def filled(n, value):
    out = empty(n)
    _launch_vector(common.fill, n, out, float(value))
    return out


def converted(v, dtype):
    """A new contiguous copy of vector ``v`` in ``dtype``."""
    out = empty(v.shape[0], dtype)
    _launch_vector(common.copy, out.shape[0], v, out)
    return out


def divide(v, d):
    out = empty(v.shape[0])
    _launch_vector(common.divide, out.shape[0], v, float(d), out)
    return out


def multiply(a, b):
    out = empty(a.shape[0])
    _launch_vector(common.multiply, out.shape[0], a, b, out)
    return out


def all_finite(a, b):
    """Whether vectors ``a`` and ``b`` are finite (one int comes back to the host)."""
    flag = devarray.to_device(np.zeros(1, np.int32))
    _launch_vector(common.flag_nonfinite, a.shape[0], a, b, flag)
    return not devarray.to_host(flag)[0]


def blend_if_finite(running_mean, running_var, batch_mean, batch_var, momentum):
    """Blend the batch statistics into the device running buffers (either may be None) in place.

    Skips both when a statistic is not finite; returns whether it blended.  One
    launch, and one int comes back to the host.
    """
    skipped = empty(1, np.int32)
    launch(common.blend_if_finite, 1, _threads(), 0,
           batch_mean if running_mean is None else running_mean,
           batch_mean if running_var is None else running_var,
           running_mean is not None, running_var is not None, batch_mean, batch_var,
           float(momentum), skipped)
    return not devarray.to_host(skipped)[0]


def _runs_chunks(O, I):
    """``(group, width, nsub, nch)``: the chunk partition of a channel and chunks per channel."""
    chunk = config.CHUNK_ELEMENTS
    if I >= chunk:
        group, width, nsub = 1, chunk, -(-I // chunk)
    else:
        group, width, nsub = max(1, chunk // I), I, 1
    return group, width, nsub, -(-O // group) * nsub


def _rows_tiles(R, C):
    """``(rows_per_block, tile, nrb, blocks)`` of the channel-contiguous family."""
    tile = min(config.MAX_TILE_WIDTH, _threads(), 1 << (C - 1).bit_length())
    rows_per_block = max(1, config.CHUNK_ELEMENTS // tile)
    nrb = -(-R // rows_per_block)
    return rows_per_block, tile, nrb, -(-C // tile) * nrb


def _flat(a):
    """``a`` (C-contiguous) flat: the walk kernels index it by offset, given its dimensions."""
    return a.reshape(a.size)


def _merge(part, moments, eps=None):
    """Per channel ``(count, mean, m2)`` (moments) or ``(sum, sum, 0)``, as rows of a ``(3, C)``.

    With ``eps`` (moments) a fourth row holds ``invstd = 1 / sqrt(m2 / count + eps)``.
    """
    C = part.shape[0]
    out = empty((3 if eps is None else 4, C))
    _launch(common.merge_partials, C, part, moments, 0.0 if eps is None else float(eps), out)
    return out


def _moment_partials(x3):
    """Per channel and chunk ``(count, mean, m2)`` of ``x3`` (reduced over axes 0 and 2)."""
    O, C, I = x3.shape
    if I == 1:
        rows_per_block, tile, nrb, blocks = _rows_tiles(O, C)
        part = empty((C, nrb, 3))
        _launch(rows.moment_partials, blocks, _flat(x3), O, C, rows_per_block, tile, part)
    else:
        group, width, nsub, nch = _runs_chunks(O, I)
        part = empty((C, nch, 3))
        _launch(runs.moment_partials, C * nch, _flat(x3), O, C, I, group, width, nsub, part)
    return part


def moments(x3):
    """Per-channel ``(count, mean, m2)`` over axes 0 and 2 of ``x3``, float64 device vectors."""
    out = _merge(_moment_partials(x3), True)
    return out[0], out[1], out[2]


def inverse_std(m2, divisor, eps):
    """``1 / sqrt(m2 / divisor + eps)`` per channel (``divisor`` 1: ``m2`` is a variance)."""
    out = empty(m2.shape[0])
    _launch_vector(common.inverse_stds, out.shape[0], m2, float(divisor), float(eps), out)
    return out


def normalize(x3, mean, invstd, weight, bias, res3, use_relu, y3):
    """``y3 = act((x3 - mean) * invstd * weight + bias [+ res3])``."""
    O, C, I = x3.shape
    has_res = res3 is not None
    x, res, y = _flat(x3), _flat(res3 if has_res else x3), _flat(y3)
    if I == 1:
        rows_per_block, tile, nrb, blocks = _rows_tiles(O, C)
        _launch(rows.normalize, blocks, x, O, C, rows_per_block, tile, nrb, mean, invstd, weight,
                bias, res, has_res, use_relu, y)
    else:
        group, width, nsub, nch = _runs_chunks(O, I)
        _launch(runs.normalize, C * nch, x, O, C, I, group, width, nsub, nch, mean, invstd, weight,
                bias, res, has_res, use_relu, y)


def train_forward(x3, weight, bias, eps, res3, use_relu, y3):
    """Batch statistics and the normalised output; returns ``(mean, invstd, m2)``."""
    out = _merge(_moment_partials(x3), True, eps)
    mean, m2, invstd = out[1], out[2], out[3]
    normalize(x3, mean, invstd, weight, bias, res3, use_relu, y3)
    return mean, invstd, m2


def grad_sums(dy3, x3, y3, mean, invstd, weight, bias, mask_mode):
    """Per-channel ``(sum g, sum g * (x - mean))``, g = dy through the activation.

    ``y3`` (the forward output) is read only for the mask from the output; any
    array of the shape stands in otherwise.
    """
    O, C, I = x3.shape
    dy, x, y = _flat(dy3), _flat(x3), _flat(x3 if y3 is None else y3)
    if I == 1:
        rows_per_block, tile, nrb, blocks = _rows_tiles(O, C)
        part = empty((C, nrb, 3))
        _launch(rows.grad_partials, blocks, dy, x, y, O, C, rows_per_block, tile, mean, invstd,
                weight, bias, mask_mode, part)
    else:
        group, width, nsub, nch = _runs_chunks(O, I)
        part = empty((C, nch, 3))
        _launch(runs.grad_partials, C * nch, dy, x, y, O, C, I, group, width, nsub, mean, invstd,
                weight, bias, mask_mode, part)
    out = _merge(part, False)
    return out[0], out[1]


def input_grad(dy3, x3, y3, mean, invstd, weight, bias, mask_mode, sum_g, sum_gx, count,
               batch_stats, dx3, dres3):
    """dx from gradient sums over ``count`` elements per channel (all ranks' for sync BN)."""
    O, C, I = x3.shape
    dy, x, y, dx = _flat(dy3), _flat(x3), _flat(x3 if y3 is None else y3), _flat(dx3)
    has_dres = dres3 is not None
    dres = _flat(dres3) if has_dres else dx
    sum_g, sum_gx = device_vector(sum_g), device_vector(sum_gx)
    if I == 1:
        rows_per_block, tile, nrb, blocks = _rows_tiles(O, C)
        _launch(rows.input_grad, blocks, dy, x, y, O, C, rows_per_block, tile, nrb, mean, invstd,
                weight, bias, mask_mode, sum_g, sum_gx, float(count), bool(batch_stats), dx, dres,
                has_dres)
    else:
        group, width, nsub, nch = _runs_chunks(O, I)
        _launch(runs.input_grad, C * nch, dy, x, y, O, C, I, group, width, nsub, nch, mean,
                invstd, weight, bias, mask_mode, sum_g, sum_gx, float(count), bool(batch_stats),
                dx, dres, has_dres)


def backward(dy3, x3, y3, mean, invstd, weight, bias, mask_mode, batch_stats, dx3, dres3):
    """dx (and the activation-masked dy into ``dres3`` if given); returns ``(sum_g, sum_g_xc)``."""
    O, _, I = x3.shape
    sum_g, sum_gx = grad_sums(dy3, x3, y3, mean, invstd, weight, bias, mask_mode)
    input_grad(dy3, x3, y3, mean, invstd, weight, bias, mask_mode, sum_g, sum_gx, O * I,
               batch_stats, dx3, dres3)
    return sum_g, sum_gx
