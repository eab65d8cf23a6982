"""Adversarial numerics: large offsets, constant channels, huge magnitudes, tiny batches."""

import numpy as np
from oracle import batch_norm_backward_ref, batch_norm_train_ref

import fastbn


def test_large_offset_small_spread_float32(rng):
    # PyTorch's float32 output is off by up to ~17 here; the float64 path is exact to rounding.
    x = (1e6 + 1e-2 * rng.standard_normal((16, 4, 32))).astype(np.float32)
    for layout, axis in ((x, 1), (np.ascontiguousarray(np.moveaxis(x, 1, -1)), -1)):
        y, mean, invstd = fastbn.batch_norm_train(layout, axis=axis)
        ref, rmean, rvar, _ = batch_norm_train_ref(layout, axis=axis)
        np.testing.assert_allclose(y, ref, atol=1e-4)
        np.testing.assert_allclose(1 / invstd**2 - 1e-5, rvar, rtol=1e-5)
        dy = rng.standard_normal(layout.shape).astype(np.float32)
        dx = fastbn.batch_norm_backward(dy, layout, mean, invstd, axis=axis)[0]
        rdx = batch_norm_backward_ref(dy, layout, axis=axis)[0]
        np.testing.assert_allclose(dx, rdx, atol=1e-4 * np.abs(rdx).max())


def test_constant_channel_normalises_to_zero():
    x = np.full((8, 3, 5), 7.25, np.float32)
    x[:, 1] = -3.5e4
    y, mean, invstd = fastbn.batch_norm_train(x)
    assert np.abs(y).max() < 1e-6
    np.testing.assert_array_equal(mean, [7.25, -3.5e4, 7.25])


def test_huge_magnitudes_stay_finite(rng):
    x = (rng.standard_normal((6, 3, 7)) * 1e30).astype(np.float32)
    y, mean, invstd = fastbn.batch_norm_train(x, eps=0.0)
    ref, rmean, rvar, _ = batch_norm_train_ref(x, eps=0.0)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, ref, atol=1e-4)
    np.testing.assert_allclose(1 / invstd**2, rvar, rtol=1e-5)
    mean64, var64 = fastbn.moments(x.astype(np.float64), axis=(0, 2))
    np.testing.assert_allclose(var64, rvar, rtol=1e-12)


def test_tiny_magnitudes(rng):
    x = (rng.standard_normal((6, 3, 7)) * 1e-30).astype(np.float32)
    y, _, _ = fastbn.batch_norm_train(x, eps=0.0)
    np.testing.assert_allclose(y, batch_norm_train_ref(x, eps=0.0)[0], atol=1e-4)


def test_batch_of_two(rng):
    for x in (rng.standard_normal((2, 5)).astype(np.float32),
              rng.standard_normal((2, 3, 1, 1)).astype(np.float32)):
        y, _, _ = fastbn.batch_norm_train(x)
        np.testing.assert_allclose(y, batch_norm_train_ref(x)[0], atol=1e-4)
        np.testing.assert_allclose(np.abs(y), 1.0, atol=1e-3)


def test_many_chunks_float64_accuracy(rng):
    x = 3.0 + rng.standard_normal((7, 2, 9000))
    y, mean, invstd = fastbn.batch_norm_train(x)
    ref, rmean, rvar, _ = batch_norm_train_ref(x)
    np.testing.assert_allclose(mean, rmean, rtol=1e-13)
    np.testing.assert_allclose(1 / invstd**2 - 1e-5, rvar, rtol=1e-12)
    np.testing.assert_allclose(y, ref, atol=1e-10)
