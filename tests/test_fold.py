"""fold_batchnorm against the unfused composition layer -> eval batch norm."""

import copy

import numpy as np
import pytest

from fastbn._fold import fold_batchnorm

try:
    import torch
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is needed for the layer-level checks")

rng = np.random.default_rng(0)


def bn_params(C, affine=True, eps=1e-3):
    return {"running_mean": rng.standard_normal(C),
            "running_var": rng.random(C) + 0.2,
            "weight": rng.standard_normal(C) if affine else None,
            "bias": rng.standard_normal(C) if affine else None,
            "eps": eps}


def bn_eval(y, p, axis=1):
    """Eval batch norm in float64 over channel axis ``axis`` (the oracle)."""
    shape = [1] * y.ndim
    shape[axis] = -1
    C = y.shape[axis]
    w = np.ones(C) if p["weight"] is None else p["weight"]
    b = np.zeros(C) if p["bias"] is None else p["bias"]
    k = w / np.sqrt(p["running_var"] + p["eps"])
    return (y - p["running_mean"].reshape(shape)) * k.reshape(shape) + b.reshape(shape)


# --- without torch: NumPy / SciPy compositions -------------------------------

@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_numpy(with_bias):
    W = rng.standard_normal((6, 4))
    b = rng.standard_normal(6) if with_bias else None
    p = bn_params(6)
    x = rng.standard_normal((5, 4))
    Wf, bf = fold_batchnorm(W, b, p)
    expected = bn_eval(x @ W.T + (0 if b is None else b), p)
    np.testing.assert_allclose(x @ Wf.T + bf, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_conv1d_scipy(groups):
    signal = pytest.importorskip("scipy.signal")
    cin, cout, K, L = 4, 8, 3, 11
    W = rng.standard_normal((cout, cin // groups, K))
    b = rng.standard_normal(cout)
    p = bn_params(cout)
    x = rng.standard_normal((cin, L))

    def conv(W, b):
        ipg, opg = cin // groups, cout // groups
        return np.stack([sum(signal.correlate(x[(o // opg) * ipg + i], W[o, i], "valid")
                             for i in range(ipg)) + b[o] for o in range(cout)])

    Wf, bf = fold_batchnorm(W, b, p, groups=groups)
    np.testing.assert_allclose(conv(Wf, bf), bn_eval(conv(W, b)[None], p)[0], rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_conv_transpose1d_numpy(groups):
    """Transposed convolution written out from its definition (scatter-add)."""
    cin, opg, K, L = 4, 3, 3, 5
    cout = opg * groups
    W = rng.standard_normal((cin, opg, K))
    b = rng.standard_normal(cout)
    p = bn_params(cout)
    x = rng.standard_normal((cin, L))

    def convt(W, b):
        y = np.zeros((cout, L + K - 1)) + b[:, None]
        for i in range(cin):
            g = i // (cin // groups)
            for j in range(opg):
                for t in range(L):
                    y[g * opg + j, t:t + K] += x[i, t] * W[i, j]
        return y

    Wf, bf = fold_batchnorm(W, b, p, transposed=True, groups=groups)
    np.testing.assert_allclose(convt(Wf, bf), bn_eval(convt(W, b)[None], p)[0], rtol=1e-11, atol=1e-11)


def test_layer_like_bn_and_dtype_and_no_mutation():
    class Layer:
        running_mean = rng.standard_normal(3).astype(np.float32)
        running_var = (rng.random(3) + 0.5).astype(np.float32)
        weight, bias, eps = None, None, 1e-5

    W = rng.standard_normal((3, 2, 2, 2)).astype(np.float32)
    W0 = W.copy()
    Wf, bf = fold_batchnorm(W, None, Layer())
    assert Wf.dtype == bf.dtype == np.float32 and Wf.shape == W.shape and bf.shape == (3,)
    np.testing.assert_array_equal(W, W0)
    k = 1.0 / np.sqrt(Layer.running_var.astype(np.float64) + 1e-5)
    np.testing.assert_array_equal(Wf, (W * k[:, None, None, None]).astype(np.float32))
    np.testing.assert_array_equal(bf, (-Layer.running_mean * k).astype(np.float32))


def test_mapping_without_affine_keys_and_default_eps():
    p = {"running_mean": np.zeros(2), "running_var": np.full(2, 4.0 - 1e-5)}
    Wf, bf = fold_batchnorm(np.ones((2, 3)), np.ones(2), p)
    np.testing.assert_allclose(Wf, 0.5)
    np.testing.assert_allclose(bf, 0.5)


# --- bad input -------------------------------------------------------------

BAD = [
    ("int weight", np.ones((2, 3), np.int64), None, {}, {}, TypeError, "weight"),
    ("1-D weight", np.ones(2), None, {}, {}, ValueError, "weight"),
    ("2-D transposed", np.ones((2, 3)), None, {}, {"transposed": True}, ValueError, "weight"),
    ("groups 0", np.ones((2, 3, 1)), None, {}, {"groups": 0}, ValueError, "groups"),
    ("groups float", np.ones((2, 3, 1)), None, {}, {"groups": 1.0}, ValueError, "groups"),
    ("groups bool", np.ones((2, 3, 1)), None, {}, {"groups": True}, ValueError, "groups"),
    ("groups not dividing", np.ones((3, 1, 1)), None, {}, {"groups": 2}, ValueError, "groups"),
    ("linear groups", np.ones((2, 3)), None, {}, {"groups": 2}, ValueError, "groups"),
    ("bias length", np.ones((2, 3)), np.ones(3), {}, {}, ValueError, "bias"),
    ("bias dtype", np.ones((2, 3)), np.ones(2, complex), {}, {}, TypeError, "bias"),
    ("bn channels", np.ones((3, 3)), None, {}, {}, ValueError, "running_mean"),
    ("transposed channels", np.ones((2, 2, 1)), None, {}, {"transposed": True, "groups": 2},
     ValueError, "running_mean"),
    ("missing running_var", np.ones((2, 3)), None, {"running_var": "drop"}, {}, ValueError,
     "running_var"),
    ("running_mean None", np.ones((2, 3)), None, {"running_mean": None}, {}, ValueError,
     "running statistics"),
    ("negative eps", np.ones((2, 3)), None, {"eps": -1.0}, {}, ValueError, "eps"),
    ("bool eps", np.ones((2, 3)), None, {"eps": True}, {}, ValueError, "eps"),
    ("var + eps <= 0", np.ones((2, 3)), None, {"running_var": np.array([-1.0, 1.0])}, {},
     ValueError, "running_var"),
    ("NaN var", np.ones((2, 3)), None, {"running_var": np.array([np.nan, 1.0])}, {},
     ValueError, "running_var"),
    ("string bn weight", np.ones((2, 3)), None, {"weight": np.array(["a", "b"])}, {}, TypeError,
     "bn weight"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input(case):
    _, W, b, change, kwargs, exc, word = case
    p = {"running_mean": np.zeros(2), "running_var": np.ones(2), "weight": None, "bias": None}
    for key, value in change.items():
        if isinstance(value, str) and value == "drop":
            del p[key]
        else:
            p[key] = value
    with pytest.raises(exc, match=word):
        fold_batchnorm(W, b, p, **kwargs)


def test_bad_bn_object():
    with pytest.raises(TypeError, match="bn"):
        fold_batchnorm(np.ones((2, 3)), None, object())


# --- through torch ----------------------------------------------------------

def torch_bn(C, dim, affine=True):
    cls = {0: torch.nn.BatchNorm1d, 1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm2d,
           3: torch.nn.BatchNorm3d}[dim]
    bn = cls(C, eps=1e-3, affine=affine).double().eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(C))
        bn.running_var.copy_(torch.rand(C) + 0.2)
        if affine:
            bn.weight.copy_(torch.randn(C))
            bn.bias.copy_(torch.randn(C))
    return bn


def state(bn):
    d = {k: v.numpy() for k, v in bn.state_dict().items() if k != "num_batches_tracked"}
    return d | {"eps": bn.eps}


def check(layer, bn, x, transposed=False, groups=1):
    """``layer`` with folded parameters must reproduce ``bn(layer(x))``."""
    with torch.no_grad():
        expected = bn(layer(x)).numpy()
        b = None if layer.bias is None else layer.bias.numpy()
        Wf, bf = fold_batchnorm(layer.weight.numpy(), b, state(bn), transposed=transposed,
                                groups=groups)
        fused = copy.deepcopy(layer)
        fused.weight = torch.nn.Parameter(torch.from_numpy(Wf))
        fused.bias = torch.nn.Parameter(torch.from_numpy(bf))
        got = fused(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


@needs_torch
@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("cin,cout,groups", [(4, 6, 1), (4, 6, 2), (6, 6, 6), (3, 9, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_conv(dim, cin, cout, groups, bias):
    torch.manual_seed(dim + cin + cout + groups)
    layer = getattr(torch.nn, f"Conv{dim}d")(cin, cout, 3, groups=groups, bias=bias).double()
    check(layer, torch_bn(cout, dim), torch.randn(2, cin, *[5] * dim, dtype=torch.float64), groups=groups)


@needs_torch
@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("cin,cout,groups", [(4, 6, 1), (4, 6, 2), (6, 6, 6), (6, 3, 3), (2, 8, 2)])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose(dim, cin, cout, groups, bias):
    torch.manual_seed(dim * cin + cout + groups)
    conv = getattr(torch.nn, f"ConvTranspose{dim}d")
    layer = conv(cin, cout, 3, stride=2, groups=groups, bias=bias).double()
    check(layer, torch_bn(cout, dim), torch.randn(2, cin, *[4] * dim, dtype=torch.float64),
          transposed=True, groups=groups)


@needs_torch
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_linear(bias, affine):
    torch.manual_seed(1)
    layer = torch.nn.Linear(5, 7, bias=bias).double()
    check(layer, torch_bn(7, 0, affine), torch.randn(4, 5, dtype=torch.float64))


@needs_torch
def test_float32_close_to_unfused():
    torch.manual_seed(2)
    layer = torch.nn.Conv2d(8, 8, 3, groups=4)
    bn = torch_bn(8, 2).float()
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        expected = bn(layer(x)).numpy()
        Wf, bf = fold_batchnorm(layer.weight.numpy(), layer.bias.numpy(), state(bn), groups=4)
        got = torch.nn.functional.conv2d(x, torch.from_numpy(Wf), torch.from_numpy(bf), groups=4).numpy()
    assert Wf.dtype == bf.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
