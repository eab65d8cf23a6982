"""BatchNorm1d/2d/3d layers: parity with torch.nn, epilogues, errors."""

import itertools

import numpy as np
import pytest

import fastbn
from oracle import batch_norm_backward_ref, batch_norm_ref, batch_stats_ref

try:
    import torch
except ImportError:  # the parity tests skip; the rest still run
    torch = None


def _torch():
    return pytest.importorskip("torch", reason="torch is needed for the parity tests")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny shapes run faster on one thread (results never depend on the thread count)."""
    torch_threads = torch.get_num_threads() if torch else None
    fastbn.set_num_threads(1)
    if torch:
        torch.set_num_threads(1)
    yield
    fastbn.set_num_threads(None)
    if torch:
        torch.set_num_threads(torch_threads)


#: (class name in fastbn and torch.nn, channel-first shape); C = 3 everywhere.
CASES = [("BatchNorm1d", (8, 3)), ("BatchNorm1d", (4, 3, 5)), ("BatchNorm2d", (4, 3, 3, 4)),
         ("BatchNorm3d", (2, 3, 2, 3, 2))]
MATRIX = list(itertools.product(range(len(CASES)), [True, False], [True, False], [True, False],
                                [0.1, None], [1, -1]))


def _close(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5, err_msg=what)


def _pair(case, affine, track, momentum, axis, rng):
    torch, name = _torch(), CASES[case][0]
    f = getattr(fastbn, name)(3, momentum=momentum, affine=affine, track_running_stats=track,
                              axis=axis)
    t = getattr(torch.nn, name)(3, momentum=momentum, affine=affine, track_running_stats=track)
    if affine:
        w, b = rng.uniform(0.5, 1.5, 3).astype(np.float32), rng.normal(size=3).astype(np.float32)
        f.weight[...], f.bias[...] = w, b
        with torch.no_grad():
            t.weight.copy_(torch.from_numpy(w))
            t.bias.copy_(torch.from_numpy(b))
    return f, t


def _step(f, t, shape, axis, rng, what):
    """One forward/backward on both layers; compares y and dx (channel-first for torch)."""
    x = (rng.normal(size=shape) * 2 + 1).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    to_f = (lambda a: np.ascontiguousarray(np.moveaxis(a, 1, -1))) if axis == -1 else (lambda a: a)
    y = f(to_f(x))
    xt = torch.tensor(x, requires_grad=True)
    yt = t(xt)
    yt.backward(torch.from_numpy(dy))
    dx = f.backward(to_f(dy))
    _close(y, to_f(yt.detach().numpy()), f"y {what}")
    _close(dx, to_f(xt.grad.numpy()), f"dx {what}")


@pytest.mark.parametrize("case,train,affine,track,momentum,axis", MATRIX)
def test_parity_with_torch(case, train, affine, track, momentum, axis):
    """Ten training steps, then (in eval cases) an eval step: outputs, dx, grads, buffers."""
    rng = np.random.default_rng(case)
    shape = CASES[case][1]
    f, t = _pair(case, affine, track, momentum, axis, rng)
    for i in range(10):
        _step(f, t, shape, axis, rng, f"training step {i}")
    if not train:
        f.eval()
        t.eval()
        _step(f, t, shape, axis, rng, "eval")
    if affine:
        _close(f.grad_weight, t.weight.grad.numpy(), "grad_weight")
        _close(f.grad_bias, t.bias.grad.numpy(), "grad_bias")
    else:
        assert f.weight is None and f.grad_weight is None and f.bias is None
    for key, value in t.state_dict().items():
        _close(f.state_dict()[key], value.numpy(), key)
    assert sorted(f.state_dict()) == sorted(t.state_dict())


@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("train", [True, False])
def test_epilogue_matches_torch(activation, train, rng):
    """``act(bn(x) + residual)`` and its gradients (dx, dresidual, dweight, dbias)."""
    f, t = _pair(2, True, True, 0.1, 1, rng)
    f.activation = activation
    for layer in (f, t):
        layer.train(train)
    x = rng.normal(size=(4, 3, 3, 4)).astype(np.float32)
    res = rng.normal(size=x.shape).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    xt, rt = torch.tensor(x, requires_grad=True), torch.tensor(res, requires_grad=True)
    yt = t(xt) + rt
    if activation == "relu":
        yt = torch.relu(yt)
    yt.backward(torch.from_numpy(dy))
    y = f(x, residual=res)
    dx, dres = f.backward(dy)
    _close(y, yt.detach().numpy(), "y")
    _close(dx, xt.grad.numpy(), "dx")
    _close(dres, rt.grad.numpy(), "dresidual")
    _close(f.grad_weight, t.weight.grad.numpy(), "grad_weight")
    _close(f.grad_bias, t.bias.grad.numpy(), "grad_bias")


def test_relu_without_residual_keeps_no_output(rng):
    """The ReLU mask is recomputed from x: no full-size output buffer is kept."""
    f = fastbn.BatchNorm1d(3, activation="relu", dtype=np.float64)
    x = rng.normal(size=(6, 3))
    y = f(x)
    assert f._saved.output is None
    dy = rng.normal(size=x.shape)
    mean, var, _ = batch_stats_ref(x)
    expected = batch_norm_backward_ref(dy, x, f.weight, f.bias, activation="relu")[0]
    np.testing.assert_allclose(f.backward(dy), expected, atol=1e-10)
    np.testing.assert_allclose(y, batch_norm_ref(x, mean, var, activation="relu"), atol=1e-12)


def test_grads_accumulate_until_zero_grad(rng):
    f = fastbn.BatchNorm1d(3, dtype=np.float64)
    x, dy = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    f(x)
    f.backward(dy)
    once = f.grad_weight.copy()
    f.backward(dy)
    np.testing.assert_allclose(f.grad_weight, 2 * once)
    f.zero_grad(set_to_none=False)
    assert (f.grad_weight == 0).all() and (f.grad_bias == 0).all()
    f.zero_grad()
    assert f.grad_weight is None and f.grad_bias is None


def test_eval_backward_matches_finite_differences(rng):
    """Eval mode: the frozen-statistics gradient, checked numerically."""
    f = fastbn.BatchNorm2d(2, dtype=np.float64).eval()
    f.running_mean[...] = [0.3, -1.0]
    f.running_var[...] = [2.0, 0.5]
    f.weight[...] = [1.5, -0.7]
    x, dy = rng.normal(size=(2, 2, 2, 3)), rng.normal(size=(2, 2, 2, 3))
    f(x)
    dx = f.backward(dy)
    from oracle import numerical_grad
    ref = lambda z: batch_norm_ref(z, f.running_mean, f.running_var, f.weight, f.bias)
    np.testing.assert_allclose(dx, numerical_grad(ref, x, dy), atol=1e-7)


def test_reset_and_modes():
    f = fastbn.BatchNorm1d(2, momentum=None)
    f(np.arange(8, dtype=np.float32).reshape(4, 2))
    assert int(f.num_batches_tracked) == 1 and f.training
    assert f.eval() is f and not f.training and f.train() is f and f.training
    f.weight[...] = 3
    f.reset_parameters()
    assert (f.weight == 1).all() and (f.bias == 0).all() and (f.running_mean == 0).all()
    assert (f.running_var == 1).all() and int(f.num_batches_tracked) == 0
    assert f.weight.dtype == np.float32 and f.num_batches_tracked.dtype == np.int64


@pytest.mark.parametrize("cls,shape", [
    (fastbn.BatchNorm1d, (2, 3, 4, 5)), (fastbn.BatchNorm1d, (3,)),
    (fastbn.BatchNorm2d, (2, 3, 4)), (fastbn.BatchNorm2d, (2, 3, 4, 5, 6)),
    (fastbn.BatchNorm3d, (2, 3, 4, 5)),
])
def test_bad_rank_is_a_clear_error(cls, shape):
    f = cls(3)
    with pytest.raises(ValueError, match=cls.__name__ + " expects x"):
        f(np.ones(shape, np.float32))
    assert int(f.num_batches_tracked) == 0 and f._saved is None


def test_wrong_channel_count():
    f = fastbn.BatchNorm2d(3, axis=-1)
    with pytest.raises(ValueError, match="3 channels at axis -1"):
        f(np.ones((2, 3, 4, 5), np.float32))


def test_backward_errors(rng):
    f = fastbn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="before forward"):
        f.backward(np.ones((4, 3), np.float32))
    f(rng.normal(size=(4, 3)).astype(np.float32))
    with pytest.raises(ValueError, match="dy must have the shape"):
        f.backward(np.ones((4, 2), np.float32))
    assert f.grad_weight is None


def test_failed_forward_changes_nothing():
    f = fastbn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        f(np.ones((1, 3), np.float32))
    assert int(f.num_batches_tracked) == 0 and (f.running_var == 1).all() and f._saved is None


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_features=0), "num_features"), (dict(eps=-1.0), "eps"),
    (dict(momentum=1.5), "momentum"), (dict(affine=1), "affine"),
    (dict(axis=1.0), "axis"), (dict(activation="gelu"), "activation"),
    (dict(dtype=np.int32), "dtype"), (dict(device="tpu"), "device"),
    (dict(track_running_stats=False, use_batch_stats=False), "use_batch_stats"),
    (dict(use_batch_stats="yes"), "use_batch_stats"),
])
def test_bad_constructor_arguments(kwargs, match):
    kwargs.setdefault("num_features", 3)
    with pytest.raises((TypeError, ValueError), match=match):
        fastbn.BatchNorm2d(**kwargs)
