"""The cache of freed full-size outputs (``fastbn/_memory.py``, ``fastbn/_ext/_output_cache.h``)."""

import threading

import numpy as np
import pytest

import fastbn
from fastbn import _memory

MIB = 1 << 20


@pytest.fixture
def cache():
    """A fresh cache at the default limit, restored afterwards."""
    limit = fastbn.output_cache_info()["limit"]
    fastbn.empty_output_cache()
    yield
    fastbn.set_output_cache_limit(limit)


def test_the_cache_comes_with_the_compiled_extension():
    info = fastbn.output_cache_info()
    assert info["available"] and info["limit"] == fastbn._config.OUTPUT_CACHE_BYTES


def test_empty_gives_an_owning_cache_line_aligned_array(cache):
    a = _memory.empty((512, 1024), np.float32)
    assert a.shape == (512, 1024) and a.dtype == np.float32
    assert a.flags.owndata and a.flags.c_contiguous and a.flags.writeable
    assert a.ctypes.data % 64 == 0


def test_a_freed_block_serves_the_next_request_of_its_size(cache):
    a = _memory.empty((2 * MIB,), np.uint8)
    address = a.ctypes.data
    del a
    info = fastbn.output_cache_info()
    assert (info["blocks"], info["bytes"]) == (1, 2 * MIB)
    b = _memory.empty((MIB // 4,), np.float64)  # the same bytes, another dtype
    assert b.ctypes.data == address
    assert fastbn.output_cache_info()["blocks"] == 0
    c = _memory.empty((2 * MIB + 8,), np.uint8)  # another size: a new block
    assert c.ctypes.data != address


def test_small_requests_bypass_the_cache(cache):
    before = fastbn.output_cache_info()
    a = _memory.empty((100,), np.float32)
    del a
    after = fastbn.output_cache_info()
    assert after["blocks"] == 0 and after["misses"] == before["misses"]


def test_the_limit_bounds_the_cached_bytes_oldest_evicted_first(cache):
    fastbn.set_output_cache_limit(5 * MIB)
    blocks = [_memory.empty((n * MIB,), np.uint8) for n in (1, 2, 3)]
    third = blocks[2].ctypes.data
    while blocks:  # frees 1, 2, 3 MiB in that order: 1 + 2 + 3 > 5, so the 1 MiB block goes
        del blocks[0]
    info = fastbn.output_cache_info()
    assert info["bytes"] <= 5 * MIB and info["blocks"] == 2
    assert _memory.empty((3 * MIB,), np.uint8).ctypes.data == third
    fastbn.set_output_cache_limit(0)
    assert fastbn.output_cache_info()["bytes"] == 0
    a = _memory.empty((2 * MIB,), np.uint8)
    del a
    assert fastbn.output_cache_info()["blocks"] == 0


def test_resize_keeps_the_data(cache):
    a = _memory.empty((MIB,), np.float32)
    a[:] = np.arange(MIB, dtype=np.float32)
    a.resize((2 * MIB,), refcheck=False)
    assert np.array_equal(a[:MIB], np.arange(MIB, dtype=np.float32))
    assert a.ctypes.data % 64 == 0


def test_empty_like_keeps_the_memory_order():
    base = np.zeros((8, 64, 32, 32), np.float32)
    for a in (base, np.asfortranarray(base), base.transpose(0, 2, 3, 1)):
        b = _memory.empty_like(a)
        assert b.shape == a.shape and b.dtype == a.dtype
        assert np.argsort(b.strides).tolist() == np.argsort(a.strides).tolist()


def test_concurrent_threads_get_intact_blocks(cache):
    errors = []

    def work(seed):
        for i in range(60):
            a = _memory.empty((256 + (seed + i) % 5, 1024), np.float32)
            a[:] = seed * 1000 + i
            if not (a == seed * 1000 + i).all():
                errors.append((seed, i))

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert fastbn.output_cache_info()["hits"] > 0


def test_training_steps_reuse_their_outputs_with_the_same_results(cache):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8, 1024), dtype=np.float32)  # 2 MiB
    dy = rng.standard_normal(x.shape, dtype=np.float32)
    layer = fastbn.LayerNorm(1024)
    first = (layer.forward(x).copy(), layer.backward(dy).copy())
    hits = fastbn.output_cache_info()["hits"]
    for _ in range(3):
        y, dx = layer.forward(x), layer.backward(dy)
        assert np.array_equal(y, first[0]) and np.array_equal(dx, first[1])
        del y, dx
    assert fastbn.output_cache_info()["hits"] >= hits + 4


@pytest.mark.parametrize("bad, error", [("1", TypeError), (1.5, TypeError), (True, TypeError),
                                        (None, TypeError), (-1, ValueError)])
def test_a_bad_limit_is_refused_naming_it_and_changes_nothing(cache, bad, error):
    before = fastbn.output_cache_info()["limit"]
    with pytest.raises(error, match="nbytes"):
        fastbn.set_output_cache_limit(bad)
    assert fastbn.output_cache_info()["limit"] == before
