/* A NumPy memory handler that keeps freed large blocks for reuse.
 *
 * Why: a full-size output is written once per call.  Fresh memory from the
 * operating system costs a page fault and the kernel zeroing every page on the
 * first write (measured 1.5-1.8 ms per 38.7 MB on the development VM, a fifth
 * of a LayerNorm training step).  glibc returns blocks above its mmap
 * threshold (at most 32 MiB) to the system on free, and trims the heap, so a
 * training loop that allocates the same outputs every step pays that each
 * step.  Arrays allocated through this handler go back to a small cache when
 * NumPy frees them; the next request of the same size takes one back, already
 * mapped.
 *
 * Every block carries a header (its malloc base and usable size) just below
 * the caller's pointer, which is aligned to a cache line; a block is reused
 * only for a request of exactly its size, whatever size NumPy passes to free.
 * Blocks below CACHE_MIN_BYTES pass straight through to malloc.  The cache
 * holds at most CACHE_SLOTS blocks and `limit` bytes (0 turns it off); it
 * evicts the oldest first.  NumPy may call a handler without the GIL, so the
 * cache state sits behind its own lock.
 */
#ifndef FASTBN_OUTPUT_CACHE_H
#define FASTBN_OUTPUT_CACHE_H

#include <Python.h>
#include <pythread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <numpy/arrayobject.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#define CACHE_SLOTS 32
#define CACHE_MIN_BYTES ((size_t)1 << 20)
#define CACHE_ALIGN 64  /* the caller's pointer starts a cache line */
#define CACHE_PAD (CACHE_ALIGN + 2 * sizeof(size_t))
#define HUGEPAGE_MIN_BYTES ((size_t)4 << 20)

typedef struct {
    char *ptr;    /* the caller's pointer */
    size_t size;  /* usable bytes */
} cached_block;

static struct {
    PyThread_type_lock lock;
    cached_block blocks[CACHE_SLOTS];  /* oldest first */
    int count;
    size_t bytes;
    size_t limit;
    uint64_t hits;
    uint64_t misses;
} cache;

/* The header: what malloc returned, then the usable size, just below ``ptr``. */
static size_t *header(void *ptr) {
    return (size_t *)ptr - 2;
}

static size_t block_size(void *ptr) {
    return header(ptr)[1];
}

static void release(void *ptr) {
    free((void *)header(ptr)[0]);
}

/* The caller's pointer inside ``base``, with its header written. */
static void *place(char *base, size_t size) {
    uintptr_t p = ((uintptr_t)base + 2 * sizeof(size_t) + CACHE_ALIGN - 1)
                  & ~(uintptr_t)(CACHE_ALIGN - 1);
    header((void *)p)[0] = (size_t)(uintptr_t)base;
    header((void *)p)[1] = size;
    return (void *)p;
}

/* Ask for transparent huge pages on a large block, as NumPy's own allocator does. */
static void hint_hugepages(char *base, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (bytes >= HUGEPAGE_MIN_BYTES) {
        uintptr_t page = 4096;
        uintptr_t start = ((uintptr_t)base + page - 1) & ~(page - 1);
        uintptr_t stop = ((uintptr_t)base + bytes) & ~(page - 1);
        if (stop > start) {
            madvise((void *)start, stop - start, MADV_HUGEPAGE);
        }
    }
#else
    (void)base;
    (void)bytes;
#endif
}

static void *new_block(size_t size) {
    if (size > SIZE_MAX - CACHE_PAD) {
        return NULL;
    }
    char *base = malloc(size + CACHE_PAD);
    if (base == NULL) {
        return NULL;
    }
    hint_hugepages(base, size + CACHE_PAD);
    return place(base, size);
}

static void drop_slot(int i) {
    cache.bytes -= cache.blocks[i].size;
    memmove(&cache.blocks[i], &cache.blocks[i + 1], (cache.count - i - 1) * sizeof(cached_block));
    cache.count -= 1;
}

/* A cached block of exactly `size` usable bytes (the newest), or NULL. */
static void *take_block(size_t size) {
    void *found = NULL;
    PyThread_acquire_lock(cache.lock, WAIT_LOCK);
    for (int i = cache.count - 1; i >= 0; --i) {
        if (cache.blocks[i].size == size) {
            found = cache.blocks[i].ptr;
            drop_slot(i);
            break;
        }
    }
    if (found != NULL) {
        cache.hits += 1;
    } else {
        cache.misses += 1;
    }
    PyThread_release_lock(cache.lock);
    return found;
}

/* Keep `ptr` for reuse, evicting the oldest blocks to stay within the limits; 0 if not kept. */
static int keep_block(void *ptr) {
    size_t size = block_size(ptr);
    void *evicted[CACHE_SLOTS];
    int nevicted = 0;
    int kept = 0;
    if (size < CACHE_MIN_BYTES) {
        return 0;
    }
    PyThread_acquire_lock(cache.lock, WAIT_LOCK);
    if (size <= cache.limit) {
        while (cache.count > 0 && (cache.count == CACHE_SLOTS || cache.bytes + size > cache.limit)) {
            evicted[nevicted++] = cache.blocks[0].ptr;
            drop_slot(0);
        }
        cache.blocks[cache.count].ptr = ptr;
        cache.blocks[cache.count].size = size;
        cache.count += 1;
        cache.bytes += size;
        kept = 1;
    }
    PyThread_release_lock(cache.lock);
    for (int i = 0; i < nevicted; ++i) {
        release(evicted[i]);
    }
    return kept;
}

static void *cache_malloc(void *ctx, size_t size) {
    (void)ctx;
    void *p = size >= CACHE_MIN_BYTES ? take_block(size) : NULL;
    return p != NULL ? p : new_block(size);
}

static void *cache_calloc(void *ctx, size_t nelem, size_t elsize) {
    (void)ctx;
    if (elsize != 0 && nelem > SIZE_MAX / elsize) {
        return NULL;
    }
    size_t size = nelem * elsize;
    void *p = size >= CACHE_MIN_BYTES ? take_block(size) : NULL;
    if (p == NULL) {
        p = new_block(size);
    }
    if (p != NULL) {
        memset(p, 0, size);
    }
    return p;
}

static void *cache_realloc(void *ctx, void *ptr, size_t new_size) {
    (void)ctx;
    if (ptr == NULL) {
        return new_block(new_size);
    }
    /* A fresh block and a copy: realloc could move the data off the alignment. */
    void *p = new_block(new_size);
    if (p != NULL) {
        size_t old = block_size(ptr);
        memcpy(p, ptr, old < new_size ? old : new_size);
        release(ptr);
    }
    return p;
}

static void cache_free(void *ctx, void *ptr, size_t size) {
    (void)ctx;
    (void)size;  /* the header's size is the truth */
    if (ptr != NULL && !keep_block(ptr)) {
        release(ptr);
    }
}

static PyDataMem_Handler cache_handler = {
    "fastbn_output_cache",
    1,
    {NULL, cache_malloc, cache_calloc, cache_realloc, cache_free},
};

/* Set up the lock; 0 on success. */
static int cache_init(size_t limit) {
    cache.lock = PyThread_allocate_lock();
    cache.limit = limit;
    return cache.lock == NULL ? -1 : 0;
}

/* Set the byte limit, freeing the oldest blocks beyond it. */
static void cache_set_limit(size_t limit) {
    void *evicted[CACHE_SLOTS];
    int nevicted = 0;
    PyThread_acquire_lock(cache.lock, WAIT_LOCK);
    cache.limit = limit;
    while (cache.count > 0 && cache.bytes > limit) {
        evicted[nevicted++] = cache.blocks[0].ptr;
        drop_slot(0);
    }
    PyThread_release_lock(cache.lock);
    for (int i = 0; i < nevicted; ++i) {
        release(evicted[i]);
    }
}

/* (limit, cached blocks, cached bytes, hits, misses) under the lock. */
static void cache_stats(size_t *limit, int *count, size_t *bytes, uint64_t *hits,
                        uint64_t *misses) {
    PyThread_acquire_lock(cache.lock, WAIT_LOCK);
    *limit = cache.limit;
    *count = cache.count;
    *bytes = cache.bytes;
    *hits = cache.hits;
    *misses = cache.misses;
    PyThread_release_lock(cache.lock);
}

#endif
