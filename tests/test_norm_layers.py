"""LayerNorm, GroupNorm, InstanceNorm1d/2d/3d and RMSNorm layers: torch parity and state."""

import numpy as np
import pytest

import fastbn

torch = pytest.importorskip("torch", reason="torch is needed for the layer parity checks")
nn = torch.nn

ATOL = RTOL = 1e-5


def _pair(name, *args, **kwargs):
    """The fastbn layer and its torch twin with the same random affine parameters."""
    ours, theirs = getattr(fastbn, name)(*args, **kwargs), getattr(nn, name)(*args, **kwargs)
    rng = np.random.default_rng(7)
    state = {k: v.numpy() for k, v in theirs.state_dict().items()}
    for key in ("weight", "bias"):
        if key in state:
            state[key] = rng.standard_normal(state[key].shape).astype(np.float32)
    ours.load_state_dict(state)
    theirs.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
    return ours, theirs


def _step(ours, theirs, x, dy):
    """One forward/backward of both; compares y and dx."""
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    yt.backward(torch.tensor(dy))
    y = ours.forward(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(ours.backward(dy), xt.grad.numpy(), atol=ATOL, rtol=RTOL)


def _compare_state(ours, theirs):
    want = {k: v.numpy() for k, v in theirs.state_dict().items()}
    got = ours.state_dict()
    assert list(got) == list(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=ATOL, rtol=RTOL)
    for name, p in theirs.named_parameters():
        if p.grad is None:
            assert getattr(ours, "grad_" + name) is None
        else:
            np.testing.assert_allclose(getattr(ours, "grad_" + name), p.grad.numpy(),
                                       atol=10 * ATOL, rtol=RTOL)


CONFIGS = [
    ("LayerNorm", (8,), {}, (4, 3, 8)),
    ("LayerNorm", ((3, 8),), {"bias": False}, (4, 3, 8)),
    ("LayerNorm", (8,), {"elementwise_affine": False}, (5, 8)),
    ("RMSNorm", (8,), {}, (4, 3, 8)),
    ("RMSNorm", ((3, 8),), {"eps": 1e-6}, (2, 3, 8)),
    ("GroupNorm", (2, 6), {}, (3, 6, 4, 4)),
    ("GroupNorm", (6, 6), {"affine": False}, (2, 6, 5)),
    ("GroupNorm", (1, 6), {}, (1, 6, 2, 2, 2)),
    ("InstanceNorm1d", (3,), {}, (4, 3, 7)),
    ("InstanceNorm1d", (3,), {"affine": True}, (3, 7)),
    ("InstanceNorm2d", (3,), {"affine": True, "track_running_stats": True}, (2, 3, 4, 5)),
    ("InstanceNorm2d", (3,), {"affine": True, "track_running_stats": True, "momentum": None},
     (2, 3, 4, 5)),
    ("InstanceNorm3d", (2,), {"track_running_stats": True}, (2, 2, 3, 2, 2)),
]


@pytest.mark.parametrize("name, args, kwargs, shape", CONFIGS)
def test_torch_parity_train_then_eval(rng, name, args, kwargs, shape):
    ours, theirs = _pair(name, *args, **kwargs)
    for _ in range(2):      # gradients accumulate across steps
        x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
        _step(ours, theirs, x, rng.standard_normal(shape).astype(np.float32))
    _compare_state(ours, theirs)
    ours.eval()
    theirs.eval()
    ours.zero_grad()
    theirs.zero_grad()
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    _step(ours, theirs, x, rng.standard_normal(shape).astype(np.float32))
    _compare_state(ours, theirs)


def test_state_dict_from_torch_loads_as_is():
    theirs = nn.InstanceNorm2d(4, affine=True, track_running_stats=True)
    theirs(torch.randn(2, 4, 3, 3))
    ours = fastbn.InstanceNorm2d(4, affine=True, track_running_stats=True)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    np.testing.assert_array_equal(ours.running_var, theirs.running_var.numpy())


@pytest.mark.parametrize("make", [
    lambda: fastbn.LayerNorm((2, 3)), lambda: fastbn.GroupNorm(2, 4), lambda: fastbn.RMSNorm(3),
    lambda: fastbn.InstanceNorm1d(4, affine=True, track_running_stats=True)])
def test_save_load_roundtrip(tmp_path, rng, make):
    layer, fresh = make(), make()
    for name, value in layer.state_dict().items():
        if value.dtype.kind == "f":
            getattr(layer, name)[...] = rng.standard_normal(value.shape)
    path = tmp_path / "layer.npz"
    layer.save(path)
    fresh.load(path)
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(getattr(fresh, name), value)
        assert not np.array_equal(value, make().state_dict()[name]) or name == "num_batches_tracked"


def test_grads_accumulate_and_zero(rng):
    layer = fastbn.LayerNorm(5)
    x, dy = rng.standard_normal((3, 5)).astype(np.float32), np.ones((3, 5), np.float32)
    layer(x)
    layer.backward(dy)
    first = layer.grad_weight.copy()
    layer(x)
    layer.backward(dy)
    np.testing.assert_allclose(layer.grad_weight, 2 * first, rtol=1e-6)
    np.testing.assert_allclose(layer.grad_bias, 6.0, rtol=1e-6)
    layer.zero_grad()
    assert layer.grad_weight is None and layer.grad_bias is None


def test_backward_uses_parameters_of_the_forward(rng):
    layer = fastbn.GroupNorm(2, 4)
    layer.weight[...] = 2.0
    x, dy = rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 4, 3))
    layer(x)
    layer.weight[...] = 5.0
    _, mean, invstd = fastbn.group_norm_train(x, 2, np.full(4, 2.0))
    want = fastbn.group_norm_backward(dy, x, mean, invstd, 2, np.full(4, 2.0))[0]
    np.testing.assert_array_equal(layer.backward(dy), want)


def test_float64_layer(rng):
    layer = fastbn.RMSNorm(4, dtype=np.float64)
    x = rng.standard_normal((2, 4))
    assert layer(x).dtype == np.float64 and layer.weight.dtype == np.float64


@pytest.mark.parametrize("make, x, match", [
    (lambda: fastbn.LayerNorm(4), np.ones((2, 5), np.float32), "normalized_shape"),
    (lambda: fastbn.GroupNorm(2, 4), np.ones((2, 6, 3), np.float32), "4 channels"),
    (lambda: fastbn.InstanceNorm2d(3), np.ones((2, 3), np.float32), "4-D"),
    (lambda: fastbn.InstanceNorm1d(3, affine=True), np.ones((2, 4, 5), np.float32), "3 channels"),
    (lambda: fastbn.InstanceNorm1d(3), np.ones((2, 3, 1), np.float32), "spatial"),
])
def test_forward_errors_leave_layer_unchanged(make, x, match):
    layer = make()
    before = layer.state_dict()
    with pytest.raises(ValueError, match=match):
        layer(x)
    with pytest.raises(ValueError, match="before forward"):
        layer.backward(x)
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.parametrize("make, args", [
    (fastbn.GroupNorm, (3, 4)), (fastbn.GroupNorm, (0, 4)), (fastbn.LayerNorm, ((),)),
    (fastbn.LayerNorm, (0,)), (fastbn.InstanceNorm1d, (0,)), (fastbn.RMSNorm, (4, -1.0)),
    (fastbn.InstanceNorm2d, (3, 1e-5, 1.5)),
])
def test_bad_construction(make, args):
    with pytest.raises(ValueError):
        make(*args)


def test_num_features_mismatch_warns_without_affine():
    with pytest.warns(UserWarning, match="channels"):
        fastbn.InstanceNorm1d(5)(np.ones((2, 3, 4), np.float32))


def test_dy_shape_checked(rng):
    layer = fastbn.InstanceNorm1d(3)
    layer(rng.standard_normal((3, 6)))
    with pytest.raises(ValueError, match="dy"):
        layer.backward(np.ones((1, 3, 6)))
