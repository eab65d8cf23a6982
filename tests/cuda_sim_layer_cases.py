"""The layers on device arrays, against the same layers on NumPy arrays.

Run by ``test_cuda_sim.py`` with ``cuda_sim_cases.py`` (under Numba's CUDA
simulator, or on a GPU), whose autouse fixture makes simulated device arrays
as strict as real ones (no arithmetic, ``!=`` is identity, NumPy ufuncs refuse
them).  Each case runs a layer on device arrays and its twin on the same NumPy
arrays, step by step, and compares what the layer returns (device arrays: y,
dx) and what it keeps on the host whatever the input (the gradients, running
statistics and ``num_batches_tracked``).  Shapes are tiny: the simulator runs
every thread in Python.
"""

import numpy as np
import pytest

# Skips with cuda_sim_cases unless it runs (under the simulator or on a GPU).
from cuda_sim_cases import close, honest_simulator, host  # noqa: F401 (autouse fixture)
from numba import cuda

import fastbn

F32, F64 = np.float32, np.float64
_KEPT = ("grad_weight", "grad_bias", "running_mean", "running_var")


def twins(make, rng):
    """Two identical layers from ``make()``, with random affine parameters."""
    layers = make(), make()
    for name, p in layers[0].named_parameters():
        values = rng.normal(size=p.shape)
        for layer in layers:
            getattr(layer, name)[...] = values
    return layers


def data(rng, shape, dtype, n=2):
    return [(rng.normal(size=shape) * 2.0 + 3.0).astype(dtype) for _ in range(n)]


def assert_same_state(dev, ref, dtype):
    """The device layer's gradients and buffers are host arrays equal to the reference's."""
    tol = 1e-12 if dtype == F64 else 2e-6
    for name in _KEPT:
        got, want = getattr(dev, name, None), getattr(ref, name, None)
        if want is None:
            assert got is None, name
            continue
        assert type(got) is np.ndarray and got.dtype == want.dtype, name
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=name)
    nbt = getattr(ref, "num_batches_tracked", None)
    if nbt is not None:
        assert int(dev.num_batches_tracked) == int(nbt)


def step(dev, ref, x, dy, dtype):
    """Forward and backward of both layers; outputs, input gradients and state compared."""
    close(dev(cuda.to_device(x)), ref(x), dtype)
    close(dev.backward(cuda.to_device(dy)), ref.backward(dy), dtype)
    assert_same_state(dev, ref, dtype)


#: (layer class, x shape, channel axis, dtype): NCHW, channels-last, (N, C).
BATCH_CASES = [(fastbn.BatchNorm2d, (3, 2, 2, 2), 1, F64),
               (fastbn.BatchNorm2d, (2, 2, 2, 3), -1, F32), (fastbn.BatchNorm1d, (5, 3), 1, F64)]


@pytest.mark.parametrize("cls, shape, axis, dtype", BATCH_CASES)
@pytest.mark.parametrize("momentum", [0.3, None])
def test_batch_norm_train_steps(rng, cls, shape, axis, dtype, momentum):
    dev, ref = twins(lambda: cls(shape[axis], momentum=momentum, axis=axis, dtype=dtype), rng)
    for _ in range(2):
        step(dev, ref, *data(rng, shape, dtype), dtype)
    assert int(dev.num_batches_tracked) == 2


@pytest.mark.parametrize("cls, shape, axis, dtype", BATCH_CASES[:2])
@pytest.mark.parametrize("update", [False, True])
def test_batch_norm_eval(rng, cls, shape, axis, dtype, update):
    """Running statistics normalise; ``update_running_stats=True`` still updates them."""
    C = shape[axis]
    dev, ref = twins(lambda: cls(C, axis=axis, dtype=dtype, update_running_stats=update), rng)
    rm, rv = rng.normal(size=C), rng.uniform(0.5, 2.0, C)
    for layer in (dev, ref):
        layer.running_mean[...], layer.running_var[...] = rm, rv
        layer.eval()
    step(dev, ref, *data(rng, shape, dtype), dtype)
    assert int(dev.num_batches_tracked) == int(update)


def test_batch_norm_ghost_batches_with_residual(rng):
    dev, ref = twins(lambda: fastbn.BatchNorm2d(2, dtype=F64, activation="relu",
                                                virtual_batch_size=2), rng)
    x, dy, res = data(rng, (4, 2, 1, 2), F64, 3)
    close(dev(cuda.to_device(x), cuda.to_device(res)), ref(x, res), F64)
    got, want = dev.backward(cuda.to_device(dy)), ref.backward(dy)
    for g, w in zip(got, want):
        close(g, w, F64)
    assert_same_state(dev, ref, F64)
    assert int(dev.num_batches_tracked) == 2


def test_batch_norm_nonfinite_batch_is_skipped(rng):
    """NaN in the batch: a warning, running statistics and count untouched; then a normal step."""
    dev, ref = twins(lambda: fastbn.BatchNorm2d(2, dtype=F64), rng)
    x, dy = data(rng, (2, 2, 2, 2), F64)
    x[0, 1, 0, 0] = np.nan
    for layer, xin in ((dev, cuda.to_device(x)), (ref, x)):
        with pytest.warns(RuntimeWarning, match="not finite"):
            layer(xin)
    np.testing.assert_array_equal(dev.running_mean, 0.0)
    np.testing.assert_array_equal(dev.running_var, 1.0)
    assert int(dev.num_batches_tracked) == 0
    step(dev, ref, *data(rng, (2, 2, 2, 2), F64), F64)
    assert int(dev.num_batches_tracked) == 1


def test_batch_renorm_on_device_is_a_clear_error_that_changes_nothing(rng):
    layer = fastbn.BatchNorm2d(2, dtype=F64, renorm=True)
    before = layer.state_dict()
    with pytest.raises(TypeError, match="renormalization.*CPU"):
        layer(cuda.to_device(data(rng, (2, 2, 2, 2), F64)[0]))
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
    with pytest.raises(ValueError, match="before forward"):
        layer.backward(np.ones((2, 2, 2, 2)))


#: (layer factory of the dtype, x shape, dtype)
NORM_CASES = {
    "layer": (lambda d: fastbn.LayerNorm((2, 3), dtype=d), (3, 2, 3), F64),
    "layer-plain": (lambda d: fastbn.LayerNorm(3, elementwise_affine=False, dtype=d), (2, 3), F32),
    "rms": (lambda d: fastbn.RMSNorm(3, dtype=d), (2, 3), F32),
    "group": (lambda d: fastbn.GroupNorm(2, 4, dtype=d), (2, 4, 3), F32),
    "instance": (lambda d: fastbn.InstanceNorm2d(2, affine=True, dtype=d), (2, 2, 2, 3), F64),
    "instance-running": (lambda d: fastbn.InstanceNorm2d(2, affine=True, track_running_stats=True,
                                                         dtype=d), (2, 2, 2, 3), F32),
    "instance-unbatched": (lambda d: fastbn.InstanceNorm2d(2, track_running_stats=True, dtype=d),
                           (2, 2, 3), F64),
}


@pytest.mark.parametrize("make, shape, dtype", NORM_CASES.values(), ids=NORM_CASES.keys())
def test_norm_layer_train_then_eval(rng, make, shape, dtype):
    dev, ref = twins(lambda: make(dtype), rng)
    for training in (True, False):
        dev.train(training)
        ref.train(training)
        step(dev, ref, *data(rng, shape, dtype), dtype)
