"""Evidence that the CPU kernels' hot loops are vectorised: packed SIMD in their machine code.

Each kernel is compiled afresh for float32 (Numba refuses to show the assembly
of a cached kernel) and its x86 assembly is scanned for floating-point
arithmetic on packed vectors (``vaddpd``, ``vmulps``, ``vcvtps2pd`` ... on
``xmm``/``ymm``/``zmm`` registers) against the scalar forms (``vaddsd`` ...).
The kernels accumulate in float64 (packed-double arithmetic on float32 data
widened by ``vcvtps2pd``) and normalise in the data's dtype (packed-single for
float32), on the widest registers of the CPU.
"""

import collections
import functools
import platform
import re

from numba import njit

#: Kernels whose inner loops carry the work, by backend module.
HOT_KERNELS = {
    "_kernels_runs": ("runs_partials", "runs_train_fused", "runs_normalize",
                      "runs_backward_fused", "runs_input_grad"),
    "_kernels_rows": ("rows_partials", "rows_normalize", "rows_grad_partials",
                      "rows_input_grad"),
    "_kernels_rowwise": ("train_fused", "backward_fused"),
}

_ARITHMETIC = re.compile(r"^\s*v?(?:(?:add|sub|mul|div|max|min|fmadd\w*?)(?P<form>[ps])[sd]"
                         r"|(?P<convert>cvtps2pd|cvtpd2ps))\s[^\n]*?%(?P<register>[xyz]mm)")

#: AArch64: NEON/SVE arithmetic on ``v0.2d``/``v0.4s`` (packed) or ``d0``/``s0`` (scalar).
_ARITHMETIC_ARM = re.compile(r"^\s*(?:fadd|fsub|fmul|fdiv|fmax|fmin|fmla|fcvtl2?|fcvtn2?)\s+"
                             r"(?:(?P<vector>[vz]\d+\.\d*[sd])|[sd]\d+)\b")

#: Non-temporal stores (x86 ``vmovntps``/``vmovntpd``/``movntdq``..., not the ``movntdqa``
#: load; AArch64 ``stnp``).
_NONTEMPORAL_STORE = re.compile(r"^\s*(?:v?movnt(?!dqa)\w*|stnp)\s", re.MULTILINE)

#: The statistics loop's signature instructions: widen float32 to float64, subtract, add.
STATISTICS_OPS = {"x86": ("vcvtps2pd", "vsubpd", "vaddpd"), "arm": ("fcvtl", "fsub", "fadd")}


@functools.lru_cache(maxsize=None)
def _assembly(module_name, kernel_name):
    from importlib import import_module

    from .._cpu._jit import FLOATS
    kernel = getattr(import_module(f"fastbn._cpu.{module_name}"), kernel_name)
    fresh = njit([kernel._signature_of(FLOATS[0])], parallel=True, nogil=True)(kernel.py_func)
    return next(iter(fresh.inspect_asm().values()))


def architecture():
    """``"x86"`` or ``"arm"``: the instruction set whose assembly this machine's Numba emits."""
    return "arm" if platform.machine().lower() in ("aarch64", "arm64") else "x86"


def instruction_counts(assembly):
    """``Counter`` of ``(form, register)``: form ``packed`` or ``scalar`` float arithmetic.

    x86-64 registers are ``xmm``/``ymm``/``zmm``; AArch64 vector registers count
    as ``neon``, its scalar ones as ``fp``.
    """
    counts = collections.Counter()
    for line in assembly.splitlines():
        match = _ARITHMETIC.match(line)
        if match:
            packed = match["convert"] is not None or match["form"] == "p"
            counts["packed" if packed else "scalar", match["register"]] += 1
            continue
        match = _ARITHMETIC_ARM.match(line)
        if match:
            packed = match["vector"] is not None
            counts["packed" if packed else "scalar", "neon" if packed else "fp"] += 1
    return counts


def report(kernels=HOT_KERNELS):
    """Rows ``(kernel, packed zmm, packed ymm, packed xmm or NEON, scalar)`` for the hot kernels."""
    rows = []
    for module_name, names in kernels.items():
        for name in names:
            counts = instruction_counts(_assembly(module_name, name))
            scalar = sum(n for (form, _), n in counts.items() if form == "scalar")
            rows.append((name, counts["packed", "zmm"], counts["packed", "ymm"],
                         counts["packed", "xmm"] + counts["packed", "neon"], scalar))
    return rows


def count_nontemporal_stores(assembly):
    """How many non-temporal store instructions ``assembly`` holds."""
    return len(_NONTEMPORAL_STORE.findall(assembly))


def nontemporal_stores(module_name, kernel_name):
    """How many non-temporal store instructions ``kernel_name``'s float32 assembly holds."""
    return count_nontemporal_stores(_assembly(module_name, kernel_name))


def hot_loop(module_name, kernel_name, anchor=None):
    """The basic block of ``kernel_name``'s float32 assembly around its first ``anchor``.

    ``anchor`` defaults to this machine's float32-to-float64 widening instruction.
    """
    lines = _assembly(module_name, kernel_name).splitlines()
    anchor = anchor or STATISTICS_OPS[architecture()][0]
    at = next(i for i, line in enumerate(lines) if anchor in line)
    start = max(i for i in range(at + 1) if lines[i].startswith("."))
    end = next((i for i in range(at, len(lines)) if re.match(r"\s*j\w+\s", lines[i])), at)
    return "\n".join(lines[start:end + 1])


if __name__ == "__main__":   # pragma: no cover - run as ``python -m fastbn._bench.vector_report``
    print(f"{'kernel (float32)':24s} {'packed zmm':>10s} {'packed ymm':>10s} {'xmm/NEON':>10s} "
          f"{'scalar':>7s}")
    for row in report():
        print(f"{row[0]:24s} {row[1]:10d} {row[2]:10d} {row[3]:10d} {row[4]:7d}")
    for name in ("runs_train_fused", "runs_backward_fused"):
        print(f"non-temporal stores in {name}: {nontemporal_stores('_kernels_runs', name)}")
    print("\nhot loop of runs_train_fused (chunk statistics):")
    print(hot_loop("_kernels_runs", "runs_train_fused"))
    if architecture() == "x86":
        print("\nhot loop of rows_normalize (float32 output pass):")
        print(hot_loop("_kernels_rows", "rows_normalize", "vsubps"))
