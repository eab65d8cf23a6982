"""The compiled eval forward against an independent float64 NumPy oracle."""

import subprocess
import sys

import numpy as np
import pytest

from conftest import SUBPROCESS_CWD, subprocess_env
from fastbn import _config, _inference


def oracle(x3, rm, rv, w, b, eps, relu=False, r3=None):
    """The eval contract, written out per channel: constants in float64, elements in x's dtype."""
    T = x3.dtype.type
    C = x3.shape[1]
    w = np.ones(C) if w is None else w.astype(np.float64)
    b = np.zeros(C) if b is None else b.astype(np.float64)
    k = (1.0 / np.sqrt(rv.astype(np.float64) + eps)) * w
    mean = rm.astype(np.float64)
    m = mean.astype(T)
    dropped = mean - m
    with np.errstate(invalid="ignore"):  # inf - inf in the NaN/inf cases
        shift = np.where(dropped != 0.0, b - dropped * k, b)
        v = (x3 - m[:, None]) * k.astype(T)[:, None] + shift.astype(T)[:, None]
        if r3 is not None:
            v = v + r3
    if relu:
        v = np.where(v < 0, T(0), v)
    return v.astype(x3.dtype)


def float64_formula(x3, rm, rv, w, b, eps):
    """``(x - mean) * invstd * w + b`` evaluated in float64 throughout."""
    k = (1.0 / np.sqrt(rv.astype(np.float64) + eps)) * w.astype(np.float64)
    return (x3.astype(np.float64) - rm.astype(np.float64)[:, None]) * k[:, None] + b[:, None]


def make(shape, dtype, pdtype=None, seed=0, affine=True):
    rng = np.random.default_rng(seed)
    C = shape[1]
    pdtype = pdtype or dtype
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    rm = rng.standard_normal(C).astype(pdtype)
    rv = (rng.random(C) + 0.1).astype(pdtype)
    w = rng.standard_normal(C).astype(pdtype) if affine else None
    b = rng.standard_normal(C).astype(pdtype) if affine else None
    return x, rm, rv, w, b


def run(x, rm, rv, w, b, eps=1e-5, relu=False, r=None, out=None):
    y = np.empty_like(x) if out is None else out
    assert _inference.normalize_eval(x, rm, rv, w, b, eps, relu, r, y) is None
    return y


SHAPES = [(4, 3, 5), (1, 7, 1), (16, 5, 1), (2, 1, 9), (1, 1, 1), (3, 4, 1), (1, 64, 3)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("residual", [False, True])
def test_matches_oracle(shape, dtype, relu, residual):
    x, rm, rv, w, b = make(shape, dtype)
    r = make(shape, dtype, seed=1)[0] if residual else None
    y = run(x, rm, rv, w, b, 1e-3, relu, r)
    np.testing.assert_array_equal(y, oracle(x, rm, rv, w, b, 1e-3, relu, r))


def test_float32_arithmetic_stays_within_float32_rounding_of_float64():
    """The float32 contract rounds a few times, even for a mean 1e4 std from zero."""
    x, rm, rv, w, b = make((8, 16, 33), np.float32, np.float64)
    x = (x * 1e-2 + 1e3).astype(np.float32)
    rm, rv = x.mean(axis=(0, 2), dtype=np.float64), x.var(axis=(0, 2), dtype=np.float64)
    y = run(x, rm, rv, w, b, 0.0)
    want = float64_formula(x, rm, rv, w, b, 0.0)
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-6 * np.abs(want).max())


@pytest.mark.parametrize("dtype,pdtype", [(np.float32, np.float64), (np.float64, np.float32)])
def test_parameter_dtype_may_differ(dtype, pdtype):
    x, rm, rv, w, b = make((3, 4, 6), dtype, pdtype)
    np.testing.assert_array_equal(run(x, rm, rv, w, b), oracle(x, rm, rv, w, b, 1e-5))


@pytest.mark.parametrize("shape", [(5, 3, 7), (6, 4, 1)])
def test_no_affine(shape):
    x, rm, rv, _, _ = make(shape, np.float32, affine=False)
    np.testing.assert_array_equal(run(x, rm, rv, None, None), oracle(x, rm, rv, None, None, 1e-5))


@pytest.mark.parametrize("shape", [(3, 4, 10), (8, 6, 1)])
def test_in_place(shape):
    x, rm, rv, w, b = make(shape, np.float64)
    expected = oracle(x, rm, rv, w, b, 1e-5, True, x)
    y = run(x, rm, rv, w, b, 1e-5, True, x, out=x)  # residual aliases too
    assert y is x
    np.testing.assert_array_equal(x, expected)


def test_read_only_inputs():
    x, rm, rv, w, b = make((2, 3, 4), np.float32)
    r = make((2, 3, 4), np.float32, seed=2)[0]
    for a in (x, rm, rv, w, b, r):
        a.flags.writeable = False
    np.testing.assert_array_equal(run(x, rm, rv, w, b, 1e-5, False, r),
                                  oracle(x, rm, rv, w, b, 1e-5, False, r))


def test_nan_inf_and_relu_propagate_nan():
    x = np.array([[[np.nan, np.inf, -np.inf, -1.0, 2.0, -0.0]]])
    rm, rv, w, b = np.zeros(1), np.ones(1), np.ones(1), np.zeros(1)
    y = run(x, rm, rv, w, b, 0.0, True)
    np.testing.assert_array_equal(y, [[[np.nan, np.inf, 0.0, 0.0, 2.0, -0.0]]])


@pytest.mark.parametrize("shape", [(2, 3, 1000), (300, 7, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_inf_in_vector_loops(shape, dtype):
    x, rm, rv, w, b = make(shape, dtype)
    x.flat[::7] = np.nan
    x.flat[3::11] = np.inf
    x.flat[5::13] = -np.inf
    y = run(x, rm, rv, w, b, 1e-5, True, x)
    np.testing.assert_array_equal(y, oracle(x, rm, rv, w, b, 1e-5, True, x))


def test_large_offset_float32_normalised_in_float64():
    rng = np.random.default_rng(3)
    x = (1e6 + 1e-2 * rng.standard_normal((1, 1, 1000))).astype(np.float32)
    rm = np.array([x.astype(np.float64).mean()], np.float32)
    rv = np.array([x.astype(np.float64).var()], np.float32)
    y = run(x, rm, rv, None, None, 0.0)
    np.testing.assert_array_equal(y, oracle(x, rm, rv, None, None, 0.0))


@pytest.mark.parametrize("shape", [(2, 3, 40000), (3, 20000, 1), (40, 512, 1), (1, 1, 70000)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parallel_bitwise_equals_serial(monkeypatch, shape, dtype):
    """Blocks depend on the shape only; threads never change a result."""
    x, rm, rv, w, b = make(shape, dtype)
    r = make(shape, dtype, seed=4)[0]
    monkeypatch.setattr(_config, "PARALLEL_MIN_ELEMENTS", 1 << 62)
    serial = run(x, rm, rv, w, b, 1e-5, True, r)
    monkeypatch.setattr(_config, "PARALLEL_MIN_ELEMENTS", 1)
    parallel = run(x, rm, rv, w, b, 1e-5, True, r)
    np.testing.assert_array_equal(serial, parallel)
    np.testing.assert_array_equal(serial, oracle(x, rm, rv, w, b, 1e-5, True, r))


def test_parameters_mutated_in_place_take_effect():
    x, rm, rv, w, b = make((2, 3, 4), np.float32)
    run(x, rm, rv, w, b)
    w *= 2
    rm += 1
    np.testing.assert_array_equal(run(x, rm, rv, w, b), oracle(x, rm, rv, w, b, 1e-5))


def test_empty():
    x, rm, rv, w, b = make((0, 3, 4), np.float32)
    assert run(x, rm, rv, w, b).shape == (0, 3, 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 5, 200000])
def test_parallel_copy(dtype, n):
    src = np.arange(n, dtype=dtype)
    dst = np.zeros_like(src)
    _inference.parallel_copy(src, dst)
    np.testing.assert_array_equal(dst, src)


def test_extension_rejects_instead_of_crashing():
    """The caller validates; the extension still never reads out of bounds."""
    from fastbn._ext import _inference as ext
    x, rm, rv, w, b = make((2, 3, 4), np.float32)
    y = np.empty_like(x)
    with pytest.raises(ValueError):
        ext.normalize_eval(x[:, :, ::2], rm, rv, w, b, 1e-5, False, None, y[:, :, :2], 1)
    with pytest.raises(TypeError):
        ext.normalize_eval(x.astype(np.int32), rm, rv, w, b, 1e-5, False, None, y, 1)
    with pytest.raises(ValueError):
        ext.normalize_eval(x, rm, rv, w, b, 1e-5, False, None, y.astype(np.float64), 1)
    with pytest.raises(ValueError):
        ext.normalize_eval(x, rm[:2], rv, w, b, 1e-5, False, None, y, 1)
    with pytest.raises(ValueError):
        ext.normalize_eval(x, rm, rv, w, b, 1e-5, False, x[:1], y, 1)
    y.flags.writeable = False
    with pytest.raises(ValueError):
        ext.normalize_eval(x, rm, rv, w, b, 1e-5, False, None, y, 1)


def test_reports_build():
    assert _inference.unavailable_reason() is None
    assert isinstance(_inference.openmp_enabled(), bool)


def test_import_does_not_import_numba():
    code = ("import sys, numpy as np, fastbn._inference as inf\n"
            "x = np.ones((1, 2, 1), np.float32); p = np.ones(2, np.float32)\n"
            "inf.normalize_eval(x, p, p, p, p, 1e-5, False, None, x)\n"
            "import fastbn\n"
            "fastbn.BatchNorm2d(3).eval()(np.ones((2, 3, 4, 4), np.float32))\n"
            "fastbn.batch_norm(np.ones((5, 3)), np.zeros(3), np.ones(3), activation='relu')\n"
            "assert 'numba' not in sys.modules, sorted(m for m in sys.modules if 'numba' in m)\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=SUBPROCESS_CWD,
                   env=subprocess_env())
