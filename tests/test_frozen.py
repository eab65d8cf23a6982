"""Frozen batch norm: the three switches, each combination checked numerically.

``use_batch_stats`` (which statistics normalise), ``update_running_stats``
(whether the running statistics move) and ``requires_grad_`` (whether the
affine parameters get gradients), on top of train()/eval().
"""

import itertools
import warnings

import numpy as np
import pytest

import fastbn
from oracle import batch_norm_ref, batch_stats_ref, numerical_grad


MOMENTUM, EPS = 0.2, 1e-3


def _reference(x, w, b, rm, rv, use_batch, residual, activation):
    """The layer's forward in float64: batch statistics of ``x`` or the fixed running ones."""
    mean, var = batch_stats_ref(x)[:2] if use_batch else (rm, rv)
    return batch_norm_ref(x, mean, var, w, b, EPS, residual=residual, activation=activation)


def _layer(rng, training, use_batch, update, requires_grad, activation):
    f = fastbn.BatchNorm1d(3, eps=EPS, momentum=MOMENTUM, dtype=np.float64, activation=activation,
                           use_batch_stats=use_batch, update_running_stats=update)
    f.weight[...] = rng.uniform(0.5, 1.5, 3) * np.array([1, -1, 1])
    f.bias[...] = rng.normal(size=3)
    f.running_mean[...] = rng.normal(size=3)
    f.running_var[...] = rng.uniform(0.5, 2.0, 3)
    return f.train(training).requires_grad_(requires_grad)


@pytest.mark.parametrize("training,use_batch,update,requires_grad,epilogue", list(itertools.product(
    [True, False], [None, True, False], [None, True, False], [True, False], [False, True])))
def test_switch_combination(training, use_batch, update, requires_grad, epilogue, rng):
    activation = "relu" if epilogue else None
    f = _layer(rng, training, use_batch, update, requires_grad, activation)
    x = rng.normal(size=(4, 3, 2)) * 2 + 0.5
    dy = rng.normal(size=x.shape)
    res = rng.normal(size=x.shape) if epilogue else None
    w, b, rm, rv = (a.copy() for a in (f.weight, f.bias, f.running_mean, f.running_var))
    batch_used = training if use_batch is None else use_batch
    updates = (training and batch_used) if update is None else update

    y = f(x, residual=res)
    out = f.backward(dy)
    dx, dres = out if epilogue else (out, None)

    fwd = lambda z: _reference(z, w, b, rm, rv, batch_used, res, activation)
    np.testing.assert_allclose(y, fwd(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, numerical_grad(fwd, x, dy), rtol=1e-6, atol=1e-7)
    if epilogue:
        grad_res = numerical_grad(lambda r: _reference(x, w, b, rm, rv, batch_used, r, activation),
                                  res, dy)
        np.testing.assert_allclose(dres, grad_res, rtol=1e-6, atol=1e-7)
    if requires_grad:
        ref = lambda v, u: _reference(x, v, u, rm, rv, batch_used, res, activation)
        gw = numerical_grad(lambda v: ref(v, b), w, dy)
        gb = numerical_grad(lambda u: ref(w, u), b, dy)
        np.testing.assert_allclose(f.grad_weight, gw, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(f.grad_bias, gb, rtol=1e-6, atol=1e-7)
    else:
        assert f.grad_weight is None and f.grad_bias is None

    mean, _, unbiased = batch_stats_ref(x)
    if updates:
        for now, before, batch in ((f.running_mean, rm, mean), (f.running_var, rv, unbiased)):
            np.testing.assert_allclose(now, (1 - MOMENTUM) * before + MOMENTUM * batch, rtol=1e-12)
    else:
        assert f.running_mean.tobytes() == rm.tobytes() and f.running_var.tobytes() == rv.tobytes()
    assert int(f.num_batches_tracked) == int(updates)


def test_eval_with_updates_normalises_with_the_old_statistics(rng):
    """update_running_stats=True in eval: y uses the statistics from before this batch."""
    f = _layer(rng, False, None, True, True, None)
    rm, rv = f.running_mean.copy(), f.running_var.copy()
    x = rng.normal(size=(5, 3))
    y = f(x)
    np.testing.assert_allclose(y, batch_norm_ref(x, rm, rv, f.weight, f.bias, EPS), atol=1e-12)
    assert not np.allclose(f.running_mean, rm) and int(f.num_batches_tracked) == 1


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("frozen_stats", [False, True])
@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e200])
def test_non_finite_batch_never_poisons_running_stats(momentum, frozen_stats, bad, rng):
    """NaN/inf input, or a float64 variance overflowing: skipped with a warning, not counted."""
    f = fastbn.BatchNorm1d(3, momentum=momentum, dtype=np.float64,
                           use_batch_stats=False if frozen_stats else None,
                           update_running_stats=True)
    f(rng.normal(size=(4, 3)))
    before = {k: v.copy() for k, v in f.state_dict().items()}
    x = rng.normal(size=(4, 3))
    x[0, 1] = bad
    x[1, 1] = -bad if bad == 1e200 else x[1, 1]
    with pytest.warns(RuntimeWarning, match="not finite"):
        f(x)
    for key, value in before.items():
        assert getattr(f, key).tobytes() == value.tobytes(), key
    f(rng.normal(size=(4, 3)))                  # the next good batch counts again
    assert int(f.num_batches_tracked) == 2


def test_frozen_recipe_for_fine_tuning(rng):
    """Train mode elsewhere in the net, this layer fully frozen: a pure function of x."""
    f = fastbn.BatchNorm2d(3, use_batch_stats=False, update_running_stats=False)
    f.requires_grad_(False)
    x = rng.normal(size=(2, 3, 2, 2)).astype(np.float32)
    state = f.state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y1, y2 = f(x), f(x)
    f.backward(np.ones_like(x))
    assert y1.tobytes() == y2.tobytes() and f.grad_weight is None
    for key, value in state.items():
        assert getattr(f, key).tobytes() == value.tobytes()


def test_switches_need_running_stats():
    for kwargs in (dict(use_batch_stats=False), dict(update_running_stats=True)):
        with pytest.raises(ValueError, match="track_running_stats=True"):
            fastbn.BatchNorm1d(3, track_running_stats=False, **kwargs)


def test_bad_switch_set_later_fails_before_any_change(rng):
    f = fastbn.BatchNorm1d(3)
    f.update_running_stats = "sometimes"
    with pytest.raises(TypeError, match="update_running_stats"):
        f(rng.normal(size=(4, 3)).astype(np.float32))
    assert int(f.num_batches_tracked) == 0 and f._saved is None
    with pytest.raises(TypeError, match="requires_grad"):
        f.requires_grad_(None)
    with pytest.raises(TypeError, match="mode"):
        f.train("no")
