"""The kernels' in-place building blocks: borrowed reshapes and stack accumulators.

``contiguous_view`` and ``stack_buffer`` build arrays without NumPy's run-time
calls, so a wrong stride or a missing zero would corrupt every sum silently;
these pin them against NumPy, jitted and in plain Python.
"""

import numpy as np
import pytest
from numba import njit

from fastbn._cpu import _jit, _primitives


@njit
def _blocks_and_rows(seg, lanes):
    blocks, start = _primitives.lane_blocks(seg, lanes)
    rows, rest = _primitives.lane_rows(seg, start, lanes)
    return blocks.copy(), rows.copy(), start, rest


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, lanes", [(200, 16), (64, 16), (15, 16), (1000, 32)])
def test_lane_views_match_numpy_reshapes(dtype, n, lanes):
    seg = np.arange(n, dtype=dtype)
    blocks, rows, start, rest = _blocks_and_rows(seg, lanes)
    step = _primitives.BLOCK_ROWS * lanes
    assert start == n // step * step and rest == start + (n - start) // lanes * lanes
    np.testing.assert_array_equal(blocks, seg[:start].reshape(-1, _primitives.BLOCK_ROWS, lanes))
    np.testing.assert_array_equal(rows, seg[start:rest].reshape(-1, lanes))
    py_blocks, py_start = _primitives.lane_blocks.py_func(seg, lanes)
    np.testing.assert_array_equal(py_blocks, blocks)
    assert py_start == start


@njit
def _tile_view(a2, r0, r1):
    return _jit.contiguous_view(a2[r0:r1], (2, (r1 - r0) // 2 * a2.shape[1])).copy()


def test_contiguous_view_of_rows_keeps_the_readonly_flag_and_the_order():
    a2 = np.arange(60.0).reshape(10, 6)
    a2.flags.writeable = False
    np.testing.assert_array_equal(_tile_view(a2, 2, 6), a2[2:6].reshape(2, 12))
    np.testing.assert_array_equal(_jit.contiguous_view(a2[2:6], (2, 12)), a2[2:6].reshape(2, 12))


@njit
def _accumulators_after_use(lanes):
    first = _primitives.lane_accumulators(lanes)
    first[:] = 7.0
    second = _primitives.lane_accumulators(lanes)
    return first.sum(), second.sum(), second.shape[0]


def test_lane_accumulators_start_at_zero_and_are_separate():
    assert _accumulators_after_use(16) == (7.0 * 16, 0.0, 16)
    assert _primitives.lane_accumulators.py_func(8).tolist() == [0.0] * 8


@pytest.mark.parametrize("lanes", [0, 3, 24, 2 * _primitives.MAX_LANES])
def test_lane_counts_the_stack_buffers_cannot_hold_are_refused(lanes):
    with pytest.raises(ValueError, match="power of two"):
        _primitives.checked_lanes(lanes)
    assert _primitives.checked_lanes(16) == 16
