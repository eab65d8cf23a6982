"""Numba's on-disk kernel cache, made valid only for the fastbn source that compiled it.

Numba checks a cached kernel against the one file that defines it (its hash,
or for numba-cuda its mtime and size), not against the helpers it inlined from
other files.  After an upgrade or a checkout that changed only ``_primitives.py``,
the kernels of ``_kernels_runs.py`` would load machine code built from the old
helpers: wrong results with no error.  Here every cache entry's stamp also
carries a digest of all ``.py`` files of the package, so any source change
recompiles every kernel once.
"""

import functools
import hashlib
from pathlib import Path

from numba.core import config

PACKAGE_ROOT = Path(__file__).resolve().parent


@functools.cache
def source_digest(root=PACKAGE_ROOT):
    """SHA-256 over the relative path and bytes of every ``.py`` file under ``root``."""
    h = hashlib.sha256()
    for path in sorted(Path(root).rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


@functools.cache
def _stamped(cache_class, root):
    """A subclass of the Numba cache class whose entries also record ``source_digest(root)``."""
    digest = source_digest(root)

    class PackageStamp:
        def get_source_stamp(self):
            return super().get_source_stamp(), digest

    impl = cache_class._impl_class
    here = {"__module__": __name__}
    locators = [type(locator.__name__, (PackageStamp, locator), here)
                for locator in impl._locator_classes]
    stamped_impl = type(impl.__name__, (impl,), dict(here, _locator_classes=locators))
    return type(cache_class.__name__, (cache_class,), dict(here, _impl_class=stamped_impl))


def enable_package_cache(dispatcher, cache_class, root=PACKAGE_ROOT):
    """Turn on ``dispatcher``'s disk cache, stamped with the source; returns ``dispatcher``.

    ``cache_class`` is the Numba cache class the dispatcher's own
    ``enable_caching`` would use (``FunctionCache`` on the CPU, ``CUDACache``
    for CUDA kernels).  Call before the first compilation.  With
    ``NUMBA_DISABLE_JIT=1`` the decorators return plain Python functions,
    which compile nothing and are returned as they are.
    """
    if config.DISABLE_JIT:
        return dispatcher
    dispatcher._cache = _stamped(cache_class, Path(root))(dispatcher.py_func)
    return dispatcher
