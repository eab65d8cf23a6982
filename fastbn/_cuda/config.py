"""CUDA tunables, read on the host at every call (never inside a kernel).

Tests patch them small so the CUDA simulator runs a handful of threads.  They
fix the partition of the statistics and therefore their exact rounding: results
are bitwise reproducible from run to run for a given shape and configuration.
"""

#: Threads per block of every kernel; a power of two (the block merge is a tree).
THREADS_PER_BLOCK = 256

#: Elements of one channel that one block reduces (channel-runs family): a chunk
#: is ``group`` whole runs, or a piece of ``CHUNK_ELEMENTS`` of one long run.
CHUNK_ELEMENTS = 16384

#: Widest column tile of the channel-contiguous rows family (a warp's width):
#: a block covers ``tile`` adjacent channels and ``CHUNK_ELEMENTS // tile`` rows.
MAX_TILE_WIDTH = 32

#: Longest row (layer, group, instance and RMS norm) that one block handles whole:
#: statistics, then the normalise or input-gradient pass over the row while it is
#: still in cache.  Longer rows are cut into ``CHUNK_ELEMENTS`` pieces whose partials
#: merge in a second launch (one more read of the row).
ROW_BLOCK_ELEMENTS = 16384
