"""The statistics' numeric core, written once as plain Python.

The CPU backend compiles these with ``numba.njit`` and the CUDA backend with
``numba.cuda.jit(device=True)``, so both merge partial moments with exactly the
same arithmetic.  A partial is ``(count, mean, m2)`` where ``m2`` is the sum of
squared deviations from ``mean`` (Chan, Golub and LeVeque's pairwise form).
"""

import math


def chan_merge(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    """Merge two partial moments; an empty side returns the other unchanged."""
    if n_b == 0.0:
        return n_a, mean_a, m2_a
    if n_a == 0.0:
        return n_b, mean_b, m2_b
    n = n_a + n_b
    delta = mean_b - mean_a
    frac_b = n_b / n
    return n, mean_a + delta * frac_b, m2_a + m2_b + delta * delta * n_a * frac_b


def inverse_std(biased_var, eps):
    """``1 / sqrt(var + eps)``, the factor every normalise step multiplies by."""
    return 1.0 / math.sqrt(biased_var + eps)


def relu(v):
    """ReLU that lets NaN through, like ``torch.relu``."""
    return 0.0 if v < 0.0 else v
