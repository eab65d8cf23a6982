"""Host side of the eval-mode forward: the compiled (Cython) inference path.

This module must never import Numba (importing it costs ~0.3 s of an inference
service's start-up); it needs only NumPy and the ahead-of-time extension.
"""

from fastbn import _threads

try:
    from fastbn._ext import _inference as _ext
except ImportError as exc:  # not built (source checkout without build_ext)
    _ext = None
    _IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
else:
    _IMPORT_ERROR = None


def available():
    """Return True when the compiled inference extension can be used."""
    return _ext is not None


def unavailable_reason():
    """Return why the extension is missing (the import error text), or None."""
    return _IMPORT_ERROR


def openmp_enabled():
    """Return True when the extension was built with OpenMP (False if absent)."""
    return _ext is not None and _ext.openmp_enabled()


def _num_threads(size):
    """Threads for ``size`` elements: 1 below the parallel threshold."""
    return _threads.threads_for(size)


def normalize_eval(x3, running_mean, running_var, weight, bias, eps, relu,
                   residual3, y3):
    """Eval-mode batch norm of the canonical view ``x3`` into ``y3``.

    Per channel ``c``, in float64: ``invstd = 1 / sqrt(running_var[c] + eps)``,
    ``k = invstd * weight[c]``, ``b = bias[c]``, converted to the data's dtype
    with the mean split as the training kernels do (``output_affine`` in
    ``fastbn/_cpu/_primitives.py``, so the two paths agree bitwise); per element,
    in that dtype, ``v = (x - m) * k + b``, then ``v += residual`` and ReLU
    (NaN propagates) when asked.  ``running_var``
    is the (unbiased) running variance of the layer.  ``k`` and ``b`` are
    recomputed on every call (O(C) work, negligible next to the O(N) pass), so
    no cached scale/shift can go stale when parameters are mutated in place.

    The GIL is released for the whole computation; arrays of at least
    ``fastbn._config.PARALLEL_MIN_ELEMENTS`` elements use
    ``fastbn.get_num_threads()`` threads.  The result does not depend on the
    thread count.  Arguments are trusted to have been validated by the caller.

    Parameters
    ----------
    x3 : numpy.ndarray, shape (O, C, I)
        C-contiguous float32 or float64 input; ``I == 1`` is the
        channel-contiguous layout ((N, C) and channels-last).
    running_mean, running_var : numpy.ndarray, shape (C,)
        float32 or float64 running statistics.
    weight, bias : numpy.ndarray of shape (C,) or None
        Affine parameters (None: weight 1, bias 0).
    eps : float
        Added to the variance.
    relu : bool
        Apply ReLU after the affine map (and the residual).
    residual3 : numpy.ndarray of shape (O, C, I) or None
        Added before the ReLU; same dtype as ``x3``.
    y3 : numpy.ndarray, shape (O, C, I)
        Output, same dtype as ``x3``; may be ``x3`` itself.

    Raises
    ------
    RuntimeError
        If the extension is not built (see ``unavailable_reason()``).
    """
    if _ext is None:
        raise RuntimeError(f"fastbn's inference extension is not built: {_IMPORT_ERROR}")
    _ext.normalize_eval(x3, running_mean, running_var, weight, bias, eps, relu,
                        residual3, y3, _num_threads(x3.size))


def parallel_copy(src, dst):
    """Copy 1-D contiguous ``src`` into ``dst`` with the eval path's threading.

    The memory floor (one read, one write) benchmarks compare the eval forward
    against, on the same threads and above the same size threshold.

    Raises
    ------
    RuntimeError
        If the extension is not built.
    """
    if _ext is None:
        raise RuntimeError(f"fastbn's inference extension is not built: {_IMPORT_ERROR}")
    _ext.parallel_copy(src, dst, _num_threads(src.size))
