"""Bitwise-identical results across runs, thread counts and kernel decompositions."""

import hashlib
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import SUBPROCESS_CWD, subprocess_env

import fastbn
from fastbn import _config

CASES = [((16, 12, 40, 40), 1), ((8, 3, 70, 70), 1), ((9, 40, 6, 5), -1), ((5000, 33), 1),
         ((2, 2, 20000), 1)]

_DIGEST = textwrap.dedent("""
    import hashlib, json, sys
    import numpy as np
    import fastbn
    out = {}
    for shape, axis in json.loads(sys.argv[1]):
        rng = np.random.default_rng(7)
        x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
        dy = rng.standard_normal(shape).astype(np.float32)
        C = shape[axis]
        w = rng.standard_normal(C).astype(np.float32)
        b = rng.standard_normal(C).astype(np.float32)
        y, mean, invstd = fastbn.batch_norm_train(x, w, b, axis=axis, activation="relu")
        grads = fastbn.batch_norm_backward(dy, x, mean, invstd, w, axis=axis, bias=b,
                                           activation="relu")
        h = hashlib.sha256()
        for a in (y, mean, invstd) + grads + fastbn.moments(x, axis=0):
            h.update(np.ascontiguousarray(a).tobytes())
        out[str(shape)] = h.hexdigest()
    print(json.dumps(out))
""")


def _digests(threads):
    res = subprocess.run([sys.executable, "-c", _DIGEST, json.dumps(CASES)],
                         env=subprocess_env(NUMBA_NUM_THREADS=str(threads)), cwd=SUBPROCESS_CWD,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_bitwise_identical_across_thread_counts():
    one, two = _digests(1), _digests(2)
    assert one == two


def _run_all(x, dy, w, axis):
    y, mean, invstd = fastbn.batch_norm_train(x, w, axis=axis)
    grads = fastbn.batch_norm_backward(dy, x, mean, invstd, w, axis=axis)
    return [y, mean, invstd, *grads]


@pytest.mark.parametrize("shape,axis", CASES[:3])
def test_repeated_runs_and_decompositions_identical(rng, shape, axis, monkeypatch):
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal(shape[axis]).astype(np.float32)
    first = _run_all(x, dy, w, axis)
    again = _run_all(x, dy, w, axis)
    # Force the chunk-parallel decomposition instead of one-channel-per-thread.
    monkeypatch.setattr(_config, "CHANNELS_PER_THREAD", 10**9)
    fastbn.set_num_threads(1 if fastbn.get_num_threads() > 1 else None)
    try:
        other = _run_all(x, dy, w, axis)
    finally:
        fastbn.set_num_threads(None)
    for a, b, c in zip(first, again, other):
        assert hashlib.sha256(a.tobytes()).digest() == hashlib.sha256(b.tobytes()).digest()
        np.testing.assert_array_equal(a, c)
