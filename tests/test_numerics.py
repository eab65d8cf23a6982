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


def test_gradient_sums_are_float64_sums_of_float32_dy():
    # 1 + 2**-30 rounds to 1 in float32: any float32 partial sum of dy loses the small values.
    tiny = 2.0 ** -30
    for shape, axis in (((4, 2, 512), 1), ((512, 2), 1), ((4, 512, 2), -1)):
        rng = np.random.default_rng(0)
        dy = np.where(rng.random(shape) < 0.5, 1.0, tiny).astype(np.float32)
        x = rng.standard_normal(shape).astype(np.float32)
        w = np.ones(2)  # float64 parameters: the gradients keep the float64 sums
        for activation, output in ((None, None), ("relu", np.ones_like(x))):
            y, mean, invstd = fastbn.batch_norm_train(x, w, np.zeros(2), axis=axis)
            _, _, dbias = fastbn.batch_norm_backward(dy, x, mean, invstd, w, axis=axis,
                                                     activation=activation, output=output)
            reduced = tuple(d for d in range(dy.ndim) if d != dy.ndim + axis and d != axis)
            np.testing.assert_array_equal(dbias, dy.astype(np.float64).sum(axis=reduced))
