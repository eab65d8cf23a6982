"""The row-wise norms are bitwise reproducible: across kernel paths and thread counts."""

import hashlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import FASTBN_ROOT, SUBPROCESS_CWD, subprocess_env

import fastbn
from fastbn import _config
from fastbn._cpu import rowwise_driver



def _all_results(rng_seed=0):
    """Forward and backward outputs of every op on shapes with few and many rows."""
    rng = np.random.default_rng(rng_seed)
    out = []
    for shape in [(3, 4, 50), (70, 4, 6), (2, 6, 33)]:
        x = (rng.standard_normal(shape) * 3 + 2).astype(np.float32)
        dy = rng.standard_normal(shape).astype(np.float32)
        C = shape[1]
        w, b = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
        wl = rng.standard_normal(shape[2]).astype(np.float32)
        y, m, s = fastbn.layer_norm_train(x, shape[2], wl, wl)
        out += [y, m, s, *fastbn.layer_norm_backward(dy, x, m, s, shape[2], wl)]
        y, s = fastbn.rms_norm_train(x, shape[1:], np.ones(shape[1:], np.float32))
        out += [y, s, *fastbn.rms_norm_backward(dy, x, s, shape[1:], np.ones(shape[1:]))[:2]]
        y, m, s = fastbn.group_norm_train(x, 2, w, b)
        out += [y, m, s, *fastbn.group_norm_backward(dy, x, m, s, 2, w)]
        y, m, s = fastbn.instance_norm_train(x, w, b)
        out += [y, m, s, *fastbn.instance_norm_backward(dy, x, m, s, w)]
    return out


def _digest(arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("chunk", [4096, 8])
def test_pieces_path_equals_whole_rows_path(monkeypatch, chunk):
    """Few long rows are cut into pieces; the result is the same bits as whole rows."""
    monkeypatch.setattr(_config, "CHUNK_ELEMENTS", chunk)
    monkeypatch.setattr(rowwise_driver, "_whole_rows", lambda R, n: True)
    whole = _all_results()
    monkeypatch.setattr(rowwise_driver, "_whole_rows",
                        lambda R, n: R > _config.ROW_BLOCKS)
    pieces = _all_results()
    for a, b in zip(whole, pieces):
        np.testing.assert_array_equal(a, b)
        assert a.tobytes() == b.tobytes()


def test_identical_across_thread_counts():
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{FASTBN_ROOT!r}, {SUBPROCESS_CWD!r}]
        from fastbn import _config
        import test_norms_determinism as t
        for chunk in (4096, 8):
            _config.CHUNK_ELEMENTS = chunk
            print(t._digest(t._all_results()))
    """)
    digests = []
    for threads in ("1", "2"):
        run = subprocess.run([sys.executable, "-c", script], cwd=SUBPROCESS_CWD,
                             env=subprocess_env(NUMBA_NUM_THREADS=threads), capture_output=True,
                             text=True, timeout=600)
        assert run.returncode == 0, run.stderr
        digests.append(run.stdout.split())
    assert len(digests[0]) == 2
    assert digests[0] == digests[1]


def test_repeated_calls_identical():
    assert _digest(_all_results()) == _digest(_all_results())
