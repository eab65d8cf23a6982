"""Functional layer, group, instance and RMS norm against the float64 oracle.

Forward, backward, finite differences, adversarial numerics, both kernel
paths (whole rows / pieces of rows) and the multi-chunk rows.
"""

import numpy as np
import pytest
from conftest import tolerance
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import (batch_norm_backward_ref, batch_norm_ref, group_norm_backward_ref,
                    group_norm_ref, instance_norm_backward_ref, instance_norm_ref,
                    layer_norm_backward_ref, layer_norm_ref, numerical_grad, rms_norm_ref)

import fastbn
from fastbn import _config

DTYPES = [np.float32, np.float64]

#: (x shape, normalized_shape): one to three trailing dims, one row, many rows, long rows.
LAYER_CASES = [((4, 6), 6), ((3, 4, 5), (4, 5)), ((2, 3, 4, 5), (3, 4, 5)), ((1, 7), (7,)),
               ((130, 9), 9), ((2, 2, 33), 33), ((5,), 5)]

#: (x shape, num_groups): groups 1, C and in between; spatial size 1; N = 1.
GROUP_CASES = [((3, 6, 5), 1), ((3, 6, 5), 6), ((2, 6, 4, 3), 3), ((4, 8), 2), ((1, 4, 3, 3), 2),
               ((70, 4, 3), 2), ((2, 2, 2, 3, 2), 1)]

INSTANCE_SHAPES = [(3, 4, 5), (2, 3, 4, 5), (1, 2, 3, 2, 2), (5, 1, 9), (70, 1, 4)]


def _affine(rng, shape, affine, dtype):
    if not affine:
        return None, None
    return (rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype))


def _close(got, want, dtype, scale=1.0):
    atol, rtol = tolerance(dtype)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=atol * scale, rtol=rtol)


@pytest.fixture(params=[False, True], ids=["default-chunks", "tiny-chunks"])
def chunks(request, monkeypatch):
    """Also run with 8-element chunks, so that small rows span many chunks and pieces."""
    if request.param:
        monkeypatch.setattr(_config, "CHUNK_ELEMENTS", 8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape, ns", LAYER_CASES)
def test_layer_norm(rng, chunks, shape, ns, affine, dtype):
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    nshape = (ns,) if isinstance(ns, int) else ns
    w, b = _affine(rng, nshape, affine, dtype)
    y, mean, invstd = fastbn.layer_norm_train(x, ns, w, b, eps=1e-3)
    y_ref, mean_ref, invstd_ref = layer_norm_ref(x, ns, w, b, eps=1e-3)
    assert y.dtype == dtype and y.shape == x.shape and mean.dtype == np.float64
    _close(y, y_ref, dtype)
    _close(mean, mean_ref, np.float64, 1e5)
    _close(invstd, invstd_ref, np.float64, 1e5)
    np.testing.assert_array_equal(fastbn.layer_norm(x, ns, w, b, eps=1e-3), y)
    dx, dw, db = fastbn.layer_norm_backward(dy, x, mean, invstd, ns, w)
    dx_ref, dw_ref, db_ref = layer_norm_backward_ref(dy, x, ns, w, eps=1e-3)
    _close(dx, dx_ref, dtype, 10)
    if affine:
        assert dw.dtype == dtype and dw.shape == nshape
        _close(dw, dw_ref, dtype, 10)
        _close(db, db_ref, dtype, 10)
    else:
        assert dw is None and db is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape, ns", LAYER_CASES)
def test_rms_norm(rng, chunks, shape, ns, affine, dtype):
    x = (rng.standard_normal(shape) + 0.5).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    nshape = (ns,) if isinstance(ns, int) else ns
    w = rng.standard_normal(nshape).astype(dtype) if affine else None
    y, invstd = fastbn.rms_norm_train(x, ns, w)
    y_ref, invstd_ref = rms_norm_ref(x, ns, w)
    _close(y, y_ref, dtype)
    _close(invstd, invstd_ref, np.float64, 1e5)
    dx, dw, db = fastbn.rms_norm_backward(dy, x, invstd, ns, w)
    dx_ref, dw_ref, _ = layer_norm_backward_ref(dy, x, ns, w, eps=np.finfo(dtype).eps,
                                                centered=False)
    _close(dx, dx_ref, dtype, 10)
    assert db is None
    if affine:
        _close(dw, dw_ref, dtype, 10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape, groups", GROUP_CASES)
def test_group_norm(rng, chunks, shape, groups, affine, dtype):
    x = (rng.standard_normal(shape) * 2 - 1).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    w, b = _affine(rng, (shape[1],), affine, dtype)
    y, mean, invstd = fastbn.group_norm_train(x, groups, w, b)
    y_ref, mean_ref, invstd_ref = group_norm_ref(x, groups, w, b)
    assert mean.shape == (shape[0], groups)
    _close(y, y_ref, dtype)
    _close(mean, mean_ref, np.float64, 1e5)
    _close(invstd, invstd_ref, np.float64, 1e5)
    dx, dw, db = fastbn.group_norm_backward(dy, x, mean, invstd, groups, w)
    dx_ref, dw_ref, db_ref = group_norm_backward_ref(dy, x, groups, w)
    _close(dx, dx_ref, dtype, 10)
    if affine:
        _close(dw, dw_ref, dtype, 10)
        _close(db, db_ref, dtype, 10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", INSTANCE_SHAPES)
def test_instance_norm(rng, chunks, shape, affine, dtype):
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    w, b = _affine(rng, (shape[1],), affine, dtype)
    y, mean, invstd = fastbn.instance_norm_train(x, w, b)
    y_ref, mean_ref, invstd_ref = instance_norm_ref(x, w, b)
    _close(y, y_ref, dtype)
    _close(mean, mean_ref, np.float64, 1e5)
    dx, dw, db = fastbn.instance_norm_backward(dy, x, mean, invstd, w)
    dx_ref, dw_ref, db_ref = instance_norm_backward_ref(dy, x, w)
    _close(dx, dx_ref, dtype, 10)
    if affine:
        _close(dw, dw_ref, dtype, 10)
        _close(db, db_ref, dtype, 10)


def test_instance_norm_running_stats_and_eval(rng):
    x = rng.standard_normal((3, 4, 6)) * 2 + 1
    rm, rv = np.full(4, 0.5), np.full(4, 2.0)
    _, mean_ref, invstd_ref = instance_norm_ref(x)
    unbiased = (1.0 / invstd_ref ** 2 - 1e-5) * 6 / 5
    fastbn.instance_norm(x, rm, rv, momentum=0.25)
    np.testing.assert_allclose(rm, 0.75 * 0.5 + 0.25 * mean_ref.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(rv, 0.75 * 2.0 + 0.25 * unbiased.mean(axis=0), rtol=1e-9)
    w, b = rng.standard_normal(4), rng.standard_normal(4)
    y = fastbn.instance_norm(x, rm, rv, w, b, use_input_stats=False)
    np.testing.assert_allclose(y, batch_norm_ref(x, rm, rv, w, b), rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(x.shape)
    invstd = 1.0 / np.sqrt(rv + 1e-5)
    dx, dw, db = fastbn.instance_norm_backward(dy, x, rm, invstd, w, batch_stats=False)
    dx_ref, dw_ref, db_ref, _ = batch_norm_backward_ref(dy, x, w, b, batch_stats=False, mean=rm,
                                                        var=rv)
    for got, want in ((dx, dx_ref), (dw, dw_ref), (db, db_ref)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_float16_computes_in_float32(rng):
    x = rng.standard_normal((3, 8)).astype(np.float16)
    y = fastbn.layer_norm(x, 8)
    assert y.dtype == np.float16
    np.testing.assert_allclose(y, layer_norm_ref(x, 8)[0], atol=2e-3, rtol=2e-3)
    _, invstd = fastbn.rms_norm_train(x, 8)
    np.testing.assert_allclose(invstd, rms_norm_ref(x, 8, eps=float(np.finfo(np.float16).eps))[1],
                               rtol=1e-12)


def test_non_contiguous_input(rng):
    x = rng.standard_normal((6, 4, 10))[:, ::2, 1::2]
    np.testing.assert_allclose(fastbn.group_norm(x, 2), group_norm_ref(x, 2)[0], atol=1e-12)
    np.testing.assert_allclose(fastbn.layer_norm(x, (2, 5)), layer_norm_ref(x, (2, 5))[0],
                               atol=1e-12)


def test_empty_batch():
    y, mean, invstd = fastbn.layer_norm_train(np.zeros((0, 5), np.float32), 5)
    assert y.shape == (0, 5) and mean.shape == (0,)
    dx, dw, _ = fastbn.layer_norm_backward(y, y, mean, invstd, 5, np.ones(5, np.float32))
    assert dx.shape == (0, 5)
    np.testing.assert_array_equal(dw, 0)


# --- finite differences ----------------------------------------------------------------------


def _fd_check(f, backward, x, params, rng):
    """dx and the parameter grads of ``backward`` against central differences of ``f``."""
    dy = rng.standard_normal(f(x, *params).shape)
    grads = backward(dy, x, *params)
    np.testing.assert_allclose(grads[0], numerical_grad(lambda v: f(v, *params), x, dy),
                               rtol=1e-5, atol=1e-7)
    for i, p in enumerate(params):
        fd = numerical_grad(lambda v: f(x, *params[:i], v, *params[i + 1:]), p, dy)
        np.testing.assert_allclose(grads[1 + i], fd, rtol=1e-5, atol=1e-7)


def test_layer_norm_finite_differences(rng):
    x = rng.standard_normal((3, 2, 4))
    params = (rng.standard_normal((2, 4)), rng.standard_normal((2, 4)))
    f = lambda x, w, b: fastbn.layer_norm(x, (2, 4), w, b)

    def backward(dy, x, w, b):
        _, mean, invstd = fastbn.layer_norm_train(x, (2, 4), w, b)
        return fastbn.layer_norm_backward(dy, x, mean, invstd, (2, 4), w)
    _fd_check(f, backward, x, params, rng)


def test_rms_norm_finite_differences(rng):
    x = rng.standard_normal((3, 5))
    f = lambda x, w: fastbn.rms_norm(x, 5, w, eps=1e-6)

    def backward(dy, x, w):
        _, invstd = fastbn.rms_norm_train(x, 5, w, eps=1e-6)
        return fastbn.rms_norm_backward(dy, x, invstd, 5, w)[:2]
    _fd_check(f, backward, x, (rng.standard_normal(5),), rng)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_group_norm_finite_differences(rng, groups):
    x = rng.standard_normal((2, 4, 3))
    params = (rng.standard_normal(4), rng.standard_normal(4))
    f = lambda x, w, b: fastbn.group_norm(x, groups, w, b)

    def backward(dy, x, w, b):
        _, mean, invstd = fastbn.group_norm_train(x, groups, w, b)
        return fastbn.group_norm_backward(dy, x, mean, invstd, groups, w)
    _fd_check(f, backward, x, params, rng)


def test_instance_norm_finite_differences(rng):
    x = rng.standard_normal((2, 3, 2, 2))
    params = (rng.standard_normal(3), rng.standard_normal(3))
    f = lambda x, w, b: fastbn.instance_norm(x, weight=w, bias=b)

    def backward(dy, x, w, b):
        _, mean, invstd = fastbn.instance_norm_train(x, w, b)
        return fastbn.instance_norm_backward(dy, x, mean, invstd, w)
    _fd_check(f, backward, x, params, rng)


# --- adversarial numerics --------------------------------------------------------------------


@pytest.mark.parametrize("op", ["layer", "group", "instance"])
def test_large_offset_small_spread(rng, op):
    """Mean 1e6, std 1e-2 in float32: statistics and normalisation keep every digit."""
    x = (1e6 + 1e-2 * rng.standard_normal((4, 4, 300))).astype(np.float32)
    if op == "layer":
        y, want = fastbn.layer_norm(x, 300), layer_norm_ref(x, 300)[0]
    elif op == "group":
        y, want = fastbn.group_norm(x, 2), group_norm_ref(x, 2)[0]
    else:
        y, want = fastbn.instance_norm(x), instance_norm_ref(x)[0]
    np.testing.assert_allclose(y, want, atol=1e-5, rtol=1e-5)


def test_constant_rows_give_bias(rng):
    x = np.full((3, 4, 5), 7.25, np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    y, _, invstd = fastbn.group_norm_train(x, 2, None, b)
    np.testing.assert_array_equal(y, np.broadcast_to(b[None, :, None], x.shape))
    np.testing.assert_allclose(invstd, 1 / np.sqrt(1e-5), rtol=1e-12)
    dx, _, _ = fastbn.group_norm_backward(np.ones_like(x), x, *fastbn.group_norm_train(x, 2)[1:],
                                          2)
    assert np.isfinite(dx).all()
    np.testing.assert_array_equal(fastbn.layer_norm(x, (4, 5)), 0)


def test_huge_magnitudes_do_not_overflow():
    x = np.array([[1e30, -1e30, 3e30, 0.0]], np.float32)
    np.testing.assert_allclose(fastbn.layer_norm(x, 4), layer_norm_ref(x, 4)[0], rtol=1e-6)
    np.testing.assert_allclose(fastbn.rms_norm(x, 4), rms_norm_ref(x, 4)[0], rtol=1e-6)


def test_nan_stays_in_its_row():
    x = np.arange(12, dtype=np.float64).reshape(3, 4)
    x[1, 2] = np.nan
    y = fastbn.layer_norm(x, 4)
    assert np.isnan(y[1]).all() and np.isfinite(y[[0, 2]]).all()


# --- properties over random geometries -------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 7), min_size=2, max_size=4), trailing=st.integers(1, 3),
       dtype=st.sampled_from(["f4", "f8"]), transpose=st.booleans(), seed=st.integers(0, 99))
def test_property_layer_and_group_norm(shape, trailing, dtype, transpose, seed):
    """Random shapes, normalised dims, group counts and memory orders against the oracle."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    if transpose:   # a non-contiguous view with the same logical shape
        x = np.ascontiguousarray(x.T).T
    dy = rng.standard_normal(shape).astype(dtype)
    ns = tuple(shape[len(shape) - min(trailing, len(shape)):])
    w = rng.standard_normal(ns).astype(dtype)
    y, mean, invstd = fastbn.layer_norm_train(x, ns, w, w)
    _close(y, layer_norm_ref(x, ns, w, w)[0], dtype, 10)
    for got, want in zip(fastbn.layer_norm_backward(dy, x, mean, invstd, ns, w),
                         layer_norm_backward_ref(dy, x, ns, w)):
        _close(got, want, dtype, 10)
    C = shape[1]
    divisors = [g for g in range(1, C + 1) if C % g == 0]
    groups = divisors[seed % len(divisors)]
    if shape[0] * np.prod(shape[1:]) // groups > 1:
        wc = rng.standard_normal(C).astype(dtype)
        y, mean, invstd = fastbn.group_norm_train(x, groups, wc, wc)
        _close(y, group_norm_ref(x, groups, wc, wc)[0], dtype, 10)
        for got, want in zip(fastbn.group_norm_backward(dy, x, mean, invstd, groups, wc),
                             group_norm_backward_ref(dy, x, groups, wc)):
            _close(got, want, dtype, 10)
