"""The hot loops compile to packed SIMD (the assembly evidence of ``fastbn._bench.vector_report``).

A change that makes an inner loop scalar (a reassociation LLVM may not do, an
accumulator it cannot keep apart) keeps every result right and only shows up
as lost speed; this catches it where it happens.  x86-64 only: the scan reads
x86 registers.
"""

import platform

import pytest

from fastbn._bench import vector_report

pytestmark = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                                reason="the assembly scan reads x86-64 registers")


def test_instruction_counts_tell_packed_from_scalar():
    counts = vector_report.instruction_counts(
        "\tvaddpd\t%zmm1, %zmm0, %zmm0\n\tvcvtps2pd\t(%rax), %ymm2\n\tvaddsd\t%xmm1, %xmm0, %xmm0\n"
        "\tvmovupd\t%zmm0, (%rcx)\n\taddq\t$8, %rax\n")
    assert counts == {("packed", "zmm"): 1, ("packed", "ymm"): 1, ("scalar", "xmm"): 1}


@pytest.mark.parametrize("module_name, kernel_name", [
    ("_kernels_runs", "runs_train_fused"),     # channel statistics + normalise (NCHW)
    ("_kernels_rows", "rows_partials"),        # column statistics ((N, C), channels-last)
])
def test_hot_loops_are_packed(module_name, kernel_name):
    [(_, zmm, ymm, xmm, _)] = vector_report.report({module_name: (kernel_name,)})
    assert zmm + ymm + xmm >= 20
    loop = vector_report.hot_loop(module_name, kernel_name)
    for op in ("vcvtps2pd", "vsubpd", "vaddpd"):
        assert any(op in line and "mm" in line for line in loop.splitlines()), (op, loop)
