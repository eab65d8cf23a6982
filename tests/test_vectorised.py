"""The hot loops compile to packed SIMD (the assembly evidence of ``fastbn._bench.vector_report``).

A change that makes an inner loop scalar (a reassociation LLVM may not do, an
accumulator it cannot keep apart) keeps every result right and only shows up
as lost speed; this catches it where it happens (x86-64 and AArch64).
"""

import pytest

from fastbn._bench import vector_report


def test_instruction_counts_tell_packed_from_scalar():
    counts = vector_report.instruction_counts(
        "\tvaddpd\t%zmm1, %zmm0, %zmm0\n\tvcvtps2pd\t(%rax), %ymm2\n\tvaddsd\t%xmm1, %xmm0, %xmm0\n"
        "\tvmovupd\t%zmm0, (%rcx)\n\taddq\t$8, %rax\n")
    assert counts == {("packed", "zmm"): 1, ("packed", "ymm"): 1, ("scalar", "xmm"): 1}
    counts = vector_report.instruction_counts(
        "\tfadd\tv0.2d, v1.2d, v2.2d\n\tfcvtl\tv3.2d, v4.2s\n\tfadd\td0, d1, d2\n"
        "\tldr\tq0, [x1]\n")
    assert counts == {("packed", "neon"): 2, ("scalar", "fp"): 1}


def test_nontemporal_store_count_skips_loads_and_plain_stores():
    assembly = ("\tvmovntps\t%zmm0, (%rax)\n\tmovntdqa\t(%rax), %xmm0\n"
                "\tvmovntdq\t%ymm1, (%rcx)\n\tvmovups\t%zmm0, (%rax)\n\tstnp\tq0, q1, [x0]\n")
    assert vector_report.count_nontemporal_stores(assembly) == 3


@pytest.mark.parametrize("module_name, kernel_name", [
    ("_kernels_runs", "runs_train_fused"),     # channel statistics + normalise (NCHW)
    ("_kernels_rows", "rows_partials"),        # column statistics ((N, C), channels-last)
])
def test_hot_loops_are_packed(module_name, kernel_name):
    [(_, zmm, ymm, xmm, _)] = vector_report.report({module_name: (kernel_name,)})
    assert zmm + ymm + xmm >= 20
    loop = vector_report.hot_loop(module_name, kernel_name)
    for op in vector_report.STATISTICS_OPS[vector_report.architecture()]:
        assert any(op in line for line in loop.splitlines()), (op, loop)


@pytest.mark.parametrize("kernel_name", ["runs_train_fused", "runs_backward_fused"])
def test_channel_runs_outputs_have_nontemporal_stores(kernel_name):
    """The writer's line copies compile to non-temporal stores (``_cpu._nontemporal``)."""
    assert vector_report.nontemporal_stores("_kernels_runs", kernel_name) >= 1
