"""Tunables, read on the host at call time (never inside jitted code).

Tests may patch these module globals; kernels receive them as arguments, so a
patched value takes effect on the next call without recompiling.  Chunk sizes
fix the statistics' partition of the data and therefore the exact rounding:
they depend only on the shape, never on the thread count.
"""

#: Elements per statistics chunk along a channel's reduced axis (channel-runs
#: family).  A chunk of float64 work this size stays in L1/L2 while its moments
#: are taken in two vectorisable passes.
CHUNK_ELEMENTS = 4096

#: Independent float64 accumulators per sum (a power of two) in the row-wise
#: norms' kernels: the inner loops run across them, so they vectorise; each
#: step adds four values per lane (``_cpu._primitives.BLOCK_ROWS``).  Part of
#: the fixed rounding order.
SUM_LANES = 16

#: The same for batch norm's channel-runs kernels.  32 lanes (four zmm
#: registers of float64) make each vector loop long enough to hide the
#: per-block bookkeeping of the per-channel kernels: the layer step on NCHW
#: maps takes 0.77-1.00x the time it takes with 16 lanes, except
#: (8, 256, 28, 28) at 0.93-1.09x (``benchmarks/bench_tunable.py``, four runs
#: with freshly compiled kernels); 64 lanes measured 0.97-1.08x of 32, and the
#: row-wise norms 1.03-1.10x slower with 32 than 16.  Fixed by nothing but this
#: value, so both decompositions (per channel, per chunk) still round alike.
RUN_SUM_LANES = 32

#: Longest run (bytes) of a channel whose successor the per-channel kernels
#: prefetch while reducing it; a longer one would leave cache before its turn
#: (and streams well by itself).
PREFETCH_MAX_RUN_BYTES = 1 << 16

#: Runs of at most this many elements per channel (``inner`` of the canonical
#: view, e.g. a 7x7 feature map) go to the row kernels, which loop over whole
#: rows of ``C * inner`` elements instead of paying a loop's overhead per run.
ROW_KERNEL_MAX_INNER = 256

#: Row kernels: at least this many elements per tile of consecutive rows, so a
#: vector loop runs over a long contiguous span even when C is small.  Each
#: pass keeps per-channel vectors expanded to a tile (six of them in dx, and
#: float64 accumulators in the gradient sums) in L1 beside the streams it
#: reads: 256-element tiles took the training step 0.87-0.94x the time of
#: 512-element ones on 16-64-channel rows from memory (once 1.05x), 0.94-1.03x
#: on the others (``benchmarks/README.md``, seventh session).
ROW_TILE_ELEMENTS = 256

#: Row statistics: tiles of at least this many elements.  They add
#: ``BLOCK_ROWS`` tiles side by side, i.e. that many interleaved streams a tile
#: apart, which the prefetchers follow poorly when tiles are long: 512-element
#: tiles took 1.7-2x the time of 128-element ones from memory on (65536, 64),
#: (100352, 64), (262144, 16) and (131072, 8).
ROW_STATS_TILE_ELEMENTS = 128

#: Row statistics prefetch the next tiles in software only for tiles up to
#: this length (bytes) and inputs of at least ``NONTEMPORAL_MIN_BYTES`` (read
#: from memory, not from the last-level cache).  Longer tiles are long streams
#: the hardware follows alone: from memory, the hints made the statistics
#: take 0.65x and 0.81x the time with 512-byte and 1 KiB tiles ((65536, 64),
#: (6272, 256)), 1.08x and 1.15-1.22x with 2 and 4 KiB tiles ((8192, 512),
#: (4096, 1024)).  In a training step, where (8, 28, 28, 256)'s 6.4 MB stay
#: in cache, they took it 1.03-1.06x; (32, 56, 56, 64) and (65536, 64) 0.91x.
ROW_STATS_PREFETCH_MAX_TILE_BYTES = 1024

#: Row kernels' gradient sums: tiles of at least this many elements are added
#: ``BLOCK_ROWS`` at a time (fewer accumulator loads and stores); shorter
#: tiles one at a time, which streams them from memory 1.4-1.8x faster
#: (measured on (65536, 64), (100352, 64) and (12544, 512) against (4096, 1024)).
ROW_SUMS_BLOCKED_MIN_TILE = 1024

#: Target elements per row block for channel-contiguous rows ((N, C) and
#: channels-last), rounded to whole tiles.
ROW_BLOCK_ELEMENTS = 1 << 17

#: Row kernels: from this many row blocks on, their count is rounded up to a
#: multiple of it and the rows shared out evenly, so that 2, 4 or 8 threads
#: get equal work (the blocks still depend on the shape alone).
ROW_BLOCKS_MULTIPLE = 8

#: A channel's slab (bytes) up to which the training forward/backward read it
#: once from memory and re-read it from cache (statistics, then normalise).
SLAB_CACHE_BYTES = 8 << 20

#: Channel-runs kernels write outputs of at least this many bytes with
#: non-temporal stores (``_cpu._nontemporal``): half the 32 MiB last-level
#: cache measured here, past which the output leaves cache before anyone reads
#: it, and each line would otherwise be read from memory before it is written.
#: On a 6.4 MB output they measured 0.95-1.05x: no gain.
NONTEMPORAL_MIN_BYTES = 16 << 20

#: Minimum channels per thread for the per-channel (cache-blocked) path; with
#: fewer channels the reduced axis is split into chunks across threads.
CHANNELS_PER_THREAD = 4

#: Below this many elements every CPU kernel (Numba and the Cython inference
#: path) runs on one thread: a parallel region costs more than it saves there,
#: and on a busy machine each one risks waiting for a descheduled thread.
PARALLEL_MIN_ELEMENTS = 1 << 15

#: Row kernels: at least this many tiles per block, so the per-block
#: accumulators (one per element of a tile) cost little next to the data.
ROW_BLOCK_MIN_TILES = 16

#: Row-wise norms (layer/group/instance/RMS): at most this many row blocks hold
#: the backward's affine-gradient partials (``2 * ROW_BLOCKS * len(weight)``
#: float64s, fixed by the shape, independent of the batch).
ROW_BLOCKS = 64

#: Row-wise norms: rows per thread from which a task takes whole rows rather
#: than pieces of rows.
ROWS_PER_THREAD = 4

#: Bytes of freed full-size outputs kept for reuse (``fastbn._memory``), so
#: that a training loop's outputs do not page-fault fresh memory each step;
#: ``fastbn.set_output_cache_limit`` changes it at run time.
OUTPUT_CACHE_BYTES = 256 << 20
