/* Inner loops of the eval-mode forward, with run-time SIMD dispatch.
 *
 * The arithmetic is the eval contract (see _inference.pyx), in the data's
 * type T, with per-channel constants m, k, b already converted to T:
 *     v = (x - m) * k + b  [+ r]  [relu: v < 0 ? 0 : v]
 * The loops are plain C so that GCC/Clang can clone them per instruction set
 * (target_clones: AVX-512F or AVX2 copies chosen at load time on CPUs that
 * have them, the baseline otherwise): while the data sits in cache the loop
 * is compute-bound, so the vector width shows (with float64 arithmetic, one
 * thread on (1, 64, 56, 56) float32 took 55 us with SSE2, 35 us with AVX2
 * and 21 us with AVX-512 on an AMD EPYC).  This is not -march=native: the
 * build runs on any x86-64, and every clone rounds identically (no FMA:
 * built with -ffp-contract=off; + - * are correctly rounded in every ISA).
 * Without glibc ifunc support (macOS, Windows, musl, non-x86) the baseline
 * loop is compiled alone.
 */
#ifndef FASTBN_KERNELS_H
#define FASTBN_KERNELS_H

#include <stddef.h>
#include <stdlib.h> /* defines __GLIBC__ where glibc is the libc */

#if defined(__x86_64__) && defined(__GLIBC__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define FASTBN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#endif
#ifndef FASTBN_CLONES
#define FASTBN_CLONES
#endif

/* One channel's run of n elements: scalar m, k, b. */
#define FASTBN_RUN(NAME, T)                                                   \
FASTBN_CLONES static void NAME(const T *x, const T *r, T *y, ptrdiff_t n,     \
                               T m, T k, T b, int relu)                       \
{                                                                             \
    ptrdiff_t i;                                                              \
    T v;                                                                      \
    if (!r && !relu)                                                          \
        for (i = 0; i < n; i++) y[i] = (x[i] - m) * k + b;                    \
    else if (!r)                                                              \
        for (i = 0; i < n; i++) {                                             \
            v = (x[i] - m) * k + b;                                           \
            y[i] = v < 0 ? 0 : v;                                             \
        }                                                                     \
    else if (!relu)                                                           \
        for (i = 0; i < n; i++) y[i] = (x[i] - m) * k + b + r[i];             \
    else                                                                      \
        for (i = 0; i < n; i++) {                                             \
            v = (x[i] - m) * k + b + r[i];                                    \
            y[i] = v < 0 ? 0 : v;                                             \
        }                                                                     \
}

/* n consecutive channels of one row: per-channel m, k, b. */
#define FASTBN_ROW(NAME, T)                                                   \
FASTBN_CLONES static void NAME(const T *x, const T *r, T *y, ptrdiff_t n,     \
                               const T *m, const T *k, const T *b, int relu)  \
{                                                                             \
    ptrdiff_t c;                                                              \
    T v;                                                                      \
    if (!r && !relu)                                                          \
        for (c = 0; c < n; c++) y[c] = (x[c] - m[c]) * k[c] + b[c];           \
    else if (!r)                                                              \
        for (c = 0; c < n; c++) {                                             \
            v = (x[c] - m[c]) * k[c] + b[c];                                  \
            y[c] = v < 0 ? 0 : v;                                             \
        }                                                                     \
    else if (!relu)                                                           \
        for (c = 0; c < n; c++) y[c] = (x[c] - m[c]) * k[c] + b[c] + r[c];    \
    else                                                                      \
        for (c = 0; c < n; c++) {                                             \
            v = (x[c] - m[c]) * k[c] + b[c] + r[c];                           \
            y[c] = v < 0 ? 0 : v;                                             \
        }                                                                     \
}

FASTBN_RUN(fastbn_run_f32, float)
FASTBN_RUN(fastbn_run_f64, double)
FASTBN_ROW(fastbn_row_f32, float)
FASTBN_ROW(fastbn_row_f64, double)

#endif /* FASTBN_KERNELS_H */
