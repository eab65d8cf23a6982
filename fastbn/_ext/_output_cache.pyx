# cython: language_level=3
"""Full-size outputs from a cache of freed blocks (see ``_output_cache.h`` for why and how).

``allocate`` runs a NumPy constructor (``np.empty``, ``np.empty_like``) with
the caching handler installed; the new array keeps the handler, so its memory
returns to the cache when NumPy frees it, wherever that happens.  Other NumPy
allocations never see the handler: it is installed only around that one call
(NumPy keeps the handler in a context variable, so other threads are
unaffected).
"""

from libc.stdint cimport uint64_t
from cpython.pycapsule cimport PyCapsule_New


cdef extern from "_output_cache.h":
    ctypedef struct handler_t "PyDataMem_Handler":
        pass
    handler_t cache_handler
    size_t CACHE_MIN_BYTES
    int import_numpy "_import_array" () except -1
    int cache_init(size_t limit)
    void cache_set_limit(size_t limit)
    void cache_stats(size_t *limit, int *count, size_t *nbytes, uint64_t *hits, uint64_t *misses)
    object PyDataMem_SetHandler(object handler)

import_numpy()
if cache_init(0) != 0:
    raise MemoryError("fastbn: cannot allocate the output cache's lock")

_HANDLER = PyCapsule_New(<void *>&cache_handler, "mem_handler", NULL)


#: Smaller blocks pass straight through to malloc.
MIN_BYTES = CACHE_MIN_BYTES


def allocate(make, *args):
    """``make(*args)`` (a NumPy constructor) with its memory from, and back to, the cache."""
    previous = PyDataMem_SetHandler(_HANDLER)
    try:
        return make(*args)
    finally:
        PyDataMem_SetHandler(previous)


def set_limit(size_t nbytes):
    """Keep at most ``nbytes`` of freed blocks (0: keep none); frees what is over at once."""
    cache_set_limit(nbytes)


def stats():
    """``(limit, blocks, bytes, hits, misses)``: the limit, what is cached, and reuse counts."""
    cdef size_t limit, nbytes
    cdef int count
    cdef uint64_t hits, misses
    cache_stats(&limit, &count, &nbytes, &hits, &misses)
    return limit, count, nbytes, hits, misses
