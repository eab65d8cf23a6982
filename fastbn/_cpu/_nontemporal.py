"""Non-temporal stores of the full-size outputs of the channel-runs and row-statistics kernels.

An ordinary store first reads the target cache line from memory (read for
ownership), so writing an output that does not stay in cache moves its bytes
twice.  A non-temporal store writes whole lines straight to memory.  On
(32, 64, 56, 56), (16, 64, 112, 112) and (64, 128, 112, 112) float32 the
training forward and backward took 0.84-0.96x the time with them while this
2-core VM's memory was busy, and 0.97-1.03x while it was quiet (2 threads,
one process, interleaved).  On outputs that fit in the last-level cache they
gain nothing, so the driver asks for them only from
``_config.NONTEMPORAL_MIN_BYTES``.  The row-statistics kernels (layer, group,
instance and RMS norm) use them too since 2026-12-03: their rows are normalised
or differentiated from cache, so an ordinary store's line read was most of a
pass (training step 0.81-0.88x the time, paired in one process); their
forward takes several short rows per task so as to fence once per task.  Batch
norm's row kernels use them in the normalise pass since 2026-12-04, a row
block (many tiles) as one span: training forward 0.82-0.93x the time on
(4096, 1024), (65536, 64) and channels-last 64; per tile they had been
1.15-2x slower, and the dx pass written per block took 1.03-1.08x the time
(six expanded vectors sliced per buffer), so it keeps plain stores.  The
compiled eval path does not use them: SSE2 streaming stores in its C loop
measured 1.6x slower than its plain stores.

LLVM's loop vectoriser will not widen a non-temporal store whose alignment it
cannot prove, so :func:`run_writer` lets the element loop (``span``) fill a
64-byte aligned stack buffer of ``BUFFER_ELEMENTS`` elements with ordinary,
vectorised code, then copies the buffer out in whole aligned lines.  The
elements before the first line boundary and after the last whole buffer are
written directly.  The values are the same either way: only how they are
stored changes.  With ``NUMBA_DISABLE_JIT=1`` the plain Python versions below
run (ordinary stores).
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .. import _config
from ._jit import LINE_BYTES, device, outlined, stack_buffer

#: Elements computed into the stack buffer per block (a multiple of a line for
#: float32 and float64; small enough to stay in L1 between fill and copy-out).
BUFFER_ELEMENTS = 256


def wanted_for(out):
    """Whether the kernels write ``out`` with non-temporal stores: by its size (host side)."""
    return out.nbytes >= _config.NONTEMPORAL_MIN_BYTES


def store_lines_nontemporal(src, dst, at):
    """``dst[at:at + len(src)] = src``, with non-temporal stores when jitted.

    ``&dst[at]`` must be ``LINE_BYTES``-aligned and ``src`` whole lines long.
    """
    dst[at:at + src.shape[0]] = src


def store_fence():
    """Order this thread's non-temporal stores before its later stores (x86 ``sfence``).

    Non-temporal stores are weakly ordered; without the fence another thread
    could see the end of the parallel region before it sees the data.
    """


@intrinsic
def _store_lines(typingctx, src, dst, at):
    """``store_lines_nontemporal``: one aligned vector load and ``!nontemporal`` store a line."""
    def codegen(context, builder, signature, args):
        src_type, dst_type = signature.args[0], signature.args[1]
        source = context.make_array(src_type)(context, builder, args[0])
        target = context.make_array(dst_type)(context, builder, args[1])
        element = context.get_data_type(dst_type.dtype)
        per_line = LINE_BYTES * 8 // dst_type.dtype.bitwidth
        line = ir.VectorType(element, per_line).as_pointer()
        base = cgutils.get_item_pointer(context, builder, dst_type, target, [args[2]],
                                        wraparound=False, boundscheck=False)
        nontemporal = builder.module.add_metadata([ir.IntType(32)(1)])
        start, step = (context.get_constant(types.intp, v) for v in (0, per_line))
        count = builder.extract_value(source.shape, 0)
        with cgutils.for_range_slice(builder, start, count, step) as (i, _):
            values = builder.load(builder.bitcast(builder.gep(source.data, [i]), line),
                                  align=LINE_BYTES)
            store = builder.store(values, builder.bitcast(builder.gep(base, [i]), line),
                                  align=LINE_BYTES)
            store.set_metadata("nontemporal", nontemporal)
        return context.get_dummy_value()
    return types.void(src, dst, at), codegen


@intrinsic
def _store_fence(typingctx):
    """``store_fence``: ``sfence`` on x86-64, a sequentially consistent fence elsewhere."""
    def codegen(context, builder, signature, args):
        if builder.module.triple.startswith("x86_64"):
            sfence = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse.sfence")
            builder.call(sfence, [])
        else:
            builder.fence("seq_cst")
        return context.get_dummy_value()
    return types.void(), codegen


@overload(store_lines_nontemporal, inline="always")
def _store_lines_jit(src, dst, at):
    return lambda src, dst, at: _store_lines(src, dst, at)


@overload(store_fence, inline="always")
def _store_fence_jit():
    return lambda: _store_fence()


@device
def aligned_head(out):
    """Elements of ``out`` (1-D, contiguous) before its first cache-line boundary.

    All of them if its elements do not start at multiples of their size (an
    unaligned NumPy view): no element then starts a line, so nothing is streamed.
    """
    misaligned = out.ctypes.data % LINE_BYTES
    if misaligned % out.itemsize != 0:
        return out.shape[0]
    return min(out.shape[0], (LINE_BYTES - misaligned) % LINE_BYTES // out.itemsize)


def run_writer(span):
    """``write(params, out, nontemporal)``: ``span`` over all of the 1-D output ``out``.

    ``span(params, lo, hi, dst)`` computes elements ``[lo, hi)`` of the output
    from ``params`` into ``dst`` (``out[lo:hi]`` or the stack buffer); it may
    also write other outputs of its own directly.  Without ``nontemporal``
    that is one direct call.  With it, the head and tail are written directly
    and the whole buffers in between with non-temporal stores; the kernel calls
    :func:`store_fence` once its task is done.  The buffered loop is a function
    of its own: inlined beside the direct call, it made short runs (784
    elements) 1.3-1.7x slower even when not taken.
    """
    @outlined
    def buffered(params, out):
        n = out.shape[0]
        buf = stack_buffer(out, BUFFER_ELEMENTS)
        lo = aligned_head(out)
        span(params, 0, lo, out[:lo])
        blocks = (n - lo) // BUFFER_ELEMENTS
        for _ in range(blocks):
            span(params, lo, lo + BUFFER_ELEMENTS, buf)
            store_lines_nontemporal(buf, out, lo)
            lo += BUFFER_ELEMENTS
        span(params, lo, n, out[lo:])

    @device
    def write(params, out, nontemporal):
        if nontemporal:
            buffered(params, out)
        else:
            span(params, 0, out.shape[0], out)
    return write
