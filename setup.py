"""Build the Cython extensions (the inference path, the output cache), with OpenMP where the compiler has it.

Metadata lives in pyproject.toml; this file only declares the extension.  The
OpenMP probe compiles (and links) a tiny C program with the compiler setuptools
itself will use; without OpenMP the same source builds serial (``prange``
becomes a plain loop).  No ``-march=native`` and no ``-ffast-math``: the wheel
must run on any CPU of its architecture and NaN/inf must behave.
"""

import logging
import os
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_OPENMP_TEST = """
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return omp_get_max_threads() > 0 && n > 0 ? 0 : 1;
}
"""


def _openmp_flags(compiler):
    """Return (compile_args, link_args) for OpenMP, or ([], []) if unsupported."""
    if compiler.compiler_type == "msvc":
        candidates = [(["/openmp"], [])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    for cflags, lflags in candidates:
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "omp_probe.c")
            with open(src, "w") as f:
                f.write(_OPENMP_TEST)
            try:
                objs = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
                compiler.link_executable(objs, os.path.join(tmp, "omp_probe"),
                                         extra_postargs=lflags)
            except Exception:  # CompileError / LinkError: no usable OpenMP
                continue
        return cflags, lflags
    return [], []


class BuildExt(build_ext):
    """``build_ext`` that adds OpenMP and optimisation flags after probing."""

    def build_extensions(self):
        cflags, lflags = _openmp_flags(self.compiler)
        if self.compiler.compiler_type == "msvc":
            opt = ["/O2", "/fp:precise"]
        else:
            # fp-contract=off: no FMA contraction, so rounding matches Numba's.
            opt = ["-O3", "-ffp-contract=off"]
        self.announce(f"fastbn: OpenMP {'on' if cflags else 'off (serial build)'}",
                      level=logging.INFO)
        for ext in self.extensions:
            ext.extra_compile_args = opt + cflags
            ext.extra_link_args = lflags
        super().build_extensions()


extensions = [
    Extension(
        "fastbn._ext._inference",
        ["fastbn/_ext/_inference.pyx"],
        include_dirs=[np.get_include()],
        depends=["fastbn/_ext/_kernels.h", "fastbn/_ext/_openmp.pxd"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
    Extension(
        "fastbn._ext._output_cache",
        ["fastbn/_ext/_output_cache.pyx"],
        include_dirs=[np.get_include()],
        depends=["fastbn/_ext/_output_cache.h"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
]

setup(
    ext_modules=cythonize(extensions, compiler_directives={"language_level": 3}),
    cmdclass={"build_ext": BuildExt},
)
