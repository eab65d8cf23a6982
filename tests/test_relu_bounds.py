"""The recomputed ReLU mask as an input interval equals ``(x - mean) * k + shift > 0`` exactly."""

import numpy as np
import pytest

import fastbn
from fastbn._cpu._relu_bounds import relu_mask_bounds


def _neighbours(values, dtype, steps=3):
    """``values`` rounded to ``dtype`` and their ``steps`` neighbours either way (finite ones)."""
    base = np.asarray(values)[np.isfinite(values)].astype(dtype)
    out = [base]
    up, down = base, base
    for _ in range(steps):
        with np.errstate(over="ignore"):
            up, down = np.nextafter(up, dtype(np.inf)), np.nextafter(down, dtype(-np.inf))
        out += [up, down]
    return np.concatenate(out)


def _channel_parameters(rng, C):
    """Means, scales and shifts over many magnitudes, with zeros, infinities and NaNs."""
    mean = rng.standard_normal(C) * 10.0 ** rng.integers(-3, 7, C)
    k = rng.standard_normal(C) * 10.0 ** rng.integers(-3, 3, C)
    shift = rng.standard_normal(C) * 10.0 ** rng.integers(-3, 3, C)
    k[:10], k[10:15], k[15:20], k[20:25], k[25:30] = 0.0, -0.0, np.inf, -np.inf, np.nan
    mean[30:35], mean[35:40], mean[40:45] = np.inf, -np.inf, np.nan
    shift[45:50], shift[50:55], shift[55:60], shift[60:65] = np.inf, -np.inf, 0.0, np.nan
    return mean, k, shift


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bounds_equal_the_recomputed_mask(rng, dtype):
    C = 400
    mean, k, shift = _channel_parameters(rng, C)
    mean[65:70] = np.finfo(dtype).max / 2  # k == 0 with x - mean overflowing (float64)
    k[65:70] = 0.0
    lo, hi = relu_mask_bounds(mean, k, shift, dtype)
    with np.errstate(all="ignore"):
        algebraic = mean - shift / k
    info = np.finfo(dtype)
    specials = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, info.max, -info.max, info.tiny,
                         -info.tiny], dtype)
    spread = rng.standard_normal(500) * 10.0 ** rng.integers(-5, 8, 500)
    x = np.concatenate([_neighbours(v, dtype) for v in (lo, hi, algebraic, mean, spread)]
                       + [specials]).astype(np.float64)
    with np.errstate(all="ignore"):
        want = (x[:, None] - mean) * k + shift > 0
    got = (x[:, None] >= lo) & (x[:, None] <= hi)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((3, 4, 2, 5), 1), ((30, 4), 1)])
def test_backward_mask_at_the_threshold(rng, dtype, shape, axis):
    """x at and next to each channel's threshold: the fused backward masks as the forward would.

    Frozen statistics and dy = 1 make dx = weight * invstd where the mask is on and 0 elsewhere.
    """
    C = shape[axis]
    mean, var = rng.standard_normal(C), rng.uniform(0.5, 2, C)
    w, b = rng.standard_normal(C), rng.standard_normal(C)
    invstd = 1 / np.sqrt(var + 1e-5)
    k = invstd * w
    lo, hi = relu_mask_bounds(mean, k, b, dtype)
    edge = np.where(np.isfinite(lo), lo, hi)
    n = int(np.prod(shape)) // C
    steps = (np.arange(n) % 7) - 3
    cols = np.empty((n, C), dtype)
    for c in range(C):
        cols[:, c] = edge[c]
        for i, s in enumerate(steps):
            for _ in range(abs(s)):
                cols[i, c] = np.nextafter(cols[i, c], dtype(np.inf) if s > 0 else dtype(-np.inf))
    x = np.moveaxis(cols.reshape(np.moveaxis(np.empty(shape), axis, -1).shape), -1, axis)
    x = np.ascontiguousarray(x)
    dx, *_ = fastbn.batch_norm_backward(np.ones_like(x), x, mean, invstd, w, axis=axis, bias=b,
                                        activation="relu", batch_stats=False)
    view = [1] * x.ndim
    view[axis] = C
    mask = (x.astype(np.float64) - mean.reshape(view)) * k.reshape(view) + b.reshape(view) > 0
    assert 0 < mask.sum() < mask.size
    np.testing.assert_array_equal(dx != 0, mask)
