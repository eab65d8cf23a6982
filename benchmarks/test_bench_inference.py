"""pytest-benchmark cases for the eval forward (issue 4).

Run with ``pytest benchmarks/test_bench_inference.py --benchmark-enable``; the
interleaved, paired comparison lives in ``bench_inference.py``.
"""

import numpy as np
import pytest

import bench_inference as bench

LATENCY_SHAPES = [(1, 512), (1, 64, 56, 56)]


@pytest.mark.parametrize("shape", LATENCY_SHAPES, ids=str)
def test_latency_kernel(benchmark, shape):
    benchmark.group = f"latency {shape}"
    x = bench.random_input(shape)
    benchmark(bench.make_fastbn_eval(x, np.empty_like(x)))


@pytest.mark.parametrize("shape", LATENCY_SHAPES, ids=str)
def test_latency_layer(benchmark, shape):
    benchmark.group = f"latency {shape}"
    benchmark(bench.make_layer_eval(bench.random_input(shape)))


@pytest.mark.parametrize("shape", LATENCY_SHAPES, ids=str)
def test_latency_torch(benchmark, shape):
    pytest.importorskip("torch")
    benchmark.group = f"latency {shape}"
    benchmark(bench.make_torch_eval(bench.random_input(shape)))


@pytest.mark.parametrize("make", [bench.make_fastbn_eval, bench.make_parallel_copy],
                         ids=["kernel", "parallel_copy"])
def test_throughput(benchmark, make):
    benchmark.group = "throughput (32, 64, 56, 56)"
    x = bench.random_input((32, 64, 56, 56))
    benchmark(make(x, np.empty_like(x)))


@pytest.mark.parametrize("name", sorted(bench.COLD_START_CODE))
def test_cold_start(benchmark, name):
    benchmark.group = "cold start"
    benchmark.pedantic(bench.cold_start, args=(bench.COLD_START_CODE[name],),
                       kwargs={"runs": 1}, rounds=5)
