"""Bad input to the row-wise norms: a clear TypeError/ValueError naming the argument, no change."""

import numpy as np
import pytest

import fastbn

X = np.ones((2, 4, 3), np.float32)
W4 = np.ones(4, np.float32)
STATS = (np.zeros((2, 2)), np.ones((2, 2)))

CASES = [
    # layer norm
    (lambda: fastbn.layer_norm(X, 4), ValueError, "normalized_shape"),
    (lambda: fastbn.layer_norm(X, (1, 2, 4, 3)), ValueError, "normalized_shape"),
    (lambda: fastbn.layer_norm(X, ()), ValueError, "normalized_shape"),
    (lambda: fastbn.layer_norm(X, 3.0), TypeError, "normalized_shape"),
    (lambda: fastbn.layer_norm(X, (4, True)), TypeError, "normalized_shape"),
    (lambda: fastbn.layer_norm(X, 3, weight=W4), ValueError, "weight"),
    (lambda: fastbn.layer_norm(X, (4, 3), bias=np.ones(12)), ValueError, "bias"),
    (lambda: fastbn.layer_norm(X, 3, eps=-1.0), ValueError, "eps"),
    (lambda: fastbn.layer_norm(X, 3, eps=float("nan")), ValueError, "eps"),
    (lambda: fastbn.layer_norm(X.astype(np.int32), 3), TypeError, "x"),
    (lambda: fastbn.layer_norm("abc", 3), TypeError, "x"),
    (lambda: fastbn.layer_norm(X, 3, weight=np.ones(3, np.int64)), TypeError, "weight"),
    (lambda: fastbn.layer_norm(np.ones((2, 0), np.float32), 0), ValueError, "normalized_shape"),
    (lambda: fastbn.layer_norm(X, 3, device="tpu"), ValueError, "device"),
    (lambda: fastbn.layer_norm_backward(X[:1], X, np.zeros((2, 4)), np.ones((2, 4)), 3),
     ValueError, "dy"),
    (lambda: fastbn.layer_norm_backward(X, X, np.zeros(2), np.ones((2, 4)), 3), ValueError, "mean"),
    (lambda: fastbn.layer_norm_backward(X, X, np.zeros((2, 4)), np.ones(8), 3), ValueError,
     "invstd"),
    # RMS norm
    (lambda: fastbn.rms_norm(X, 3, eps=-1e-3), ValueError, "eps"),
    (lambda: fastbn.rms_norm(X, 5), ValueError, "normalized_shape"),
    (lambda: fastbn.rms_norm(X, 3, np.ones(4)), ValueError, "weight"),
    (lambda: fastbn.rms_norm_backward(X, X, np.ones(3), 3), ValueError, "invstd"),
    # group norm
    (lambda: fastbn.group_norm(X, 3), ValueError, "num_groups"),
    (lambda: fastbn.group_norm(X, 0), ValueError, "num_groups"),
    (lambda: fastbn.group_norm(X, 2.0), TypeError, "num_groups"),
    (lambda: fastbn.group_norm(X, True), TypeError, "num_groups"),
    (lambda: fastbn.group_norm(X[0, 0], 1), ValueError, "x"),
    (lambda: fastbn.group_norm(X, 2, weight=np.ones(2)), ValueError, "weight"),
    (lambda: fastbn.group_norm(X, 2, bias=np.ones((4, 1))), ValueError, "bias"),
    (lambda: fastbn.group_norm(np.ones((1, 2), np.float32), 2), ValueError, "more than 1 value"),
    (lambda: fastbn.group_norm(np.ones((2, 4, 0), np.float32), 2), ValueError, "no elements"),
    (lambda: fastbn.group_norm_backward(X, X, np.zeros((2, 4)), np.ones((2, 2)), 2), ValueError,
     "mean"),
    (lambda: fastbn.group_norm_backward(X, X, *STATS, 2, weight=np.ones(3)), ValueError, "weight"),
    # instance norm
    (lambda: fastbn.instance_norm(np.ones((2, 4, 1), np.float32)), ValueError, "spatial"),
    (lambda: fastbn.instance_norm(np.ones((2, 4), np.float32)), ValueError, "spatial"),
    (lambda: fastbn.instance_norm(X, use_input_stats=False), ValueError, "running_mean"),
    (lambda: fastbn.instance_norm(X, use_input_stats="yes"), TypeError, "use_input_stats"),
    (lambda: fastbn.instance_norm(X, np.zeros(3), np.ones(4)), ValueError, "running_mean"),
    (lambda: fastbn.instance_norm(X, [0.0] * 4, np.ones(4)), TypeError, "running_mean"),
    (lambda: fastbn.instance_norm(X, np.zeros(4), np.ones(4), momentum=2.0), ValueError,
     "momentum"),
    (lambda: fastbn.instance_norm(X, weight=np.ones(5)), ValueError, "weight"),
    (lambda: fastbn.instance_norm_backward(X, X, np.zeros(4), np.ones(4)), ValueError, "mean"),
    (lambda: fastbn.instance_norm_backward(X, X, np.zeros((2, 4)), np.ones((2, 4)),
                                           batch_stats=1), TypeError, "batch_stats"),
]


@pytest.mark.parametrize("call, exc, fragment", CASES)
def test_bad_input(call, exc, fragment):
    with pytest.raises(exc, match=fragment):
        call()


def test_failed_instance_norm_leaves_running_stats():
    rm, rv = np.full(4, 0.5, np.float32), np.full(4, 2.0, np.float32)
    for kwargs in ({"weight": np.ones(3)}, {"eps": -1.0}, {"momentum": -0.5}):
        with pytest.raises(ValueError):
            fastbn.instance_norm(X, rm, rv, **kwargs)
    with pytest.raises(ValueError, match="running_var"):
        fastbn.instance_norm(X, rm, np.ones(4, np.float32)[::-1].copy()[:3])
    np.testing.assert_array_equal(rm, 0.5)
    np.testing.assert_array_equal(rv, 2.0)


def test_read_only_running_stats_rejected():
    rm = np.zeros(4)
    rm.flags.writeable = False
    with pytest.raises(ValueError, match="running_mean"):
        fastbn.instance_norm(X, rm, np.ones(4))


def test_non_finite_batch_skips_running_update():
    x = X.copy()
    x[0, 1, 0] = np.inf
    rm, rv = np.zeros(4), np.ones(4)
    with pytest.warns(RuntimeWarning, match="not finite"):
        fastbn.instance_norm(x, rm, rv)
    np.testing.assert_array_equal(rm, 0)
    np.testing.assert_array_equal(rv, 1)
