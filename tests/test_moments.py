"""``fastbn.moments`` against NumPy's mean/var over the same axes."""

import numpy as np
import pytest

import fastbn


@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2), (0, 2, 3), (1, 3), (0, 1, 2, 3)])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("ddof", [0, 1])
def test_moments_match_numpy(rng, axis, order, ddof):
    x = np.asarray(rng.standard_normal((3, 4, 5, 6)) * 5 + 1, order=order)
    mean, var = fastbn.moments(x, axis=axis, ddof=ddof)
    np.testing.assert_allclose(mean, x.mean(axis=axis), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(var, x.var(axis=axis, ddof=ddof), rtol=1e-12)
    assert np.shape(mean) == np.shape(x.mean(axis=axis))


def test_moments_float32_never_less_accurate(rng):
    x = (1e4 + rng.standard_normal((64, 3, 100))).astype(np.float32)
    mean, var = fastbn.moments(x, axis=(0, 2))
    exact = x.astype(np.float64)
    assert mean.dtype == np.float32
    np.testing.assert_allclose(var, exact.var(axis=(0, 2)), rtol=1e-6)
    np.testing.assert_allclose(mean, exact.mean(axis=(0, 2)), rtol=1e-7)
