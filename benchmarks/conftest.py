"""pytest-benchmark configuration for ``benchmarks/`` (the cases are in ``bench_cases.py``).

Run with ``pytest benchmarks/ --benchmark-only``.  The project's pytest
``addopts`` carry ``--benchmark-disable`` (so the unit tests never time
anything); an explicit ``--benchmark-only`` switches benchmarking back on here.
"""

import pytest

import fastbn
from fastbn._bench import timing, torch_ref


def pytest_configure(config):
    """``--benchmark-only`` overrides the ``--benchmark-disable`` of pyproject's addopts.

    Runs before pytest-benchmark's own ``pytest_configure`` (a ``trylast`` hook),
    which rejects the two options together.
    """
    if config.getoption("benchmark_only", False):
        config.option.benchmark_disable = False


@pytest.fixture(scope="session", autouse=True)
def pinned_threads():
    """fastbn and torch on the same thread count (all CPUs this process may use)."""
    with timing.pinned_threads(fastbn.get_num_threads(), torch_ref.torch_module()):
        yield
