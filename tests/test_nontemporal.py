"""Non-temporal output stores (``fastbn._cpu._nontemporal``) change where bits go, never the bits.

The driver uses them only for outputs past ``_config.NONTEMPORAL_MIN_BYTES``;
here the threshold is patched to 0 so that small arrays take that path, with
outputs that start off a cache-line boundary and runs that end in a partial
buffer, in both decompositions of the channel-runs kernels and in the row
kernels' normalise pass (a row block's flat span, cut at tile boundaries).
"""

import numpy as np
import pytest

import fastbn
from fastbn import _config
from fastbn._cpu import _jit, _nontemporal

from oracle import (batch_norm_backward_ref, batch_norm_train_ref, group_norm_backward_ref,
                    group_norm_ref, layer_norm_backward_ref, layer_norm_ref)

#: Runs of 700 elements: an unaligned head, two whole buffers and a tail.
SHAPE = (3, 4, 700)
#: Row kernels (runs of 3): with the blocking patched below, rows of 15
#: elements in 510-element tiles, three row blocks of 68, 68 and 14 rows,
#: each but the last ending in rows past its last whole tile.
ROWS_SHAPE = (150, 5, 3)
EPILOGUES = [(None, False), ("relu", False), ("relu", True)]


def _misaligned_empty(shape, dtype, offset):
    """An empty C-contiguous array whose data starts ``offset`` bytes past a line boundary.

    An offset that is not a multiple of the item size makes an unaligned view
    (``flags.aligned`` False), which must still work: written directly.
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + 2 * _jit.LINE_BYTES, np.uint8)
    skip = -raw.ctypes.data % _jit.LINE_BYTES + offset
    return raw[skip:skip + nbytes].view(dtype).reshape(shape)


def _train_and_backward(x, dy, w, b, res, mask, offset):
    y = _misaligned_empty(x.shape, x.dtype, offset)
    _, mean, invstd = fastbn.batch_norm_train(x, w, b, residual=res, activation=mask, out=y)
    dx = _misaligned_empty(x.shape, x.dtype, offset)
    grads = fastbn.batch_norm_backward(dy, x, mean, invstd, w, bias=b, activation=mask,
                                       output=y if res is not None else None,
                                       residual=res is not None, out=dx)
    return (y, mean, invstd) + tuple(grads)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mask,with_residual", EPILOGUES)
@pytest.mark.parametrize("shape, slab_bytes", [(SHAPE, 1 << 30), (SHAPE, 0), (ROWS_SHAPE, 0)],
                         ids=["per-channel", "per-chunk", "rows"])
def test_nontemporal_stores_give_the_same_bits(rng, monkeypatch, dtype, mask, with_residual,
                                               shape, slab_bytes):
    monkeypatch.setattr(_config, "SLAB_CACHE_BYTES", slab_bytes)
    monkeypatch.setattr(_config, "ROW_BLOCK_ELEMENTS", 1024)
    monkeypatch.setattr(_config, "ROW_BLOCK_MIN_TILES", 1)
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal(shape[1]).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    res = rng.standard_normal(shape).astype(dtype) if with_residual else None
    monkeypatch.setattr(_config, "NONTEMPORAL_MIN_BYTES", 1 << 62)
    direct = _train_and_backward(x, dy, w, b, res, mask, 0)
    monkeypatch.setattr(_config, "NONTEMPORAL_MIN_BYTES", 0)
    for offset in (0, 8, 24, 2):
        streamed = _train_and_backward(x, dy, w, b, res, mask, offset)
        assert len(streamed) == len(direct)
        for got, want in zip(streamed, direct):
            np.testing.assert_array_equal(got, want)
    ref_y = batch_norm_train_ref(x, w, b, residual=res, activation=mask)[0]
    ref_dx = batch_norm_backward_ref(dy, x, w, b, residual=res, activation=mask)[0]
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(streamed[0], ref_y, rtol=tol, atol=tol)
    np.testing.assert_allclose(streamed[3], ref_dx, rtol=tol, atol=tol)


@pytest.mark.parametrize("frozen", [False, True])
def test_nontemporal_backward_with_batch_or_frozen_statistics(rng, monkeypatch, frozen):
    """Frozen statistics (dx = a * g, the eval formula's backward) through the writer too."""
    x = rng.standard_normal(SHAPE).astype(np.float32)
    dy = rng.standard_normal(SHAPE).astype(np.float32)
    _, mean, invstd = fastbn.batch_norm_train(x)
    results = []
    for threshold in (1 << 62, 0):
        monkeypatch.setattr(_config, "NONTEMPORAL_MIN_BYTES", threshold)
        dx = _misaligned_empty(SHAPE, np.float32, 20)
        results.append(fastbn.batch_norm_backward(dy, x, mean, invstd, out=dx,
                                                  batch_stats=not frozen)[0])
    np.testing.assert_array_equal(results[0], results[1])
    ref_dx = batch_norm_backward_ref(dy, x, batch_stats=not frozen, mean=mean,
                                     var=1.0 / invstd**2 - 1e-5)[0]
    np.testing.assert_allclose(results[1], ref_dx, rtol=1e-4, atol=1e-4)


def test_driver_asks_for_nontemporal_stores_by_output_size(monkeypatch):
    monkeypatch.setattr(_config, "NONTEMPORAL_MIN_BYTES", 4096)
    assert _nontemporal.wanted_for(np.empty(1024, np.float32))
    assert not _nontemporal.wanted_for(np.empty(1023, np.float32))


def test_python_fallbacks_store_like_the_compiled_ones():
    """What ``NUMBA_DISABLE_JIT=1`` runs: a heap buffer and an ordinary copy."""
    out = np.zeros(40)
    buf = _jit.stack_buffer(out, 16)
    assert buf.shape == (16,) and buf.dtype == out.dtype
    buf[:] = np.arange(16)
    _nontemporal.store_lines_nontemporal(buf, out, 8)
    np.testing.assert_array_equal(out[8:24], np.arange(16))
    assert not out[:8].any() and not out[24:].any()
    _nontemporal.store_fence()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("whole_rows", [True, False], ids=["whole-rows", "pieces"])
def test_row_norms_nontemporal_stores_give_the_same_bits(rng, monkeypatch, dtype, whole_rows):
    """Layer norm (per-element affine) and group norm (per-segment affine) rows of 700 elements."""
    from fastbn._cpu import rowwise_driver
    monkeypatch.setattr(rowwise_driver, "_whole_rows", lambda R, nthreads: whole_rows)
    x = (rng.standard_normal((6, 4, 700)) * 2 + 3).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    w_ln, b_ln = (rng.standard_normal(700).astype(dtype) for _ in range(2))
    w_gn, b_gn = (rng.standard_normal(4).astype(dtype) for _ in range(2))

    def both():
        y, mean, invstd = fastbn.layer_norm_train(x, (700,), w_ln, b_ln)
        ln = (y, mean, invstd) + tuple(fastbn.layer_norm_backward(dy, x, mean, invstd, (700,), w_ln))
        y, mean, invstd = fastbn.group_norm_train(x, 2, w_gn, b_gn)
        gn = (y, mean, invstd) + tuple(fastbn.group_norm_backward(dy, x, mean, invstd, 2, w_gn))
        return ln + gn

    monkeypatch.setattr(_config, "NONTEMPORAL_MIN_BYTES", 1 << 62)
    direct = both()
    monkeypatch.setattr(_config, "NONTEMPORAL_MIN_BYTES", 0)
    streamed = both()
    for got, want in zip(streamed, direct):
        np.testing.assert_array_equal(got, want)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    refs = (layer_norm_ref(x, (700,), w_ln, b_ln)[0],
            layer_norm_backward_ref(dy, x, (700,), w_ln)[0],
            group_norm_ref(x, 2, w_gn, b_gn)[0],
            group_norm_backward_ref(dy, x, 2, w_gn)[0])
    for got, want in zip((streamed[0], streamed[3], streamed[6], streamed[9]), refs):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
