"""Batch Renormalization and ghost (virtual) batches on the batch norm layers."""

import numpy as np
import pytest

import fastbn
from fastbn import _renorm
from oracle import batch_stats_ref, numerical_grad


LAYOUTS = [((8, 3), 1), ((4, 3, 5), 1), ((4, 5, 3), -1)]


def _layer(rng, dtype=np.float32, **kwargs):
    f = fastbn.BatchNorm1d(3, dtype=dtype, **kwargs)
    f.weight[...] = rng.uniform(0.5, 1.5, 3) * np.array([1, -1, 1])
    f.bias[...] = rng.normal(size=3)
    return f


def _run(f, xs, dys, residuals=None):
    """Forward/backward over a sequence of batches; returns the outputs and input grads."""
    outs = []
    for i, (x, dy) in enumerate(zip(xs, dys)):
        res = None if residuals is None else residuals[i]
        outs.append((f(x, residual=res), f.backward(dy)))
    return outs


def _batches(rng, shape, n=4, dtype=np.float32):
    return [(rng.normal(size=shape) * 3 + 2).astype(dtype) for _ in range(n)]


def _same_bits(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), what


def _same_state(f, g):
    for key, value in f.state_dict().items():
        _same_bits(value, g.state_dict()[key], key)


# -- renorm -------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,axis", LAYOUTS)
@pytest.mark.parametrize("epilogue", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_renorm_without_clipping_room_is_plain_batch_norm_bitwise(shape, axis, epilogue, threads,
                                                                 rng):
    fastbn.set_num_threads(threads)
    kw = dict(axis=axis, activation="relu" if epilogue else None)
    plain, renorm = _layer(rng, **kw), _layer(rng, renorm=True, rmax=1.0, dmax=0.0, **kw)
    renorm.load_state_dict(plain.state_dict())
    xs, dys = _batches(rng, shape), _batches(rng, shape)
    res = _batches(rng, shape) if epilogue else None
    for (y1, g1), (y2, g2) in zip(_run(plain, xs, dys, res), _run(renorm, xs, dys, res)):
        _same_bits(y1, y2, "y")
        for a, b in zip(g1 if epilogue else (g1,), g2 if epilogue else (g2,)):
            _same_bits(a, b, "dx")
    _same_state(plain, renorm)
    _same_bits(plain.grad_weight, renorm.grad_weight, "grad_weight")
    _same_bits(plain.grad_bias, renorm.grad_bias, "grad_bias")


def _renorm_reference(x, w, b, rm, rv, eps, rmax, dmax, r=None, d=None):
    """The paper's training forward in float64 (channel axis 1); r, d constants if given."""
    mean, var, _ = batch_stats_ref(x)
    sigma = np.sqrt(rv + eps)
    if r is None:
        r = np.clip(np.sqrt(var + eps) / sigma, 1 / rmax, rmax)
        d = np.clip((mean - rm) / sigma, -dmax, dmax)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    xhat = (x - mean.reshape(shape)) / np.sqrt(var + eps).reshape(shape)
    y = (xhat * r.reshape(shape) + d.reshape(shape)) * w.reshape(shape) + b.reshape(shape)
    return y, r, d


@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5)])
def test_renorm_with_active_clipping_matches_the_paper(shape, rng):
    rmax, dmax, eps, momentum = 1.5, 0.5, 1e-5, 0.1
    f = _layer(rng, renorm=True, rmax=rmax, dmax=dmax, momentum=momentum)
    x = rng.normal(size=shape)
    x[:, 0] *= 4.0                          # channel 0: r clipped at rmax
    x[:, 1] += 3.0                          # channel 1: d clipped at dmax
    f.running_mean[...] = [0.0, 0.0, 0.1]   # channel 2: inside both limits
    f.running_var[...] = [1.0, 1.0, 1.2]
    x = x.astype(np.float32)
    x64, dy = x.astype(np.float64), rng.normal(size=shape)
    w, b, rm, rv = (a.astype(np.float64) for a in (f.weight, f.bias, f.running_mean,
                                                  f.running_var))
    y_ref, r, d = _renorm_reference(x64, w, b, rm, rv, eps, rmax, dmax)
    assert r[0] == rmax and d[1] == dmax and 1 / rmax < r[2] < rmax and abs(d[2]) < dmax

    y = f(x)
    dx = f.backward(dy.astype(np.float32))
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    fixed = dict(r=r, d=d)                  # r and d are constants in the backward pass
    ref = lambda z: _renorm_reference(z, w, b, rm, rv, eps, rmax, dmax, **fixed)[0]
    np.testing.assert_allclose(dx, numerical_grad(ref, x64, dy), rtol=1e-5, atol=1e-5)
    gw = numerical_grad(lambda v: _renorm_reference(x64, v, b, rm, rv, eps, rmax, dmax,
                                                    **fixed)[0], w, dy)
    gb = numerical_grad(lambda v: _renorm_reference(x64, w, v, rm, rv, eps, rmax, dmax,
                                                    **fixed)[0], b, dy)
    np.testing.assert_allclose(f.grad_weight, gw, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(f.grad_bias, gb, rtol=1e-5, atol=1e-5)
    mean, _, unbiased = batch_stats_ref(x64)
    np.testing.assert_allclose(f.running_mean, (1 - momentum) * rm + momentum * mean, rtol=1e-6)
    np.testing.assert_allclose(f.running_var, (1 - momentum) * rv + momentum * unbiased,
                               rtol=1e-6)


def test_renorm_inference_is_unchanged(rng):
    plain, renorm = _layer(rng), _layer(rng, renorm=True)
    renorm.load_state_dict(plain.state_dict())
    for x in _batches(rng, (6, 3)):
        plain(x)
        renorm(x)
    plain.eval()
    renorm.eval().load_state_dict(plain.state_dict())
    x = _batches(rng, (5, 3), 1)[0]
    _same_bits(plain(x), renorm(x), "eval y")


def test_renorm_limits_may_be_schedules_of_the_step(rng):
    seen = []
    f = _layer(rng, renorm=True, rmax=lambda step: seen.append(step) or 1.0 + step,
               dmax=lambda step: 0.5 * step)
    for x in _batches(rng, (6, 3), 3):
        f(x)
    assert seen == [0, 1, 2]
    f.rmax = lambda step: 0.5
    before = f.state_dict()
    with pytest.raises(ValueError, match="rmax"):
        f(_batches(rng, (6, 3), 1)[0])
    for key, value in before.items():
        _same_bits(getattr(f, key), value, key)


def test_renorm_functional_without_update_leaves_buffers(rng):
    x = rng.normal(size=(6, 3))
    rm, rv = np.zeros(3), np.ones(3)
    y, mean, invstd, r, d = _renorm.batch_renorm_train(x, rm, rv, rmax=2.0, dmax=1.0,
                                                       update_running=False)
    assert (rm == 0).all() and (rv == 1).all() and y.shape == x.shape
    np.testing.assert_allclose(mean, x.mean(axis=0))
    np.testing.assert_allclose(invstd, 1 / np.sqrt(x.var(axis=0) + 1e-5))


@pytest.mark.parametrize("kwargs,match", [
    (dict(renorm=True, track_running_stats=False), "track_running_stats"),
    (dict(renorm=True, rmax=0.5), "rmax"), (dict(renorm=True, dmax=-1.0), "dmax"),
    (dict(renorm="yes"), "renorm"), (dict(virtual_batch_size=0), "virtual_batch_size"),
])
def test_bad_renorm_and_ghost_arguments(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        fastbn.BatchNorm1d(3, **kwargs)


def test_renorm_skips_non_finite_batches(rng):
    f = _layer(rng, renorm=True)
    f(_batches(rng, (6, 3), 1)[0])
    before = f.state_dict()
    x = _batches(rng, (6, 3), 1)[0]
    x[2, 0] = np.nan
    with pytest.warns(RuntimeWarning, match="not finite"):
        f(x)
    for key, value in before.items():
        _same_bits(getattr(f, key), value, key)


# -- ghost batches ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape,axis", LAYOUTS)
def test_ghost_with_the_whole_batch_is_plain_batch_norm(shape, axis, rng):
    plain, ghost = _layer(rng, axis=axis), _layer(rng, axis=axis, virtual_batch_size=shape[0])
    ghost.load_state_dict(plain.state_dict())
    xs, dys = _batches(rng, shape), _batches(rng, shape)
    for (y1, g1), (y2, g2) in zip(_run(plain, xs, dys), _run(ghost, xs, dys)):
        _same_bits(y1, y2, "y")
        _same_bits(g1, g2, "dx")
    _same_state(plain, ghost)
    np.testing.assert_allclose(plain.grad_weight, ghost.grad_weight, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape,axis", LAYOUTS)
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("renorm", [False, True])
@pytest.mark.parametrize("epilogue", [False, True])
def test_ghost_equals_plain_batch_norm_per_group(shape, axis, momentum, renorm, epilogue, rng):
    """k < N: the layer behaves as if called on each group of k samples in turn."""
    k = 2
    kw = dict(axis=axis, momentum=momentum, renorm=renorm, rmax=1.2, dmax=0.3,
              activation="relu" if epilogue else None)
    plain, ghost = _layer(rng, **kw), _layer(rng, virtual_batch_size=k, **kw)
    ghost.load_state_dict(plain.state_dict())
    for step in range(3):
        x, dy = _batches(rng, shape, 2)
        res = _batches(rng, shape, 1)[0] if epilogue else None
        parts = [(slice(i, i + k),) for i in range(0, shape[0], k)]
        expected = [_run(plain, [x[p]], [dy[p]], None if res is None else [res[p]])[0]
                    for p in parts]
        y, grads = _run(ghost, [x], [dy], None if res is None else [res])[0]
        _same_bits(y, np.concatenate([e[0] for e in expected]), f"y, step {step}")
        if epilogue:
            _same_bits(grads[0], np.concatenate([e[1][0] for e in expected]), "dx")
            _same_bits(grads[1], np.concatenate([e[1][1] for e in expected]), "dresidual")
        else:
            _same_bits(grads, np.concatenate([e[1] for e in expected]), "dx")
        _same_state(plain, ghost)
    assert int(ghost.num_batches_tracked) == 3 * shape[0] // k
    np.testing.assert_allclose(ghost.grad_weight, plain.grad_weight, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ghost.grad_bias, plain.grad_bias, rtol=1e-5, atol=1e-5)


def test_ghost_batch_must_divide_and_eval_takes_any_batch(rng):
    f = _layer(rng, virtual_batch_size=4)
    with pytest.raises(ValueError, match="virtual_batch_size=4 must divide the batch size"):
        f(_batches(rng, (6, 3), 1)[0])
    assert int(f.num_batches_tracked) == 0 and f._saved is None
    f.eval()
    y = f(_batches(rng, (1, 3), 1)[0])      # running statistics: no groups needed
    assert y.shape == (1, 3)
    with pytest.raises(ValueError, match="batch axis 0"):
        _layer(rng, axis=0, virtual_batch_size=2)(np.ones((3, 4), np.float32))
