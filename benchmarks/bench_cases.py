"""pytest-benchmark cases built from ``fastbn bench``'s own registry (``fastbn._bench.cases``).

Each default case of ``fastbn bench`` becomes four benchmarks in one group:
fastbn, the NumPy baseline, torch (skipped when absent) and the parallel copy
floor, float32 on the CPU at fastbn's thread count.
"""

import numpy as np
import pytest

import fastbn
from fastbn._bench import cases, floor, torch_ref

IMPLS = ("fastbn", "numpy", "torch", "copy")


def case_params(family):
    """``pytest.param(op, shape, impl)`` for every default case of ``family``."""
    return [pytest.param(op, shape, impl, id=f"{op.name}-{shape.label}-{impl}")
            for op, shape in cases.cases([op for op in cases.OPS if op.family.name == family])
            for impl in IMPLS]


def run_case(benchmark, op, shape, impl):
    """Benchmark implementation ``impl`` of ``op`` on ``shape`` (float32, CPU)."""
    if impl == "torch" and torch_ref.torch_module() is None:
        pytest.skip("torch is not installed")
    inputs = cases.make_inputs(shape, np.dtype(np.float32), op.family)
    setups = {"fastbn": lambda: op.fastbn(inputs), "numpy": lambda: op.numpy(inputs),
              "torch": lambda: op.torch(inputs, "cpu"), "copy": lambda: floor.cpu_copy(inputs.x)}
    fn = setups[impl]()
    fn()  # warm-up: JIT compilation or cache load, first-touch page faults
    benchmark.group = f"{op.name} {shape.label}"
    benchmark.extra_info.update(bytes_moved=op.passes * inputs.x.nbytes,
                                threads=fastbn.get_num_threads())
    benchmark(fn)
