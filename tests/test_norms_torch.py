"""Parity of the functional row-wise norms with torch.nn.functional (float32, 1e-5)."""

import numpy as np
import pytest

import fastbn

torch = pytest.importorskip("torch", reason="torch is needed for the parity checks")
F = torch.nn.functional

ATOL = RTOL = 1e-5


def _t(a, grad=False):
    return None if a is None else torch.tensor(a, requires_grad=grad)


def _check(got, want, scale=1.0):
    if want is None:
        assert got is None
        return
    np.testing.assert_allclose(got, want.detach().numpy(), atol=ATOL * scale, rtol=RTOL)


def _torch_grads(fn, x, dy, *params):
    """``(y, dx, *dparams)`` of ``fn(x, *params)`` by torch autograd."""
    xt = _t(x, True)
    pt = [_t(p, p is not None) for p in params]
    y = fn(xt, *pt)
    y.backward(_t(dy))
    return (y, xt.grad) + tuple(None if p is None else p.grad for p in pt)


def _data(rng, shape, pshape, affine):
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    if not affine:
        return x, dy, None, None
    return (x, dy, rng.standard_normal(pshape).astype(np.float32),
            rng.standard_normal(pshape).astype(np.float32))


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape, ns", [((8, 16), (16,)), ((4, 6, 32), (32,)), ((4, 6, 32), (6, 32)),
                                       ((2, 3, 4, 5), (3, 4, 5)), ((3, 5000), (5000,)),
                                       ((1, 9), (9,))])
def test_layer_norm(rng, shape, ns, affine):
    x, dy, w, b = _data(rng, shape, ns, affine)
    y, mean, invstd = fastbn.layer_norm_train(x, ns, w, b)
    dx, dw, db = fastbn.layer_norm_backward(dy, x, mean, invstd, ns, w)
    ref = _torch_grads(lambda x, w, b: F.layer_norm(x, ns, w, b), x, dy, w, b)
    for got, want in zip((y, dx, dw, db), ref):
        _check(got, want, 10 if got is dw or got is db else 1)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape, ns", [((8, 16), (16,)), ((4, 6, 32), (6, 32)), ((2, 700), (700,))])
def test_rms_norm(rng, shape, ns, affine):
    x, dy, w, _ = _data(rng, shape, ns, affine)
    for eps in (None, 1e-6):
        y, invstd = fastbn.rms_norm_train(x, ns, w, eps)
        dx, dw, db = fastbn.rms_norm_backward(dy, x, invstd, ns, w)
        ref = _torch_grads(lambda x, w: F.rms_norm(x, ns, w, eps), x, dy, w)
        for got, want in zip((y, dx, dw), ref):
            _check(got, want, 10 if got is dw else 1)
        assert db is None


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape, groups", [((4, 6, 5), 1), ((4, 6, 5), 6), ((4, 6, 5), 3),
                                           ((2, 8, 4, 4), 4), ((3, 4), 2), ((1, 4, 2, 3, 2), 2)])
def test_group_norm(rng, shape, groups, affine):
    x, dy, w, b = _data(rng, shape, (shape[1],), affine)
    y, mean, invstd = fastbn.group_norm_train(x, groups, w, b)
    dx, dw, db = fastbn.group_norm_backward(dy, x, mean, invstd, groups, w)
    ref = _torch_grads(lambda x, w, b: F.group_norm(x, groups, w, b), x, dy, w, b)
    for got, want in zip((y, dx, dw, db), ref):
        _check(got, want, 10 if got is dw or got is db else 1)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(4, 3, 7), (2, 3, 4, 5), (2, 2, 2, 3, 3), (1, 1, 5)])
def test_instance_norm(rng, shape, affine):
    x, dy, w, b = _data(rng, shape, (shape[1],), affine)
    C = shape[1]
    rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
    rmt, rvt = torch.zeros(C), torch.ones(C)
    y, mean, invstd = fastbn.instance_norm_train(x, w, b, running_mean=rm, running_var=rv,
                                                 momentum=0.2)
    dx, dw, db = fastbn.instance_norm_backward(dy, x, mean, invstd, w)
    ref = _torch_grads(lambda x, w, b: F.instance_norm(x, rmt, rvt, w, b, True, 0.2), x, dy, w, b)
    for got, want in zip((y, dx, dw, db), ref):
        _check(got, want, 10 if got is dw or got is db else 1)
    _check(rm, rmt)
    _check(rv, rvt)
    # eval: the running statistics normalise
    y = fastbn.instance_norm(x, rm, rv, w, b, use_input_stats=False)
    dx, dw, db = fastbn.instance_norm_backward(dy, x, rm, 1 / np.sqrt(rv + 1e-5), w,
                                               batch_stats=False)
    ref = _torch_grads(lambda x, w, b: F.instance_norm(x, rmt, rvt, w, b, False), x, dy, w, b)
    for got, want in zip((y, dx, dw, db), ref):
        _check(got, want, 10 if got is dw or got is db else 1)


def test_large_offset_beats_float32_torch(rng):
    """Statistics in float64: within 1e-5 of the exact result where float32 drifts."""
    x = (1e6 + 1e-2 * rng.standard_normal((4, 512))).astype(np.float32)
    exact = (x - x.astype(np.float64).mean(1, keepdims=True))
    exact /= np.sqrt((exact ** 2).mean(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(fastbn.layer_norm(x, 512), exact, atol=1e-5)
