"""A catalogue of bad input: a clear TypeError/ValueError naming the argument, nothing changed."""

import numpy as np
import pytest

import fastbn

X = np.random.default_rng(0).standard_normal((4, 3, 5)).astype(np.float32)


def _buffers():
    return np.zeros(3, np.float32), np.ones(3, np.float32)


TRAIN_CASES = [
    (dict(x=X.astype(np.int32)), TypeError, "x"),
    (dict(x=X.astype(np.complex64)), TypeError, "x"),
    (dict(x=np.array([[object()] * 3] * 2)), TypeError, "x"),
    (dict(x=np.ones(3, np.float32)), ValueError, "x must have at least 2"),
    (dict(x=np.ones((0, 3), np.float32)), ValueError, "empty"),
    (dict(x=np.ones((1, 3), np.float32)), ValueError, "more than 1 value per channel"),
    (dict(x=X, axis=3), ValueError, "axis"),
    (dict(x=X, axis=1.0), TypeError, "axis"),
    (dict(x=X, weight=np.ones(4, np.float32)), ValueError, "weight must have shape \\(3,\\)"),
    (dict(x=X, bias=np.ones((3, 1), np.float32)), ValueError, "bias"),
    (dict(x=X, weight=np.ones(3, np.int64)), TypeError, "weight"),
    (dict(x=X, running_mean=np.zeros(4, np.float32)), ValueError, "running_mean"),
    (dict(x=X, running_var=np.zeros(3, np.int32)), TypeError, "running_var"),
    (dict(x=X, running_var=[1.0, 1.0, 1.0]), TypeError, "running_var"),
    (dict(x=X, eps=-1e-5), ValueError, "eps"),
    (dict(x=X, eps=float("nan")), ValueError, "eps"),
    (dict(x=X, momentum=1.5), ValueError, "momentum"),
    (dict(x=X, momentum=-0.1), ValueError, "momentum"),
    (dict(x=X, momentum=None), ValueError, "momentum"),
    (dict(x=X, activation="gelu"), ValueError, "activation"),
    (dict(x=X, residual=np.ones((4, 3), np.float32)), ValueError, "residual"),
    (dict(x=X, out=np.empty((4, 3, 6), np.float32)), ValueError, "out"),
    (dict(x=X, out=np.empty((4, 3, 5), np.float64)), TypeError, "out"),
    (dict(x=X, out=[0.0]), TypeError, "out"),
    (dict(x=X, device="tpu"), ValueError, "device"),
]


@pytest.mark.parametrize("kwargs,exc,match", TRAIN_CASES)
def test_train_rejects_before_touching_buffers(kwargs, exc, match):
    rm, rv = _buffers()
    kwargs = dict(kwargs)
    kwargs.setdefault("running_mean", rm)
    kwargs.setdefault("running_var", rv)
    x = kwargs.pop("x")
    with pytest.raises(exc, match=match):
        fastbn.batch_norm_train(x, **kwargs)
    assert (rm == 0).all() and (rv == 1).all()


def test_read_only_running_buffer_is_rejected_in_training():
    rm, rv = _buffers()
    rv.flags.writeable = False
    with pytest.raises(ValueError, match="running_var must be writable"):
        fastbn.batch_norm(X, rm, rv, training=True)
    assert (rm == 0).all()


def test_eval_requires_running_stats():
    with pytest.raises(ValueError, match="running_mean and running_var are required"):
        fastbn.batch_norm(X, None, None, training=False)


def test_eval_wrong_channel_count():
    with pytest.raises(ValueError, match="running_mean must have shape \\(3,\\)"):
        fastbn.batch_norm(X, np.zeros(2), np.ones(3))


def test_backward_shape_mismatch():
    _, mean, invstd = fastbn.batch_norm_train(X)
    with pytest.raises(ValueError, match="dy must have the shape of x"):
        fastbn.batch_norm_backward(np.ones((4, 3, 4), np.float32), X, mean, invstd)
    with pytest.raises(ValueError, match="mean must have shape"):
        fastbn.batch_norm_backward(np.ones_like(X), X, mean[:2], invstd)
    with pytest.raises(ValueError, match="output"):
        fastbn.batch_norm_backward(np.ones_like(X), X, mean, invstd, activation="relu",
                                   residual=True)


@pytest.mark.parametrize("axis,ddof,match", [((0, 3), 0, "axis"), (None, 60, "ddof"),
                                             (1, -1, "ddof"), ((1, 1), 0, "repeated")])
def test_moments_errors(axis, ddof, match):
    with pytest.raises(ValueError, match=match):
        fastbn.moments(X, axis=axis, ddof=ddof)


def test_set_num_threads_validates():
    with pytest.raises(ValueError, match="n must be an int"):
        fastbn.set_num_threads(0)
