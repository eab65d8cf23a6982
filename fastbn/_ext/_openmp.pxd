# cython: language_level=3
"""The one OpenMP shim: whether this build has OpenMP.

``prange`` compiles to a serial loop without ``-fopenmp``; this flag lets the
host report which build it got.
"""

cdef extern from *:
    """
    #ifdef _OPENMP
    #define FASTBN_HAVE_OPENMP 1
    #else
    #define FASTBN_HAVE_OPENMP 0
    #endif
    """
    const bint FASTBN_HAVE_OPENMP
