"""Layer, RMS, group and instance norm under Numba's CUDA simulator, against the CPU backend.

Run by ``test_cuda_sim.py`` with ``cuda_sim_cases.py`` (whose autouse fixture
makes simulated device arrays as strict as real ones and patches the tunables
small: 4 threads per block, 8-element chunks, rows of up to 8 elements in one
block).  The shapes cover both row paths -- a row in one block, and a row cut
into pieces merged by a second launch -- and both affine kinds: per element
(columns reduced over rows) and per channel (segments of one or several
pieces, folded over the samples).
"""


import numpy as np
import pytest

# Skips with cuda_sim_cases unless it runs (under the simulator or on a GPU).
from cuda_sim_cases import close, honest_simulator, host  # noqa: F401 (autouse fixture)
from numba import cuda

import fastbn

F32, F64 = np.float32, np.float64

# Each shape runs with both dtypes or both affine settings, and each op with all four pairs.

#: (x shape, normalized_shape, dtype, affine): rows of one block, rows of two chunks, one 1-D row.
LAYER_CASES = [((3, 5), 5, F64, True), ((3, 5), 5, F32, False), ((2, 3, 4), (3, 4), F32, True),
               ((2, 3, 4), (3, 4), F64, False), ((13,), 13, F32, True)]

#: (x shape, num_groups, dtype, affine): whole rows of 2 segments; 2-piece rows of 2 segments;
#: no spatial axes (per-element affine, columns of two groups); one segment of 2 pieces a row.
GROUP_CASES = [((2, 4, 3), 2, F64, True), ((2, 4, 3), 2, F32, False), ((2, 4, 5), 2, F32, True),
               ((3, 4), 2, F64, False), ((3, 4), 2, F32, True), ((2, 2, 11), 1, F64, True)]

#: (x shape, dtype, affine): whole rows; rows of 2 pieces; rank 4 with 2 pieces.
INSTANCE_CASES = [((2, 3, 4), F32, True), ((2, 3, 11), F64, True), ((2, 3, 11), F32, False),
                  ((1, 2, 3, 3), F64, False)]

def device(*arrays):
    return [None if a is None else cuda.to_device(a) for a in arrays]


def data(rng, shape, dtype):
    return ((rng.normal(size=shape) * 2.0 + 3.0).astype(dtype),
            rng.normal(size=shape).astype(dtype))


def params(rng, shape, dtype, affine, n=2):
    return [rng.normal(size=shape).astype(dtype) if affine else None for _ in range(n)]


def normalized(ns):
    return (ns,) if isinstance(ns, int) else ns


def all_close(got, want, dtype):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if w is None:
            assert g is None
        else:
            close(g, w, dtype)


@pytest.mark.parametrize("shape, ns, dtype, affine", LAYER_CASES)
def test_layer_norm(rng, shape, ns, dtype, affine):
    x, dy = data(rng, shape, dtype)
    w, b = params(rng, normalized(ns), dtype, affine)
    got = fastbn.layer_norm_train(*device(x), ns, *device(w, b))
    want = fastbn.layer_norm_train(x, ns, w, b)
    all_close(got, want, dtype)
    assert host(got[0]).dtype == dtype and host(got[1]).dtype == np.float64
    close(fastbn.layer_norm(*device(x), ns, *device(w, b)), want[0], dtype)
    grads = fastbn.layer_norm_backward(*device(dy, x), got[1], got[2], ns, *device(w))
    all_close(grads, fastbn.layer_norm_backward(dy, x, want[1], want[2], ns, w), dtype)


@pytest.mark.parametrize("shape, ns, dtype, affine", LAYER_CASES[:4])
def test_rms_norm(rng, shape, ns, dtype, affine):
    x, dy = data(rng, shape, dtype)
    (w,) = params(rng, normalized(ns), dtype, affine, 1)
    got = fastbn.rms_norm_train(*device(x), ns, *device(w))
    want = fastbn.rms_norm_train(x, ns, w)
    all_close(got, want, dtype)
    close(fastbn.rms_norm(*device(x), ns, *device(w)), want[0], dtype)
    grads = fastbn.rms_norm_backward(*device(dy, x), got[1], ns, *device(w))
    all_close(grads, fastbn.rms_norm_backward(dy, x, want[1], ns, w), dtype)


@pytest.mark.parametrize("shape, groups, dtype, affine", GROUP_CASES)
def test_group_norm(rng, shape, groups, dtype, affine):
    x, dy = data(rng, shape, dtype)
    w, b = params(rng, shape[1], dtype, affine)
    got = fastbn.group_norm_train(*device(x), groups, *device(w), b)   # host bias is copied up
    want = fastbn.group_norm_train(x, groups, w, b)
    all_close(got, want, dtype)
    close(fastbn.group_norm(*device(x), groups, *device(w, b)), want[0], dtype)
    grads = fastbn.group_norm_backward(*device(dy, x), got[1], got[2], groups, *device(w))
    all_close(grads, fastbn.group_norm_backward(dy, x, want[1], want[2], groups, w), dtype)


@pytest.mark.parametrize("shape, dtype, affine", INSTANCE_CASES)
def test_instance_norm(rng, shape, dtype, affine):
    x, dy = data(rng, shape, dtype)
    w, b = params(rng, shape[1], dtype, affine)
    got = fastbn.instance_norm_train(*device(x, w, b))
    want = fastbn.instance_norm_train(x, w, b)
    all_close(got, want, dtype)
    close(fastbn.instance_norm(*device(x), weight=w, bias=b), want[0], dtype)
    grads = fastbn.instance_norm_backward(*device(dy, x), got[1], got[2], *device(w))
    all_close(grads, fastbn.instance_norm_backward(dy, x, want[1], want[2], w), dtype)


@pytest.mark.parametrize("shape, dtype, affine", INSTANCE_CASES[1:3])
def test_instance_norm_frozen_backward(rng, shape, dtype, affine):
    """``batch_stats=False``: the running statistics, one per channel, broadcast over samples."""
    x, dy = data(rng, shape, dtype)
    (w,) = params(rng, shape[1], dtype, affine, 1)
    rm, invstd = rng.normal(size=shape[1]), rng.uniform(0.5, 2.0, shape[1])
    got = fastbn.instance_norm_backward(*device(dy, x, rm, invstd, w), batch_stats=False)
    all_close(got, fastbn.instance_norm_backward(dy, x, rm, invstd, w, batch_stats=False), dtype)


@pytest.mark.parametrize("on_device", [True, False])
def test_instance_norm_running_stats(rng, on_device):
    x = rng.normal(size=(3, 2, 5)) * 2.0 + 1.0
    rm, rv = np.full(2, 0.5), np.full(2, 2.0)
    want_rm, want_rv = rm.copy(), rv.copy()
    fastbn.instance_norm(x, want_rm, want_rv, momentum=0.25)
    bufs = device(rm, rv) if on_device else (rm, rv)
    fastbn.instance_norm(*device(x), *bufs, momentum=0.25)
    got = [host(a) for a in bufs] if on_device else bufs
    np.testing.assert_allclose(got[0], want_rm, rtol=1e-12)
    np.testing.assert_allclose(got[1], want_rv, rtol=1e-12)


def test_instance_norm_with_running_stats(rng):
    x = rng.normal(size=(2, 3, 4))
    rm, rv, w, b = rng.normal(size=3), rng.uniform(0.5, 2.0, 3), rng.normal(size=3), None
    got = fastbn.instance_norm(*device(x, rm, rv, w), b, use_input_stats=False)
    close(got, fastbn.instance_norm(x, rm, rv, w, b, use_input_stats=False), np.float64)


def test_reproducible_bitwise(rng):
    x, dy = device(*data(rng, (2, 4, 5), np.float32))
    w = cuda.to_device(rng.normal(size=4))
    runs = []
    for _ in range(2):
        y, mean, invstd = fastbn.group_norm_train(x, 2, w)
        runs.append([host(a) for a in (y, mean, invstd)
                     + fastbn.group_norm_backward(dy, x, mean, invstd, 2, w)[:2]])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_strided_input_and_empty_batch(rng):
    x = rng.normal(size=(4, 4, 6))
    got = fastbn.group_norm(cuda.to_device(x)[:, ::2, 1::2], 2)
    close(got, fastbn.group_norm(x[:, ::2, 1::2], 2), np.float64)
    y, mean, invstd = fastbn.layer_norm_train(cuda.to_device(np.zeros((0, 5), np.float32)), 5)
    assert host(y).shape == (0, 5) and host(mean).shape == (0,)
    dx, dw, db = fastbn.layer_norm_backward(y, y, mean, invstd, 5, np.ones(5, np.float32))
    assert host(dx).shape == (0, 5)
    np.testing.assert_array_equal(host(dw), 0)


def test_float16_computes_in_float32(rng):
    x = rng.normal(size=(3, 8)).astype(np.float16)
    y, invstd = fastbn.rms_norm_train(cuda.to_device(x), 8)
    want_y, want_invstd = fastbn.rms_norm_train(x, 8)
    assert host(y).dtype == np.float16
    np.testing.assert_array_equal(host(y), want_y)
    close(invstd, want_invstd, np.float32)
