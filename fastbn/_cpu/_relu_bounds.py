"""The fused backward's ReLU mask as an interval of the input, so it costs two compares.

With the mask recomputed, each element of the backward evaluates the
forward's pre-activation ``v(x) = (x - mean) * k + shift`` (float64, x widened
exactly) and tests ``v(x) > 0``: a subtract, a multiply, an add and a compare
in the backward's compute-bound loops.  Every rounding step of ``v`` is
monotone in ``x``, so the ``x`` with ``v(x) > 0`` are all values from a
threshold up when ``k > 0``, all values up to one when ``k < 0``, and, when
``k == 0``, all values whose ``x - mean`` is finite or none.  This
module finds, per channel, ``lo`` and ``hi`` such that ``lo <= x <= hi``
holds exactly when ``v(x) > 0``, for every value ``x`` of the input's dtype
(a NaN fails both, as it fails ``v(x) > 0``).

The thresholds are searched over the dtype's values in order (their bit
patterns mapped to ordered integers): from the rounded algebraic threshold
``mean - shift / k`` a few steps either way, by bisection over the whole
range where that guess is not finite or too far off.
"""

import numpy as np
from numba import types

from ._jit import F64, VEC, VEC_IN, compiled, device

#: Steps tried from the algebraic threshold before bisecting the whole range.
NEAR_STEPS = 64

_MAGNITUDE = {np.dtype(np.float32): np.int64(0x7FFF_FFFF), np.dtype(np.float64):
              np.int64(0x7FFF_FFFF_FFFF_FFFF)}


@device
def _key(value, scratch, bits, magnitude):
    """The ordered-integer key of ``value`` rounded to the scratch's dtype."""
    scratch[0] = value
    b = np.int64(bits[0])
    return b if b >= 0 else b ^ magnitude


@device
def _value(key, scratch, bits, magnitude):
    """The dtype's value with ordered key ``key``, as float64."""
    bits[0] = key if key >= 0 else key ^ magnitude
    return np.float64(scratch[0])


@device
def _positive(key, mean, k, shift, scratch, bits, magnitude):
    """Whether the pre-activation of the value with key ``key`` is above zero (the forward's formula)."""
    return (_value(key, scratch, bits, magnitude) - mean) * k + shift > 0.0


@device
def _first_positive(first, last, guess, mean, k, shift, scratch, bits, magnitude):
    """Smallest key in ``[first, last]`` whose value is positive, for an increasing mask.

    ``last`` itself must be positive.  Walks from the key ``guess`` first.
    """
    if first <= guess <= last:
        for _ in range(NEAR_STEPS):
            if guess < last and not _positive(guess, mean, k, shift, scratch, bits, magnitude):
                guess += 1
            elif guess > first and _positive(guess - 1, mean, k, shift, scratch, bits, magnitude):
                guess -= 1
            else:
                return guess
    below, above = first - 1, last
    while below + 1 < above:
        middle = (below >> 1) + (above >> 1) + (below & above & 1)
        if _positive(middle, mean, k, shift, scratch, bits, magnitude):
            above = middle
        else:
            below = middle
    return above


@device
def _last_positive(first, last, guess, mean, k, shift, scratch, bits, magnitude):
    """Largest key in ``[first, last]`` whose value is positive, for a decreasing mask.

    ``first`` itself must be positive.  Walks from the key ``guess`` first.
    """
    if first <= guess <= last:
        for _ in range(NEAR_STEPS):
            if guess > first and not _positive(guess, mean, k, shift, scratch, bits, magnitude):
                guess -= 1
            elif guess < last and _positive(guess + 1, mean, k, shift, scratch, bits, magnitude):
                guess += 1
            else:
                return guess
    below, above = first, last + 1
    while below + 1 < above:
        middle = (below >> 1) + (above >> 1) + (below & above & 1)
        if _positive(middle, mean, k, shift, scratch, bits, magnitude):
            below = middle
        else:
            above = middle
    return below


def _signatures():
    pairs = ((types.float32, types.int32), (types.float64, types.int64))
    return [(VEC_IN, VEC_IN, VEC_IN, types.Array(f, 1, "C"), types.Array(i, 1, "C"), types.int64,
             VEC, VEC) for f, i in pairs]


@compiled(_signatures())
def _mask_bounds(mean, k, shift, scratch, bits, magnitude, lo, hi):
    """``lo[c] <= x <= hi[c]`` exactly when ``(x - mean[c]) * k[c] + shift[c] > 0``."""
    first = _key(-np.inf, scratch, bits, magnitude)
    last = _key(np.inf, scratch, bits, magnitude)
    for c in range(mean.shape[0]):
        m, s, ks = mean[c], shift[c], k[c]
        lo[c], hi[c] = np.inf, -np.inf  # empty
        if ks > 0.0:
            if _positive(last, m, ks, s, scratch, bits, magnitude):
                guess = _key(m - s / ks, scratch, bits, magnitude)
                lo[c] = _value(_first_positive(first, last, guess, m, ks, s, scratch, bits,
                                               magnitude), scratch, bits, magnitude)
                hi[c] = np.inf
        elif ks < 0.0:
            if _positive(first, m, ks, s, scratch, bits, magnitude):
                guess = _key(m - s / ks, scratch, bits, magnitude)
                lo[c] = -np.inf
                hi[c] = _value(_last_positive(first, last, guess, m, ks, s, scratch, bits,
                                              magnitude), scratch, bits, magnitude)
        elif ks == 0.0:
            # Positive where x - mean is finite (NaN where it overflows): around the mean.
            middle = min(max(_key(m, scratch, bits, magnitude), first), last)
            if _positive(middle, m, ks, s, scratch, bits, magnitude):
                lo[c] = _value(_first_positive(first, middle, middle, m, ks, s, scratch, bits,
                                               magnitude), scratch, bits, magnitude)
                hi[c] = _value(_last_positive(middle, last, middle, m, ks, s, scratch, bits,
                                              magnitude), scratch, bits, magnitude)


def relu_mask_bounds(mean, k, shift, dtype):
    """``(lo, hi)``, float64 per channel: the recomputed ReLU mask as ``lo <= x <= hi``.

    ``mean``, ``k`` and ``shift`` are the float64 vectors the kernels evaluate
    ``(x - mean) * k + shift`` with; ``dtype`` is the input's.
    """
    dtype = np.dtype(dtype)
    scratch = np.empty(1, dtype)
    bits = scratch.view(np.int32 if dtype == np.float32 else np.int64)
    lo, hi = np.empty(mean.shape[0]), np.empty(mean.shape[0])
    _mask_bounds(mean, k, shift, scratch, bits, _MAGNITUDE[dtype], lo, hi)
    return lo, hi
