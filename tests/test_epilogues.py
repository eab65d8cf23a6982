"""Fused ReLU and residual epilogues equal the unfused composition, forward and backward."""

import numpy as np
import pytest
from conftest import LAYOUTS
from oracle import batch_norm_backward_ref, batch_norm_train_ref

import fastbn


@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("shape,axis", LAYOUTS[:6])
def test_train_forward_relu_residual(rng, shape, axis, with_residual):
    x = rng.standard_normal(shape).astype(np.float32)
    w, b = rng.standard_normal(shape[axis]).astype(np.float32), rng.standard_normal(shape[axis])
    res = rng.standard_normal(shape).astype(np.float32) if with_residual else None
    y, mean, invstd = fastbn.batch_norm_train(x, w, b, axis=axis, activation="relu", residual=res)
    plain, _, _ = fastbn.batch_norm_train(x, w, b, axis=axis)
    composed = np.maximum(plain + (0 if res is None else res), 0)
    np.testing.assert_allclose(y, composed, atol=1e-6)
    ref = batch_norm_train_ref(x, w, b, axis=axis, residual=res, activation="relu")[0]
    np.testing.assert_allclose(y, ref, atol=1e-4)


@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("shape,axis", LAYOUTS[:6])
def test_eval_forward_relu_residual(rng, shape, axis, with_residual):
    x = rng.standard_normal(shape).astype(np.float32)
    C = shape[axis]
    rm, rv = rng.standard_normal(C), rng.uniform(0.5, 2, C)
    res = rng.standard_normal(shape).astype(np.float32) if with_residual else None
    y = fastbn.batch_norm(x, rm, rv, axis=axis, activation="relu", residual=res)
    plain = fastbn.batch_norm(x, rm, rv, axis=axis)
    np.testing.assert_allclose(y, np.maximum(plain + (0 if res is None else res), 0), atol=1e-6)


@pytest.mark.parametrize("batch_stats", [True, False])
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("shape,axis", LAYOUTS[:6])
def test_backward_relu_residual(rng, shape, axis, with_residual, batch_stats):
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(shape)
    C = shape[axis]
    w, b = rng.standard_normal(C), rng.standard_normal(C)
    res = rng.standard_normal(shape) if with_residual else None
    if batch_stats:
        y, mean, invstd = fastbn.batch_norm_train(x, w, b, axis=axis, activation="relu",
                                                  residual=res)
        var = 1 / invstd**2 - 1e-5
    else:
        mean, var = rng.standard_normal(C), rng.uniform(0.5, 2, C)
        invstd = 1 / np.sqrt(var + 1e-5)
        y = fastbn.batch_norm(x, mean, var, w, b, axis=axis, activation="relu", residual=res)
    grads = fastbn.batch_norm_backward(dy, x, mean, invstd, w, axis=axis, bias=b,
                                       activation="relu", output=y if with_residual else None,
                                       residual=with_residual, batch_stats=batch_stats)
    rdx, rdw, rdb, rg = batch_norm_backward_ref(dy, x, w, b, axis=axis, batch_stats=batch_stats,
                                                mean=mean, var=var, residual=res,
                                                activation="relu")
    np.testing.assert_allclose(grads[0], rdx, atol=1e-9)
    np.testing.assert_allclose(grads[1], rdw, atol=1e-9)
    np.testing.assert_allclose(grads[2], rdb, atol=1e-9)
    if with_residual:
        np.testing.assert_allclose(grads[3], rg, atol=0)
    # The mask from the saved output equals the recomputed one.
    if not with_residual:
        again = fastbn.batch_norm_backward(dy, x, mean, invstd, w, axis=axis, bias=b,
                                           activation="relu", output=y, batch_stats=batch_stats)
        np.testing.assert_array_equal(again[0], grads[0])


def test_residual_without_activation_returns_dy(rng):
    x = rng.standard_normal((4, 3, 2))
    dy = rng.standard_normal(x.shape)
    _, mean, invstd = fastbn.batch_norm_train(x, residual=np.ones_like(x))
    *_, dres = fastbn.batch_norm_backward(dy, x, mean, invstd, residual=True)
    np.testing.assert_array_equal(dres, dy)


def test_relu_lets_nan_through():
    x = np.array([[1.0, np.nan], [3.0, 0.0], [2.0, 1.0]])
    y = fastbn.batch_norm(x, np.zeros(2), np.ones(2), activation="relu", eps=0.0)
    assert np.isnan(y[0, 1]) and y[1, 1] == 0.0
