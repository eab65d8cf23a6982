"""The layers' plain training step (``_train_fast``, ``_backward_fast``): the general path's bits.

The fast path does what the general path does for the usual call with less
bookkeeping; these tests hold it to the functional API's results bit for bit,
and check that anything unusual still gets the general path's behaviour
(its errors, its warnings, nothing half-updated).
"""

import warnings

import numpy as np
import pytest

import fastbn
from fastbn import _backend_cpu, _batchnorm_layers


def _functional_step(x, dy, axis, activation, weight, bias, rm, rv, momentum):
    """The training step through the functional API (the general path's calls)."""
    y, mean, invstd = fastbn.batch_norm_train(x, weight, bias, 1e-5, axis=axis, running_mean=rm,
                                              running_var=rv, momentum=momentum,
                                              activation=activation)
    dx, dw, db = fastbn.batch_norm_backward(dy, x, mean, invstd, weight, axis=axis, bias=bias,
                                            activation=activation)
    return y, dx, dw, db


def _same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", [((6, 5, 3, 4), 1), ((6, 3, 4, 5), -1), ((40, 5), 1)])
@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("affine, momentum", [(True, 0.1), (False, None)])
def test_plain_steps_match_the_functional_api_bit_for_bit(dtype, shape, axis, activation, affine,
                                                          momentum, rng):
    C = shape[axis]
    cls = fastbn.BatchNorm1d if len(shape) == 2 else fastbn.BatchNorm2d
    layer = cls(C, axis=axis, affine=affine, momentum=momentum, activation=activation,
                dtype=dtype)
    if affine:
        layer.weight[...] = rng.uniform(0.5, 2.0, C)
        layer.bias[...] = rng.normal(size=C)
    weight = None if not affine else layer.weight.copy()
    bias = None if not affine else layer.bias.copy()
    rm, rv = layer.running_mean.copy(), layer.running_var.copy()
    sum_dw = sum_db = 0.0
    for step in range(3):
        x = (rng.normal(size=shape) * 3 + 1).astype(dtype)
        dy = rng.normal(size=shape).astype(dtype)
        factor = momentum if momentum is not None else 1.0 / (step + 1)
        y_ref, dx_ref, dw, db = _functional_step(x, dy, axis, activation, weight, bias, rm, rv,
                                                 factor)
        y = layer.forward(x)
        dx = layer.backward(dy)
        assert _same_bits(y, y_ref) and _same_bits(dx, dx_ref)
        assert _same_bits(layer.running_mean, rm) and _same_bits(layer.running_var, rv)
        assert int(layer.num_batches_tracked) == step + 1
        if affine:
            sum_dw, sum_db = sum_dw + dw, sum_db + db
            np.testing.assert_array_equal(layer.grad_weight, sum_dw.astype(dtype))
            np.testing.assert_array_equal(layer.grad_bias, sum_db.astype(dtype))
        else:
            assert getattr(layer, "grad_weight", None) is None


def test_the_plain_step_skips_the_general_path(monkeypatch, rng):
    def general(*args, **kwargs):
        raise AssertionError("the general path ran")
    monkeypatch.setattr(_batchnorm_layers._BatchNorm, "_step", general)
    monkeypatch.setattr(_batchnorm_layers, "batch_norm_backward", general)
    layer = fastbn.BatchNorm2d(4)
    x = rng.normal(size=(3, 4, 2, 2)).astype(np.float32)
    layer.backward(layer.forward(x))
    assert int(layer.num_batches_tracked) == 1


#: Unusual calls, and which general steps they must take: (forward, backward).
UNUSUAL = {"fortran": (True, True), "float16": (True, True), "axis_int64": (True, True),
           "momentum_int": (True, False), "eps_f64": (True, False), "dy_strided": (False, True)}


@pytest.mark.parametrize("change", list(UNUSUAL))
def test_unusual_calls_take_the_general_path_with_the_same_results(change, monkeypatch, rng):
    general = []
    step, backward = _batchnorm_layers._BatchNorm._step, _batchnorm_layers.batch_norm_backward
    monkeypatch.setattr(_batchnorm_layers._BatchNorm, "_step",
                        lambda *a: general.append("forward") or step(*a))
    monkeypatch.setattr(_batchnorm_layers, "batch_norm_backward",
                        lambda *a, **k: general.append("backward") or backward(*a, **k))
    x = rng.normal(size=(5, 3, 4, 2)).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    plain, other = fastbn.BatchNorm2d(3, momentum=1.0), fastbn.BatchNorm2d(3, momentum=1.0)
    y_plain, dx_plain = plain.forward(x), plain.backward(dy)
    assert general == []
    xo, dyo = x, dy
    if change == "fortran":
        xo = np.asfortranarray(x)
    elif change == "float16":
        xo, dyo = x.astype(np.float16), dy.astype(np.float16)
    elif change == "axis_int64":
        other.axis = np.int64(1)
    elif change == "momentum_int":
        other.momentum = 1
    elif change == "eps_f64":
        other.eps = np.float64(1e-5)
    else:
        dyo = np.repeat(dy, 2, axis=0)[::2]
    y, dx = other.forward(xo), other.backward(dyo)
    forward, backward = UNUSUAL[change]
    assert general == ["forward"] * forward + ["backward"] * backward
    tol = 1e-2 if change == "float16" else 0
    np.testing.assert_allclose(y, y_plain, rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, dx_plain, rtol=tol, atol=tol)
    np.testing.assert_allclose(other.running_var, plain.running_var, rtol=tol + 1e-6)
    np.testing.assert_allclose(other.grad_weight, plain.grad_weight, rtol=tol + 1e-6,
                               atol=tol + 1e-6)


def test_a_broken_parameter_is_named_and_nothing_changes(rng):
    layer = fastbn.BatchNorm1d(4)
    layer.weight = np.ones(5, np.float32)
    before = {k: v.copy() for k, v in layer.state_dict().items()}
    with pytest.raises(ValueError, match="weight"):
        layer.forward(rng.normal(size=(8, 4)).astype(np.float32))
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_bad_dy_after_a_plain_forward_is_a_clear_error(rng):
    layer = fastbn.BatchNorm1d(4)
    layer.forward(rng.normal(size=(8, 4)).astype(np.float32))
    with pytest.raises(ValueError, match="dy"):
        layer.backward(np.ones((8, 5), np.float32))
    with pytest.raises(TypeError, match="dy"):
        layer.backward(np.ones((8, 4), np.int32))
    assert layer.grad_weight is None


def test_a_nonfinite_batch_warns_and_leaves_the_running_statistics(rng):
    layer = fastbn.BatchNorm1d(3)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    x[2, 1] = np.nan
    with pytest.warns(RuntimeWarning, match="not finite"):
        layer.forward(x)
    np.testing.assert_array_equal(layer.running_mean, np.zeros(3, np.float32))
    np.testing.assert_array_equal(layer.running_var, np.ones(3, np.float32))
    assert int(layer.num_batches_tracked) == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_compiled_running_update_rounds_like_numpy(dtype, rng):
    rm, rv = rng.normal(size=7).astype(dtype), rng.uniform(1, 2, 7).astype(dtype)
    mean, var = rng.normal(size=7), rng.uniform(0, 3, 7)
    expect = [((1.0 - 0.3) * b.astype(np.float64) + 0.3 * s).astype(dtype) for b, s in ((rm, mean),
                                                                              (rv, var))]
    assert _backend_cpu._compiled_update_fits(rm, rv, mean, var)
    assert _backend_cpu.update_running(rm, rv, mean, var, 0.3)
    assert _same_bits(rm, expect[0]) and _same_bits(rv, expect[1])
    var[4] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert not _backend_cpu.update_running(rm, rv, mean, var, 0.3)
    assert _same_bits(rm, expect[0]) and _same_bits(rv, expect[1])


def test_a_subclass_with_its_own_steps_keeps_them(rng):
    # SyncBatchNorm's statistics are global: a plain step would be this rank's alone.
    calls = []

    class Counted(fastbn.BatchNorm1d):
        def _step(self, *args):
            calls.append("forward")
            return super()._step(*args)

        def _group_backward(self, *args):
            calls.append("backward")
            return super()._group_backward(*args)

    layer = Counted(3)
    layer.backward(layer.forward(rng.normal(size=(6, 3)).astype(np.float32)))
    assert calls == ["forward", "backward"]
