"""Layer, group and instance norm forward and backward (skipped until fastbn has them)."""

import pytest
from bench_cases import case_params, run_case


@pytest.mark.parametrize("op, shape, impl",
                         case_params("layer_norm") + case_params("group_norm")
                         + case_params("instance_norm"))
def test_norm(benchmark, op, shape, impl):
    run_case(benchmark, op, shape, impl)
