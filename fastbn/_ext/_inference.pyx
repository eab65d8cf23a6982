# cython: boundscheck=False, wraparound=False, cdivision=True, language_level=3
# cython: initializedcheck=False
"""Eval-mode batch norm forward, compiled ahead of time (no JIT at first call).

The data is the canonical ``(O, C, I)`` view (see ``fastbn/_layout.py``); per
channel ``c``, the constants in float64, then converted to the data's type T::

    invstd = 1.0 / sqrt(running_var[c] + eps)
    k = invstd * weight[c]          (weight None: k = invstd)
    b = bias[c]                     (bias None: b = 0)
    m = (T) running_mean[c]
    d = running_mean[c] - m         (what the rounding dropped)
    b = b - d * k if d != 0 else b

and per element, in T::

    v = (x - m) * (T) k + (T) b
    v = v + residual                (when given)
    v = 0 if v < 0 else v           (relu; NaN propagates)

That is ``output_affine`` and the normalise loop of the Numba kernels
(``fastbn/_cpu/_primitives.py``), so both paths agree bitwise; the build passes
``-ffp-contract=off`` so no fused multiply-add changes a rounding.
The element loops live in ``_kernels.h`` (plain C, so the compiler can build
AVX-512 and AVX2 clones picked at load time); blocking, threads and checks
live here.

Arrays arrive as ``ndarray`` objects and are read through their data pointers
after cheap flag/shape checks: acquiring a typed memoryview costs about 0.5 us
per array, and an eval call takes up to seven arrays against a budget of a few
microseconds.  Work is split into blocks fixed by the shape (never by the thread
count); every element is computed the same way on any thread, so results are
identical serial or parallel.
"""

cimport numpy as cnp
from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from fastbn._ext._openmp cimport FASTBN_HAVE_OPENMP

cnp.import_array()

ctypedef fused real:
    float
    double

cdef enum:
    _BLOCK = 16384  # elements per unit of parallel work


def openmp_enabled():
    """Return True when this extension was compiled with OpenMP."""
    return bool(FASTBN_HAVE_OPENMP)


cdef int _data_type(cnp.ndarray a, str name, Py_ssize_t ndim) except -1:
    """Type number of a C-contiguous float32/float64 array of rank ``ndim``."""
    cdef int t = cnp.PyArray_TYPE(a)
    if t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64:
        raise TypeError(f"{name} must be float32 or float64, got {a.dtype}")
    if cnp.PyArray_NDIM(a) != ndim or not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"{name} must be a C-contiguous {ndim}-D array")
    return t


cdef const char* _param(object p, str name, Py_ssize_t C, bint* f32) except? NULL:
    """Data pointer of a length-C parameter, or NULL for None."""
    if p is None:
        return NULL
    if not isinstance(p, cnp.ndarray):
        raise TypeError(f"{name} must be a NumPy array or None")
    cdef cnp.ndarray a = <cnp.ndarray>p
    f32[0] = _data_type(a, name, 1) == cnp.NPY_FLOAT32
    if cnp.PyArray_DIMS(a)[0] != C:
        raise ValueError(f"{name} must have length {C}, got {cnp.PyArray_DIMS(a)[0]}")
    return <const char*>cnp.PyArray_DATA(a)


cdef inline double _get(const char* p, bint f32, Py_ssize_t c) noexcept nogil:
    if f32:
        return (<const float*>p)[c]
    return (<const double*>p)[c]


cdef void _scale_shift(const char* rm, bint rm32, const char* rv, bint rv32,
                       const char* w, bint w32, const char* b, bint b32,
                       double eps, Py_ssize_t C, real* m, real* k,
                       real* sh) noexcept nogil:
    """The per-channel constants ``(m, k, b)`` of the module doc, in the data's type."""
    cdef Py_ssize_t c
    cdef double invstd, mean, kc, bc, dropped
    for c in range(C):
        invstd = 1.0 / sqrt(_get(rv, rv32, c) + eps)
        mean = _get(rm, rm32, c)
        kc = invstd * _get(w, w32, c) if w != NULL else invstd
        bc = _get(b, b32, c) if b != NULL else 0.0
        m[c] = <real>mean
        dropped = mean - m[c]
        k[c] = <real>kc
        sh[c] = <real>(bc - dropped * kc if dropped != 0.0 else bc)


cdef extern from "_kernels.h" nogil:
    void fastbn_run_f32(const float* x, const float* r, float* y, Py_ssize_t n,
                        float m, float k, float b, bint relu)
    void fastbn_run_f64(const double* x, const double* r, double* y,
                        Py_ssize_t n, double m, double k, double b, bint relu)
    void fastbn_row_f32(const float* x, const float* r, float* y, Py_ssize_t n,
                        const float* m, const float* k, const float* b,
                        bint relu)
    void fastbn_row_f64(const double* x, const double* r, double* y,
                        Py_ssize_t n, const double* m, const double* k,
                        const double* b, bint relu)


cdef inline void _run(const real* x, const real* r, real* y, Py_ssize_t n,
                      real m, real k, real b, bint relu) noexcept nogil:
    """One channel's contiguous run of ``n`` elements (I > 1)."""
    if real is float:
        fastbn_run_f32(x, r, y, n, m, k, b, relu)
    else:
        fastbn_run_f64(x, r, y, n, m, k, b, relu)


cdef inline void _row(const real* x, const real* r, real* y, Py_ssize_t n,
                      const real* m, const real* k, const real* b,
                      bint relu) noexcept nogil:
    """``n`` consecutive channels of one row (I == 1), vectorised across C."""
    if real is float:
        fastbn_row_f32(x, r, y, n, m, k, b, relu)
    else:
        fastbn_row_f64(x, r, y, n, m, k, b, relu)


cdef void _block(Py_ssize_t blk, const real* x, const real* r, real* y,
                 Py_ssize_t O, Py_ssize_t C, Py_ssize_t I, Py_ssize_t per,
                 const real* m, const real* k, const real* b,
                 bint relu) noexcept nogil:
    """Block ``blk``: ``per`` blocks per (o, c) run when I > 1; when I == 1,
    ``per`` channel chunks per group of rows."""
    cdef Py_ssize_t row, c, start, stop, off, o, rows
    if I > 1:
        row = blk // per
        c = row % C
        start = (blk % per) * _BLOCK
        stop = min(start + _BLOCK, I)
        off = row * I + start
        _run(x + off, r + off if r != NULL else NULL, y + off, stop - start,
             m[c], k[c], b[c], relu)
    else:
        rows = max(1, _BLOCK // C)
        start = (blk % per) * _BLOCK
        stop = min(start + _BLOCK, C)
        for o in range((blk // per) * rows, min((blk // per + 1) * rows, O)):
            off = o * C + start
            _row(x + off, r + off if r != NULL else NULL, y + off, stop - start,
                 m + start, k + start, b + start, relu)


cdef void _launch(const real* x, const real* r, real* y, Py_ssize_t O,
                  Py_ssize_t C, Py_ssize_t I, const real* m, const real* k,
                  const real* b, bint relu, int num_threads) noexcept nogil:
    cdef Py_ssize_t per, nblocks, blk
    if I > 1:
        per = (I + _BLOCK - 1) // _BLOCK
        nblocks = O * C * per
    else:
        per = (C + _BLOCK - 1) // _BLOCK
        nblocks = per * ((O + max(1, _BLOCK // C) - 1) // max(1, _BLOCK // C))
    if num_threads > 1 and nblocks > 1:
        for blk in prange(nblocks, schedule="static", num_threads=num_threads):
            _block(blk, x, r, y, O, C, I, per, m, k, b, relu)
    else:
        for blk in range(nblocks):
            _block(blk, x, r, y, O, C, I, per, m, k, b, relu)


def normalize_eval(cnp.ndarray x3 not None, cnp.ndarray running_mean not None,
                   cnp.ndarray running_var not None, object weight, object bias,
                   double eps, bint relu, object residual3, cnp.ndarray y3 not None,
                   int num_threads):
    """Write the eval-mode batch norm of ``x3`` into ``y3``; see the module doc.

    ``x3``, ``y3`` and ``residual3`` (or None) are C-contiguous ``(O, C, I)``
    arrays of one dtype (``y3`` may be ``x3``); the parameters are length-C
    float32/float64 arrays (``weight``/``bias`` may be None).  Runs on
    ``num_threads`` threads (1: serial, no OpenMP region) without the GIL.
    """
    cdef int t = _data_type(x3, "x3", 3)
    if _data_type(y3, "y3", 3) != t or not cnp.PyArray_ISWRITEABLE(y3):
        raise ValueError("y3 must be a writeable array of x3's dtype")
    cdef cnp.npy_intp* dims = cnp.PyArray_DIMS(x3)
    cdef cnp.npy_intp* ydims = cnp.PyArray_DIMS(y3)
    cdef Py_ssize_t O = dims[0], C = dims[1], I = dims[2]
    if ydims[0] != O or ydims[1] != C or ydims[2] != I:
        raise ValueError("y3 must have x3's shape")
    cdef const char* r = NULL
    cdef cnp.ndarray ra
    if residual3 is not None:
        if not isinstance(residual3, cnp.ndarray):
            raise TypeError("residual3 must be a NumPy array or None")
        ra = <cnp.ndarray>residual3
        dims = cnp.PyArray_DIMS(ra)
        if _data_type(ra, "residual3", 3) != t or dims[0] != O or dims[1] != C or dims[2] != I:
            raise ValueError("residual3 must have x3's shape and dtype")
        r = <const char*>cnp.PyArray_DATA(ra)
    cdef bint rm32 = False, rv32 = False, w32 = False, b32 = False
    cdef const char* rm = _param(running_mean, "running_mean", C, &rm32)
    cdef const char* rv = _param(running_var, "running_var", C, &rv32)
    cdef const char* w = _param(weight, "weight", C, &w32)
    cdef const char* b = _param(bias, "bias", C, &b32)
    if O * C * I == 0:
        return
    cdef void* buf = malloc(3 * C * sizeof(double))
    if buf == NULL:
        raise MemoryError()
    cdef float* f = <float*>buf
    cdef double* d = <double*>buf
    cdef const char* xp = <const char*>cnp.PyArray_DATA(x3)
    cdef char* yp = <char*>cnp.PyArray_DATA(y3)
    try:
        with nogil:
            if t == cnp.NPY_FLOAT32:
                _scale_shift(rm, rm32, rv, rv32, w, w32, b, b32, eps, C, f, f + C, f + 2 * C)
                _launch(<const float*>xp, <const float*>r, <float*>yp, O, C, I,
                        f, f + C, f + 2 * C, relu, num_threads)
            else:
                _scale_shift(rm, rm32, rv, rv32, w, w32, b, b32, eps, C, d, d + C, d + 2 * C)
                _launch(<const double*>xp, <const double*>r, <double*>yp, O, C,
                        I, d, d + C, d + 2 * C, relu, num_threads)
    finally:
        free(buf)


def parallel_copy(const real[::1] src, real[::1] dst, int num_threads):
    """Copy ``src`` into ``dst`` (1-D, contiguous, same dtype and length) in
    blocks on ``num_threads`` threads without the GIL: the memory floor that
    the inference benchmarks compare against."""
    cdef Py_ssize_t n = src.shape[0], blk, start, nblocks
    if dst.shape[0] != n:
        raise ValueError(f"dst must have length {n}, got {dst.shape[0]}")
    if n == 0:
        return
    cdef const real* s = &src[0]
    cdef real* d = &dst[0]
    nblocks = (n + _BLOCK - 1) // _BLOCK
    if num_threads > 1 and nblocks > 1:
        for blk in prange(nblocks, nogil=True, schedule="static",
                          num_threads=num_threads):
            start = blk * _BLOCK
            memcpy(d + start, s + start, min(_BLOCK, n - start) * sizeof(real))
    else:
        with nogil:
            memcpy(d, s, n * sizeof(real))
