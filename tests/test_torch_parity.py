"""Parity with torch.nn.functional.batch_norm and autograd (CI installs torch 2.13)."""

import numpy as np
import pytest
from conftest import LAYOUTS

import fastbn

torch = pytest.importorskip("torch", reason="PyTorch is an optional peer; CI installs it")


def _torch_layout(a, axis):
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, axis, 1)))


@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("shape,axis", LAYOUTS)
def test_training_forward_backward_and_running_stats(rng, shape, axis, activation):
    x = rng.standard_normal(shape).astype(np.float32) * 2 + 0.5
    dy = rng.standard_normal(shape).astype(np.float32)
    C = shape[axis]
    w, b = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
    y, mean, invstd = fastbn.batch_norm_train(x, w, b, axis=axis, running_mean=rm,
                                              running_var=rv, momentum=0.3,
                                              activation=activation)
    dx, dw, db = fastbn.batch_norm_backward(dy, x, mean, invstd, w, axis=axis, bias=b,
                                            activation=activation)

    tx = _torch_layout(x, axis).requires_grad_()
    tw, tb = torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)
    trm, trv = torch.zeros(C), torch.ones(C)
    ty = torch.nn.functional.batch_norm(tx, trm, trv, tw, tb, training=True, momentum=0.3)
    if activation == "relu":
        ty = torch.relu(ty)
    ty.backward(_torch_layout(dy, axis))
    back = lambda t: np.moveaxis(t.detach().numpy(), 1, axis)
    np.testing.assert_allclose(y, back(ty), atol=1e-5)
    np.testing.assert_allclose(rm, trm.numpy(), atol=1e-6)
    np.testing.assert_allclose(rv, trv.numpy(), rtol=1e-5)
    np.testing.assert_allclose(dx, back(tx.grad), atol=1e-5 * max(1, np.abs(dx).max()))
    scale = max(1.0, float(np.abs(dw).max()), float(np.abs(db).max()))
    np.testing.assert_allclose(dw, tw.grad.numpy(), atol=1e-5 * scale)
    np.testing.assert_allclose(db, tb.grad.numpy(), atol=1e-5 * scale)


@pytest.mark.parametrize("shape,axis", LAYOUTS[:5])
def test_eval_forward(rng, shape, axis):
    x = rng.standard_normal(shape).astype(np.float32)
    C = shape[axis]
    rm, rv = rng.standard_normal(C).astype(np.float32), rng.uniform(0.2, 3, C).astype(np.float32)
    w, b = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    y = fastbn.batch_norm(x, rm, rv, w, b, training=False, axis=axis)
    ty = torch.nn.functional.batch_norm(_torch_layout(x, axis), torch.from_numpy(rm),
                                        torch.from_numpy(rv), torch.from_numpy(w),
                                        torch.from_numpy(b), training=False)
    np.testing.assert_allclose(y, np.moveaxis(ty.numpy(), 1, axis), atol=1e-5)
