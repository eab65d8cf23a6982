"""Backward against the analytic float64 reference and finite differences."""

import numpy as np
import pytest
from conftest import LAYOUTS, tolerance
from oracle import batch_norm_backward_ref, batch_norm_ref, batch_norm_train_ref, numerical_grad

import fastbn


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", LAYOUTS)
def test_backward_matches_reference(rng, shape, axis, dtype):
    x = (rng.standard_normal(shape) * 2 - 1).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    C = shape[axis]
    w = rng.standard_normal(C).astype(dtype)
    _, mean, invstd = fastbn.batch_norm_train(x, w, axis=axis)
    dx, dw, db = fastbn.batch_norm_backward(dy, x, mean, invstd, w, axis=axis)
    rdx, rdw, rdb, _ = batch_norm_backward_ref(dy, x, w, axis=axis)
    atol, rtol = tolerance(dtype)
    scale = max(1.0, np.abs(rdw).max(), np.abs(rdb).max())
    assert dx.dtype == dtype and dw.dtype == dtype
    np.testing.assert_allclose(dx, rdx, atol=atol * 10, rtol=rtol)
    np.testing.assert_allclose(dw, rdw, atol=atol * scale, rtol=rtol)
    np.testing.assert_allclose(db, rdb, atol=atol * scale, rtol=rtol)


def test_backward_without_weight_returns_no_param_grads(rng):
    x = rng.standard_normal((4, 3, 5))
    _, mean, invstd = fastbn.batch_norm_train(x)
    dx, dw, db = fastbn.batch_norm_backward(np.ones_like(x), x, mean, invstd)
    assert dw is None and db is None
    np.testing.assert_allclose(dx, 0.0, atol=1e-12)


@pytest.mark.parametrize("shape,axis", [((3, 2, 4), 1), ((5, 3), 1), ((2, 3, 2, 2), -1)])
def test_finite_differences_train(rng, shape, axis):
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(shape)
    w, b = rng.standard_normal(shape[axis]), rng.standard_normal(shape[axis])
    f = lambda v: fastbn.batch_norm_train(v, w, b, axis=axis)[0]
    _, mean, invstd = fastbn.batch_norm_train(x, w, b, axis=axis)
    dx, _, _ = fastbn.batch_norm_backward(dy, x, mean, invstd, w, axis=axis)
    np.testing.assert_allclose(dx, numerical_grad(f, x, dy), atol=1e-6)


def test_finite_differences_eval_frozen_statistics(rng):
    x = rng.standard_normal((3, 4, 5))
    dy = rng.standard_normal(x.shape)
    rm, rv = rng.standard_normal(4), rng.uniform(0.5, 2.0, 4)
    w, b = rng.standard_normal(4), rng.standard_normal(4)
    f = lambda v: fastbn.batch_norm(v, rm, rv, w, b, training=False)
    invstd = 1.0 / np.sqrt(rv + 1e-5)
    dx, dw, db = fastbn.batch_norm_backward(dy, x, rm, invstd, w, batch_stats=False)
    np.testing.assert_allclose(dx, numerical_grad(f, x, dy), atol=1e-6)
    fw = lambda v: fastbn.batch_norm(x, rm, rv, v, b, training=False)
    np.testing.assert_allclose(dw, numerical_grad(fw, w, dy), atol=1e-6)
    rdx, rdw, rdb, _ = batch_norm_backward_ref(dy, x, w, batch_stats=False, mean=rm, var=rv)
    np.testing.assert_allclose(dx, rdx, atol=1e-12)
    np.testing.assert_allclose(db, rdb, atol=1e-12)


def test_frozen_backward_ignores_infinite_input(rng):
    x = rng.standard_normal((3, 2, 4))
    x[0, 0, 0] = np.inf
    dx, _, _ = fastbn.batch_norm_backward(np.ones_like(x), x, np.zeros(2), np.ones(2), np.ones(2),
                                          batch_stats=False)
    assert np.isfinite(dx).all()


@pytest.mark.parametrize("out_aliases", ["dy", "none"])
def test_backward_out(rng, out_aliases):
    x = rng.standard_normal((4, 3, 6)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    _, mean, invstd = fastbn.batch_norm_train(x)
    expect = fastbn.batch_norm_backward(dy.copy(), x, mean, invstd)[0]
    out = dy if out_aliases == "dy" else np.empty_like(x)
    dx = fastbn.batch_norm_backward(dy, x, mean, invstd, out=out)[0]
    assert dx is out
    np.testing.assert_array_equal(dx, expect)


def test_forward_stats_feed_backward_reference(rng):
    x = rng.standard_normal((6, 3, 4)).astype(np.float32)
    _, mean, invstd = fastbn.batch_norm_train(x)
    _, rmean, rvar, _ = batch_norm_train_ref(x)
    assert mean.dtype == np.float64 and invstd.dtype == np.float64
    np.testing.assert_allclose(invstd, 1 / np.sqrt(rvar + 1e-5), rtol=1e-6)
    assert batch_norm_ref(x, rmean, rvar).shape == x.shape


@pytest.mark.parametrize("blocked_min_tile", [1, 1 << 62])
@pytest.mark.parametrize("mask", [None, "relu"])
def test_row_gradient_sums_blocked_and_one_tile_at_a_time(rng, blocked_min_tile, mask,
                                                          monkeypatch):
    """Both accumulation orders of the row kernels' gradient sums match the reference."""
    from fastbn import _config
    monkeypatch.setattr(_config, "ROW_SUMS_BLOCKED_MIN_TILE", blocked_min_tile)
    x = (rng.standard_normal((203, 24)) * 2 + 3).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    w = rng.standard_normal(24).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    _, mean, invstd = fastbn.batch_norm_train(x, w, b, activation=mask)
    dx, dw, db = fastbn.batch_norm_backward(dy, x, mean, invstd, w, bias=b, activation=mask)
    ref = batch_norm_backward_ref(dy, x, w, b, activation=mask)
    for got, want in zip((dx, dw, db), ref):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("lanes", [16, 32])
@pytest.mark.parametrize("mask,with_residual", [(None, False), ("relu", False), ("relu", True)])
def test_channel_run_tails_both_decompositions(rng, lanes, mask, with_residual, monkeypatch):
    """Runs of 309 elements: full lane blocks, lane rows and a scalar rest, every lane count.

    Per channel (slab from cache; with a residual, g is stored in the sums
    pass) and per chunk (streaming) give the reference and the same bits.
    """
    from fastbn import _config
    monkeypatch.setattr(_config, "RUN_SUM_LANES", lanes)
    x = (rng.standard_normal((3, 4, 309)) * 2 + 3).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    w = rng.standard_normal(4).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    res = rng.standard_normal(x.shape).astype(np.float32) if with_residual else None
    ref_y, ref_mean, ref_var, _ = batch_norm_train_ref(x, w, b, residual=res, activation=mask)
    ref_grads = batch_norm_backward_ref(dy, x, w, b, residual=res, activation=mask)
    ref_grads = ref_grads if with_residual else ref_grads[:3]
    results = []
    for slab_bytes in (1 << 30, 0):
        monkeypatch.setattr(_config, "SLAB_CACHE_BYTES", slab_bytes)
        y, mean, invstd = fastbn.batch_norm_train(x, w, b, residual=res, activation=mask)
        grads = fastbn.batch_norm_backward(dy, x, mean, invstd, w, bias=b, activation=mask,
                                           output=y if with_residual else None,
                                           residual=with_residual)
        np.testing.assert_allclose(y, ref_y, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(mean, ref_mean, rtol=1e-6, atol=1e-7)
        assert len(grads) == len(ref_grads)
        for got, want in zip(grads, ref_grads):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        results.append((y, mean, invstd) + tuple(grads))
    for fused, streamed in zip(*results):
        np.testing.assert_array_equal(fused, streamed)
