"""The disk cache of the kernels is valid only for the source that compiled them.

Numba checks a cached kernel against its own file only; a kernel whose inlined
helper (another file) changed must still be recompiled, never loaded stale.
"""

import subprocess
import sys
import textwrap

from conftest import SUBPROCESS_CWD, subprocess_env

from fastbn import _jit_cache

HELPER = "def value():\n    return {}\n"

KERNEL = textwrap.dedent("""
    import os
    from numba import njit
    from numba.core.caching import FunctionCache
    from fastbn._jit_cache import enable_package_cache
    from .helper import value

    inlined_value = njit(inline="always")(value)


    def answer():
        return inlined_value() + 0.5


    kernel = enable_package_cache(njit(answer), FunctionCache, root=os.path.dirname(__file__))
""")

RUN = "from pkg.kernel import kernel; print(kernel(), sum(kernel.stats.cache_hits.values()))"


def _answer_and_cache_hits(tmp_path):
    res = subprocess.run([sys.executable, "-c", RUN], cwd=tmp_path, capture_output=True, text=True,
                         env=subprocess_env(NUMBA_CACHE_DIR=str(tmp_path / "cache")), timeout=300)
    assert res.returncode == 0, res.stderr
    answer, hits = res.stdout.split()
    return float(answer), int(hits)


def test_changed_helper_in_another_file_recompiles_the_kernel(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "kernel.py").write_text(KERNEL)
    (pkg / "helper.py").write_text(HELPER.format(1.0))
    assert _answer_and_cache_hits(tmp_path) == (1.5, 0)
    assert _answer_and_cache_hits(tmp_path) == (1.5, 1)  # the cache is used
    (pkg / "helper.py").write_text(HELPER.format(2.0))  # kernel.py is unchanged
    assert _answer_and_cache_hits(tmp_path) == (2.5, 0)
    assert _answer_and_cache_hits(tmp_path) == (2.5, 1)


def test_every_kernel_family_uses_the_stamped_cache():
    from fastbn._cpu import _kernels_common, _kernels_runs
    from fastbn._cuda import _kernels_runs as cuda_runs
    import numpy as np
    digest = _jit_cache.source_digest()
    dispatchers = [_kernels_common.merge_moments, _kernels_runs.runs_partials.dispatcher(np.float32),
                   cuda_runs.moment_partials]
    for dispatcher in dispatchers:
        assert dispatcher._cache._impl.locator.get_source_stamp()[1] == digest


def test_source_digest_covers_every_module(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub" / "b.py").write_text("y = 1\n")
    first = _jit_cache.source_digest(tmp_path)
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    _jit_cache.source_digest.cache_clear()
    assert _jit_cache.source_digest(tmp_path) != first


def test_runs_with_the_jit_disabled():
    """``NUMBA_DISABLE_JIT=1`` (debugging in plain Python) still runs the kernels, uncached."""
    code = textwrap.dedent("""
        import numpy as np, fastbn
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2, 3, 4, 5))
        y, mean, invstd = fastbn.batch_norm_train(x)
        dx = fastbn.batch_norm_backward(np.ones_like(x), x, mean, invstd)[0]
        np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-12)
        np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0.0, atol=1e-12)
        np.testing.assert_allclose(dx, 0.0, atol=1e-12)  # dy = 1: no gradient through BN
        fastbn._config.NONTEMPORAL_MIN_BYTES = 0  # channel runs, non-temporal writer
        x = rng.standard_normal((2, 3, 300))
        y, mean, invstd = fastbn.batch_norm_train(x)
        dx = fastbn.batch_norm_backward(np.ones_like(x), x, mean, invstd)[0]
        np.testing.assert_allclose(y.mean(axis=(0, 2)), 0.0, atol=1e-12)
        np.testing.assert_allclose(dx, 0.0, atol=1e-12)
        print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", code], cwd=SUBPROCESS_CWD, capture_output=True,
                         text=True, env=subprocess_env(NUMBA_DISABLE_JIT="1"), timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["ok"]
