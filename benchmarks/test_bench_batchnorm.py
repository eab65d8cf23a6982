"""Batch norm training forward, backward and eval forward: fastbn, NumPy, torch, copy floor."""

import pytest
from bench_cases import case_params, run_case


@pytest.mark.parametrize("op, shape, impl", case_params("batch_norm"))
def test_batch_norm(benchmark, op, shape, impl):
    run_case(benchmark, op, shape, impl)
