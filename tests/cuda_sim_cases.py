"""CUDA kernels under Numba's CUDA simulator, compared with the CPU backend on tiny shapes.

Run by ``test_cuda_sim.py`` in a subprocess with ``NUMBA_ENABLE_CUDASIM=1`` (the
variable must be set before Numba is imported).  Two guards keep the simulator
honest about what a real GPU allows:

* simulated device arrays get the surface of Numba's real ``DeviceNDArray``:
  no arithmetic or comparison (``==`` and ``!=`` are identity), no ``astype``,
  no N-D transpose, reshape only without a copy, no ``None`` in an index; and
  NumPy ufuncs refuse them, as they refuse CuPy arrays and torch CUDA tensors;
* a host NumPy array passed to a kernel fails (it would be copied implicitly).

Tunables are patched small: 4 threads per block, 8-element chunks (and rows of
up to 8 elements in one block), so the block tree, several chunks per channel
and the second merge stage all run.
"""

import os
import warnings

import numpy as np
import pytest

#: "sim" under the simulator (CI), "gpu" on a real GPU (``FASTBN_CUDA_CASES=gpu``).
MODE = "sim" if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else os.environ.get(
    "FASTBN_CUDA_CASES")
if MODE not in ("sim", "gpu"):
    pytest.skip("run by test_cuda_sim.py: with NUMBA_ENABLE_CUDASIM=1, or on a GPU with "
                "FASTBN_CUDA_CASES=gpu", allow_module_level=True)

from numba import cuda  # noqa: E402
from numba.cuda.simulator import kernel as sim_kernel  # noqa: E402
from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray  # noqa: E402

import fastbn  # noqa: E402
from fastbn._cuda import backend as cuda_backend  # noqa: E402
from fastbn._cuda import config  # noqa: E402

_REAL_ATTRS = {"dtype", "strides", "ndim", "size", "flags", "stream"}
_ARITHMETIC = ("__add__", "__sub__", "__mul__", "__truediv__", "__floordiv__", "__mod__",
               "__pow__", "__lt__", "__le__", "__gt__", "__ge__")


def _unsupported(self, *args):
    raise TypeError("Numba device arrays support no arithmetic")


def _getattr(self, name):
    if name == "__array__":   # a real device array copies to the host
        return lambda dtype=None, copy=None: np.array(self._ary, dtype=dtype, copy=True)
    if name in _REAL_ATTRS:
        return getattr(self._ary, name)
    raise AttributeError(f"Numba's DeviceNDArray has no attribute {name!r}")


def _transpose(self, axes=None):
    if axes is not None and tuple(axes) == tuple(range(self.ndim)):
        return self
    if self.ndim != 2:
        raise NotImplementedError("transposing a non-2D DeviceNDArray isn't supported")
    return FakeCUDAArray(np.ascontiguousarray(self._ary.T))


def _reshape(self, *shape):
    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], tuple) else shape
    if shape != self._ary.shape and not self._ary.flags.c_contiguous:
        raise NotImplementedError("operation requires copying")
    return FakeCUDAArray(self._ary.reshape(shape))


def _setitem(self, key, value):
    self._ary[key] = value._ary if isinstance(value, FakeCUDAArray) else value


_GETITEM = FakeCUDAArray.__getitem__


def _getitem(self, key):
    if any(k is None for k in (key if isinstance(key, tuple) else (key,))):
        raise TypeError("Numba's DeviceNDArray cannot add an axis with None")
    return _GETITEM(self, key)


@pytest.fixture(autouse=True)
def honest_simulator(monkeypatch):
    """Device arrays as strict as real ones, small tunables, no host arrays in kernels.

    On a real GPU only the tunables are patched (the arrays are real).
    """
    for name, value in (("THREADS_PER_BLOCK", 4), ("CHUNK_ELEMENTS", 8), ("MAX_TILE_WIDTH", 2),
                        ("ROW_BLOCK_ELEMENTS", 8)):
        monkeypatch.setattr(config, name, value)
    if MODE == "gpu":
        return
    for op in _ARITHMETIC:
        monkeypatch.setattr(FakeCUDAArray, op, _unsupported)
    monkeypatch.setattr(FakeCUDAArray, "__eq__", object.__eq__)
    monkeypatch.setattr(FakeCUDAArray, "__ne__", object.__ne__)
    monkeypatch.setattr(FakeCUDAArray, "__array_ufunc__", None, raising=False)
    monkeypatch.setattr(FakeCUDAArray, "__getitem__", _getitem)
    monkeypatch.setattr(FakeCUDAArray, "__getattr__", _getattr)
    monkeypatch.setattr(FakeCUDAArray, "transpose", _transpose)
    monkeypatch.setattr(FakeCUDAArray, "reshape", _reshape)
    monkeypatch.setattr(FakeCUDAArray, "__setitem__", _setitem)
    launch = sim_kernel.FakeCUDAKernel.__call__

    def checked_launch(self, *args):
        if not self._device:
            host = [type(a).__name__ for a in args if isinstance(a, np.ndarray) and a.ndim]
            assert not host, f"host array passed to kernel {self.fn.__name__}: {host}"
        return launch(self, *args)

    monkeypatch.setattr(sim_kernel.FakeCUDAKernel, "__call__", checked_launch)


#: (shape, axis): runs with several runs per chunk, runs cut into pieces, rows
#: with two column tiles and three row blocks, channels-last of rank 4.
LAYOUTS = [((5, 2, 2), 1), ((1, 2, 11), 1), ((9, 3), 1), ((2, 2, 2, 3), -1)]


def host(a):
    """NumPy copy of a device result (asserting it stayed on the device)."""
    if MODE == "sim":
        kind = FakeCUDAArray
    else:
        from numba.cuda.cudadrv.devicearray import DeviceNDArray as kind
    assert isinstance(a, kind), f"expected a device array, got {type(a).__name__}"
    return a.copy_to_host()


def close(got, want, dtype):
    tol = 1e-12 if np.dtype(dtype) == np.float64 else 2e-6
    np.testing.assert_allclose(host(got), want, rtol=tol, atol=tol)


def data(rng, shape, axis, dtype):
    C = shape[axis]
    x = (rng.normal(size=shape) * 2.0 + 3.0).astype(dtype)
    return x, rng.normal(size=C).astype(dtype), rng.normal(size=C).astype(dtype)


@pytest.mark.parametrize("shape, axis", LAYOUTS)
@pytest.mark.parametrize("dtype, epilogue", [(np.float64, None), (np.float32, "relu"),
                                             (np.float32, "residual")])
def test_train_forward_and_running_update(rng, shape, axis, dtype, epilogue):
    x, w, b = data(rng, shape, axis, dtype)
    res = rng.normal(size=shape).astype(dtype) if epilogue == "residual" else None
    act = "relu" if epilogue else None
    rm, rv = np.zeros(shape[axis], dtype), np.ones(shape[axis], dtype)
    drm, drv = cuda.to_device(rm), cuda.to_device(rv)
    y, mean, invstd = fastbn.batch_norm_train(
        cuda.to_device(x), cuda.to_device(w), cuda.to_device(b), axis=axis, running_mean=drm,
        running_var=drv, momentum=0.3, activation=act,
        residual=None if res is None else cuda.to_device(res))
    want = fastbn.batch_norm_train(x, w, b, axis=axis, running_mean=rm, running_var=rv,
                                   momentum=0.3, activation=act, residual=res)
    for got, ref in zip((y, mean, invstd, drm, drv), want + (rm, rv)):
        close(got, ref, dtype)
    assert host(y).dtype == dtype


@pytest.mark.parametrize("shape, axis", LAYOUTS)
@pytest.mark.parametrize("dtype, epilogue", [(np.float32, None), (np.float64, "residual")])
def test_eval_forward(rng, shape, axis, dtype, epilogue):
    x, w, b = data(rng, shape, axis, dtype)
    rm, rv = rng.normal(size=shape[axis]), rng.uniform(0.5, 2.0, shape[axis])
    res = rng.normal(size=shape).astype(dtype) if epilogue else None
    got = fastbn.batch_norm(cuda.to_device(x), cuda.to_device(rm), rv, w, cuda.to_device(b),
                            axis=axis, activation="relu" if epilogue else None,
                            residual=None if res is None else cuda.to_device(res))
    want = fastbn.batch_norm(x, rm, rv, w, b, axis=axis, activation="relu" if epilogue else None,
                             residual=res)
    close(got, want, dtype)


@pytest.mark.parametrize("shape, axis", LAYOUTS)
@pytest.mark.parametrize("dtype, mode", [(np.float64, "plain"), (np.float32, "relu"),
                                         (np.float64, "residual"), (np.float32, "frozen")])
def test_backward(rng, shape, axis, dtype, mode):
    x, w, b = data(rng, shape, axis, dtype)
    dy = rng.normal(size=shape).astype(dtype)
    act = None if mode in ("plain", "frozen") else "relu"
    res = rng.normal(size=shape).astype(dtype) if mode == "residual" else None
    y, mean, invstd = fastbn.batch_norm_train(x, w, b, axis=axis, activation=act, residual=res)
    kw = dict(axis=axis, bias=b, activation=act, batch_stats=mode != "frozen")
    if mode == "residual":
        kw.update(output=y, residual=True)
    want = fastbn.batch_norm_backward(dy, x, mean, invstd, w, **kw)
    if mode == "residual":
        kw["output"] = cuda.to_device(y)
    kw["bias"] = cuda.to_device(b)
    got = fastbn.batch_norm_backward(cuda.to_device(dy), cuda.to_device(x), cuda.to_device(mean),
                                     cuda.to_device(invstd), cuda.to_device(w), **kw)
    assert len(got) == len(want)
    for g, r in zip(got, want):
        close(g, r, dtype)


#: Chunks longer than a thread's unrolled step (``UNROLL * T`` = 16 elements) with
#: ``CHUNK_ELEMENTS`` 40: grouped runs narrower and wider than ``T`` (27 and 35
#: elements), a run cut into pieces of 40 and 10, 20-row blocks (45 rows).
LONG_CHUNKS = [((9, 2, 3), 1), ((7, 2, 5), 1), ((2, 2, 50), 1), ((45, 3), 1)]


@pytest.mark.parametrize("shape, axis", LONG_CHUNKS)
def test_walks_of_several_unrolled_steps(rng, monkeypatch, shape, axis):
    """Every walk kernel over chunks of whole unrolled steps and a part-filled last one."""
    monkeypatch.setattr(config, "CHUNK_ELEMENTS", 40)
    test_train_forward_and_running_update(rng, shape, axis, np.float32, "residual")
    test_eval_forward(rng, shape, axis, np.float64, None)
    test_backward(rng, shape, axis, np.float32, "relu")
    test_backward(rng, shape, axis, np.float64, "residual")


def test_split_backward_matches_fused(rng):
    """``grad_sums`` then ``input_grad`` (what SyncBatchNorm runs) equals ``backward``."""
    x, w, b = data(rng, (3, 2, 5), 1, np.float64)
    dy = rng.normal(size=x.shape)
    be = cuda_backend
    x3, dy3, dx_fused, dx_split = (be.as_input(cuda.to_device(a), "a")
                                   for a in (x, dy, np.zeros_like(x), np.zeros_like(x)))
    mean, invstd = be.vector64(x.mean(axis=(0, 2)), 2, 0.0), be.vector64(np.ones(2), 2, 1.0)
    w64, b64 = be.vector64(w, 2, 1.0), be.vector64(b, 2, 0.0)
    fused = be.backward(dy3, x3, None, mean, invstd, w64, b64, be.MASK_RECOMPUTE, True, dx_fused,
                        None)
    sums = be.grad_sums(dy3, x3, None, mean, invstd, w64, b64, be.MASK_RECOMPUTE)
    be.input_grad(dy3, x3, None, mean, invstd, w64, b64, be.MASK_RECOMPUTE,
                  sums[0].copy_to_host(), sums[1].copy_to_host(), 15, True, dx_split, None)
    np.testing.assert_array_equal(dx_split.copy_to_host(), dx_fused.copy_to_host())
    for s, f in zip(sums, fused):
        np.testing.assert_array_equal(s.copy_to_host(), f.copy_to_host())


@pytest.mark.parametrize("axis, ddof", [(None, 0), ((0, 2), 1), (2, 0)])
def test_moments(rng, axis, ddof):
    # Fortran order: the kept axes (0, 1) are in reverse memory order for axis=2.
    x = np.asfortranarray(rng.normal(size=(3, 2, 4)) + 5.0)
    mean, var = fastbn.moments(cuda.to_device(x), axis=axis, ddof=ddof)
    want_mean, want_var = fastbn.moments(x, axis=axis, ddof=ddof)
    if axis is None:
        assert np.isscalar(mean) and np.isscalar(var)
        np.testing.assert_allclose([mean, var], [want_mean, want_var], rtol=1e-12)
    else:
        close(mean, want_mean, np.float64)
        close(var, want_var, np.float64)


def test_layouts_without_copy_and_with(rng):
    """F-ordered input maps to a view; strided and reversed slices are copied on the device."""
    x = rng.normal(size=(2, 3, 8))
    w = rng.normal(size=3)
    for dev, ref in ((cuda.to_device(np.asfortranarray(x)), x),
                     (cuda.to_device(x)[:, :, ::2], x[:, :, ::2]),
                     (cuda.to_device(x)[:, ::-1, ::-2], x[:, ::-1, ::-2])):
        y, mean, _ = fastbn.batch_norm_train(dev, w)
        want, want_mean, _ = fastbn.batch_norm_train(ref, w)
        close(y, want, np.float64)
        close(mean, want_mean, np.float64)
    y = fastbn.batch_norm_train(cuda.to_device(np.asfortranarray(x)), w)[0]
    assert host(y).flags.f_contiguous, "output laid out like the input"


def test_float16_computes_in_float32(rng):
    x, w, b = data(rng, (4, 3, 2), 1, np.float16)
    y, mean, _ = fastbn.batch_norm_train(cuda.to_device(x), w, b)
    want, want_mean, _ = fastbn.batch_norm_train(x, w, b)
    assert host(y).dtype == np.float16
    np.testing.assert_allclose(host(y).astype(np.float64), want.astype(np.float64), atol=2e-3)
    close(mean, want_mean, np.float32)


def test_nonfinite_batch_skips_running_update(rng):
    x = rng.normal(size=(4, 2, 3))
    x[1, 0, 2] = np.nan
    rm, rv = cuda.to_device(np.zeros(2)), cuda.to_device(np.ones(2))
    with pytest.warns(RuntimeWarning, match="not finite"):
        y, _, _ = fastbn.batch_norm_train(cuda.to_device(x), running_mean=rm, running_var=rv)
    np.testing.assert_array_equal(host(rm), [0.0, 0.0])
    np.testing.assert_array_equal(host(rv), [1.0, 1.0])
    assert np.isnan(host(y)[:, 0]).all() and np.isfinite(host(y)[:, 1]).all()


def test_host_running_buffers_are_updated(rng):
    x = rng.normal(size=(6, 2))
    rm, rv = np.zeros(2), np.ones(2)
    fastbn.batch_norm_train(cuda.to_device(x), running_mean=rm, running_var=rv, momentum=0.5)
    want_rm, want_rv = np.zeros(2), np.ones(2)
    fastbn.batch_norm_train(x, running_mean=want_rm, running_var=want_rv, momentum=0.5)
    np.testing.assert_allclose(rm, want_rm, rtol=1e-12)
    np.testing.assert_allclose(rv, want_rv, rtol=1e-12)


def test_reproducible_bitwise(rng):
    x = cuda.to_device(rng.normal(size=(3, 2, 6)) * 1e3 + 1e6)
    first = [host(a) for a in fastbn.batch_norm_train(x)]
    second = [host(a) for a in fastbn.batch_norm_train(x)]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_dispatch(rng):
    """device="cuda" copies host input up; device="cpu" brings a device array down."""
    x = rng.normal(size=(4, 3))
    rm, rv = np.zeros(3), np.ones(3)
    on_device = fastbn.batch_norm(x, rm, rv, device="cuda")
    on_cpu = fastbn.batch_norm(cuda.to_device(x), rm, rv, device="cpu")
    assert isinstance(on_cpu, np.ndarray)
    close(on_device, on_cpu, np.float64)


def test_out_argument_receives_result(rng):
    x = rng.normal(size=(4, 3))
    out = np.empty_like(x)
    got = fastbn.batch_norm(cuda.to_device(x), np.zeros(3), np.ones(3), out=out)
    assert got is out
    np.testing.assert_allclose(out, fastbn.batch_norm(x, np.zeros(3), np.ones(3)), rtol=1e-12)


def test_threads_per_block_must_be_power_of_two(monkeypatch):
    monkeypatch.setattr(config, "THREADS_PER_BLOCK", 6)
    with pytest.raises(ValueError, match="power of two"):
        fastbn.moments(cuda.to_device(np.ones((2, 2))), axis=0)


def test_no_warnings_on_the_normal_path(rng):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastbn.batch_norm_train(cuda.to_device(rng.normal(size=(3, 2, 2))))
