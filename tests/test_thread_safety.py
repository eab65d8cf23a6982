"""One set of arrays and parameters shared by many threads in eval mode."""

import sys
import threading
import time

import numpy as np
import pytest

from fastbn import _config, _inference

THREADS, CALLS = 8, 200


def params(C, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(C).astype(np.float32), (rng.random(C) + 0.5).astype(np.float32),
            rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32))


@pytest.mark.parametrize("shape", [(1, 512, 1), (4, 8, 64), (2, 64, 1024)])
def test_shared_inputs_every_result_equals_serial(shape):
    """8 threads x 200 calls on shared inputs (the largest shape runs parallel
    inside each call too); every output equals the single-threaded one."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    r = rng.standard_normal(shape).astype(np.float32)
    p = params(shape[1])
    expected = np.empty_like(x)
    _inference.normalize_eval(x, *p, 1e-5, True, r, expected)
    mismatches = []
    barrier = threading.Barrier(THREADS)

    def worker():
        y = np.empty_like(x)
        barrier.wait()
        for _ in range(CALLS):
            y.fill(np.nan)
            _inference.normalize_eval(x, *p, 1e-5, True, r, y)
            if not np.array_equal(y, expected):
                mismatches.append(y.copy())

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not mismatches


def test_gil_is_released_during_the_call(monkeypatch):
    """While a worker is inside ``normalize_eval`` the main thread runs Python.

    The switch interval is set far above the calls' total duration, so the
    worker can never be forced off the GIL: the main thread gets to run inside
    a call only if the call itself released it.  No timing is asserted.
    """
    monkeypatch.setattr(_config, "PARALLEL_MIN_ELEMENTS", 1 << 62)  # serial calls
    x = np.ones((1, 1, 1 << 22), np.float32)
    y = np.empty_like(x)
    p = params(1)
    started = threading.Event()
    spans = []

    def worker():
        started.set()
        for _ in range(10):
            t0 = time.perf_counter()
            _inference.normalize_eval(x, *p, 1e-5, False, None, y)
            spans.append((t0, time.perf_counter()))

    old = sys.getswitchinterval()
    sys.setswitchinterval(30.0)
    try:
        t = threading.Thread(target=worker)
        t.start()
        started.wait()
        seen = time.perf_counter()  # needs the GIL
        t.join()
    finally:
        sys.setswitchinterval(old)
    assert any(t0 < seen < t1 for t0, t1 in spans)
