"""Training and eval forward against the float64 reference, every layout and dtype."""

import numpy as np
import pytest
from conftest import LAYOUTS, tolerance
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import batch_norm_ref, batch_norm_train_ref

import fastbn


def _params(rng, C, dtype):
    return (rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", LAYOUTS)
def test_train_forward_matches_reference(rng, shape, axis, dtype):
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    C = shape[axis]
    w, b = _params(rng, C, dtype)
    y, mean, invstd = fastbn.batch_norm_train(x, w, b, axis=axis)
    ref, rmean, rvar, _ = batch_norm_train_ref(x, w, b, axis=axis)
    atol, rtol = tolerance(dtype)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_allclose(y, ref, atol=atol, rtol=0)
    np.testing.assert_allclose(mean, rmean, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(1.0 / invstd**2 - 1e-5, rvar, rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", LAYOUTS)
def test_eval_forward_matches_reference(rng, shape, axis, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    C = shape[axis]
    rm, rv = rng.standard_normal(C).astype(dtype), rng.uniform(0.5, 2, C).astype(dtype)
    w, b = _params(rng, C, dtype)
    y = fastbn.batch_norm(x, rm, rv, w, b, training=False, axis=axis)
    ref = batch_norm_ref(x, rm.astype(np.float64), rv.astype(np.float64), w, b, axis=axis)
    np.testing.assert_allclose(y, ref, atol=tolerance(dtype)[0], rtol=0)


def test_running_stats_update_in_place(rng):
    x = rng.standard_normal((8, 3, 4, 4)).astype(np.float32)
    rm, rv = np.full(3, 0.5, np.float32), np.full(3, 2.0, np.float32)
    fastbn.batch_norm(x, rm, rv, training=True, momentum=0.25)
    _, mean, _, unbiased = batch_norm_train_ref(x)
    np.testing.assert_allclose(rm, 0.75 * 0.5 + 0.25 * mean, rtol=1e-6)
    np.testing.assert_allclose(rv, 0.75 * 2.0 + 0.25 * unbiased, rtol=1e-6)


def test_non_finite_batch_leaves_running_stats(rng):
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    x[0, 1, 0] = np.nan
    rm, rv = np.zeros(2, np.float32), np.ones(2, np.float32)
    with pytest.warns(RuntimeWarning, match="not finite"):
        fastbn.batch_norm_train(x, running_mean=rm, running_var=rv)
    assert (rm == 0).all() and (rv == 1).all()


@pytest.mark.parametrize("order", ["C", "F"])
def test_memory_orders_and_strides(rng, order):
    base = rng.standard_normal((6, 4, 10, 8))
    x = np.asarray(base, order=order)
    strided = base[::2, :, 1::3, ::-1]
    for arr in (x, strided, np.moveaxis(base, 1, -1)):
        axis = -1 if arr.shape[-1] == 4 and arr.shape[1] != 4 else 1
        y, _, _ = fastbn.batch_norm_train(arr, axis=axis)
        ref = batch_norm_train_ref(arr, axis=axis)[0]
        np.testing.assert_allclose(y, ref, atol=1e-10)


def test_output_keeps_input_layout(rng):
    x = np.asfortranarray(rng.standard_normal((4, 3, 5, 6)))
    y, _, _ = fastbn.batch_norm_train(x)
    assert y.flags.f_contiguous
    cl = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 1, -1)), -1, 1)
    assert fastbn.batch_norm_train(cl)[0].strides == cl.strides


def test_read_only_input(rng):
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    x.flags.writeable = False
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    rm.flags.writeable = rv.flags.writeable = False
    y = fastbn.batch_norm(x, rm, rv)
    np.testing.assert_allclose(y, batch_norm_ref(x, np.zeros(3), np.ones(3)), atol=1e-5)
    y2, _, _ = fastbn.batch_norm_train(x)
    np.testing.assert_allclose(y2, batch_norm_train_ref(x)[0], atol=1e-4)


@pytest.mark.parametrize("training", [True, False])
def test_out_and_in_place(rng, training):
    x = rng.standard_normal((5, 3, 7)).astype(np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    expect = fastbn.batch_norm(x.copy(), rm.copy(), rv.copy(), training=training)
    out = np.empty_like(x)
    assert fastbn.batch_norm(x, rm.copy(), rv.copy(), training=training, out=out) is out
    np.testing.assert_array_equal(out, expect)
    inplace = x.copy()
    fastbn.batch_norm(inplace, rm.copy(), rv.copy(), training=training, out=inplace)
    np.testing.assert_array_equal(inplace, expect)
    strided_out = np.empty((5, 3, 14), np.float32)[:, :, ::2]
    fastbn.batch_norm(x, rm.copy(), rv.copy(), training=training, out=strided_out)
    np.testing.assert_array_equal(strided_out, expect)


def test_out_partially_overlapping_input(rng):
    buf = rng.standard_normal(2 * 3 * 8).astype(np.float64)
    x = buf[:40].reshape(5, 8)
    expect = fastbn.batch_norm_train(x.copy())[0]
    out = buf[8:48].reshape(5, 8)
    fastbn.batch_norm_train(x, out=out)
    np.testing.assert_allclose(out, expect, atol=1e-12)


def test_float16_computes_in_float32(rng):
    x = (rng.standard_normal((6, 4, 5)) * 2).astype(np.float16)
    y, mean, _ = fastbn.batch_norm_train(x)
    assert y.dtype == np.float16
    np.testing.assert_allclose(y, batch_norm_train_ref(x)[0], atol=4e-3)


@settings(max_examples=40, deadline=None)
@given(ndim=st.integers(2, 4), axis_pick=st.integers(0, 3), dtype=st.sampled_from(["f4", "f8"]),
       data=st.data())
def test_property_random_layouts(ndim, axis_pick, dtype, data):
    shape = tuple(data.draw(st.lists(st.integers(1, 6), min_size=ndim, max_size=ndim)))
    axis = axis_pick % ndim
    if np.prod(shape) // shape[axis] < 2:
        shape = shape[:axis] + (shape[axis],) + tuple(s + 1 for s in shape[axis + 1:]) \
            if axis + 1 < ndim else tuple(s + 1 for s in shape[:axis]) + (shape[axis],)
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * rng.uniform(0.1, 100) + rng.uniform(-50, 50)).astype(dtype)
    if data.draw(st.booleans()):
        perm = data.draw(st.permutations(range(ndim)))
        x = np.ascontiguousarray(x.transpose(perm)).transpose(np.argsort(perm))
    y, mean, invstd = fastbn.batch_norm_train(x, axis=axis)
    ref, rmean, rvar, _ = batch_norm_train_ref(x, axis=axis)
    atol, rtol = tolerance(dtype)
    np.testing.assert_allclose(y, ref, atol=atol * 10, rtol=0)
    np.testing.assert_allclose(mean, rmean, rtol=rtol, atol=atol * 1e-3)
