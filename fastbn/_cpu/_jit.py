"""Numba decorators and type signatures shared by the CPU kernels.

Every kernel has one explicit signature per float dtype: inputs are typed
read-only (a writable array converts to that type, so read-only input needs no
extra compilation), outputs writable, and the per-channel vectors are float64.
A dtype's machine code is built (or loaded from the disk cache, see
``fastbn._jit_cache``) the first time that kernel runs on that dtype, so a
float32-only workload never pays for the float64 compilation.
"""

import functools

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.caching import FunctionCache
from numba.extending import intrinsic, overload

from .. import _threads, _welford
from .._jit_cache import enable_package_cache

F64 = types.float64
I64 = types.int64
BOOL = types.boolean
VEC = types.Array(F64, 1, "C")
VEC_IN = types.Array(F64, 1, "C", readonly=True)
PARTIALS = types.Array(F64, 3, "C")
GEOM = types.Array(I64, 1, "C", readonly=True)
PARTIALS_IN = types.Array(F64, 3, "C", readonly=True)
FLOATS = (types.float32, types.float64)


def arr(dtype, ndim, readonly=False):
    """A C-contiguous array type."""
    return types.Array(dtype, ndim, "C", readonly=readonly)


class Kernel:
    """A parallel kernel compiled per dtype of its first argument, on first use."""

    def __init__(self, fn, signature_of):
        self.py_func = fn
        self._signature_of = signature_of
        self._by_dtype = {}
        functools.update_wrapper(self, fn)

    def dispatcher(self, dtype):
        """The Numba dispatcher for ``dtype`` (float32 or float64), built once."""
        found = self._by_dtype.get(dtype)
        if found is None:
            numba_type = FLOATS[np.dtype(dtype) == np.float64]
            found = compiled([self._signature_of(numba_type)], parallel=True)(self.py_func)
            self._by_dtype[dtype] = found
        return found

    def __call__(self, first, *rest):
        return self.dispatcher(first.dtype)(first, *rest)


def launch_threads(size):
    """Set Numba's threads for kernels over ``size`` elements; returns the count."""
    n = _threads.threads_for(size)
    numba.set_num_threads(n)
    return n


def kernel(signature_of):
    """Decorate a parallel kernel; ``signature_of(numba_float_type)`` builds its signature."""
    return lambda fn: Kernel(fn, signature_of)


def compiled(signatures, **options):
    """``njit(signatures, nogil=True, **options)`` with fastbn's source-stamped disk cache."""
    def build(fn):
        dispatcher = enable_package_cache(njit(nogil=True, **options)(fn), FunctionCache)
        if numba.config.DISABLE_JIT:  # njit returned the Python function itself
            return dispatcher
        for signature in signatures:
            dispatcher.compile(signature)
        dispatcher.disable_compile()
        return dispatcher
    return build


def device(fn):
    """An inlined helper for the kernels (no signature: typed where it is used)."""
    return enable_package_cache(njit(inline="always", nogil=True)(fn), FunctionCache)


def outlined(fn):
    """A helper compiled as a function of its own (called, not inlined into the kernel's IR).

    Not cached by itself: it is only compiled into the kernels that call it,
    whose cache entries hold its machine code.
    """
    return njit(nogil=True)(fn)


chan_merge = device(_welford.chan_merge)
inverse_std = device(_welford.inverse_std)
relu = device(_welford.relu)


def as_element(like, value):
    """``value`` converted to the element type of ``like`` (an array or a scalar).

    The elementwise passes compute in the data's own dtype (float32 arithmetic
    runs twice as many lanes per instruction as float64); their per-channel
    constants are made in float64 and converted with this.
    """
    return np.asarray(like).dtype.type(value)


@overload(as_element, inline="always")
def _as_element_jit(like, value):
    element = like.dtype if isinstance(like, types.Array) else like
    return lambda like, value: element(value)


#: Bytes per cache line (the alignment of stack buffers and of non-temporal stores).
LINE_BYTES = 64


def _element_of(like):
    """The element type of ``like``: an array's dtype, or a scalar's own type."""
    return like.dtype if isinstance(like, types.Array) else like


def stack_buffer(like, n):
    """An uninitialised 1-D array of ``n`` elements of ``like``'s type (on the stack when jitted).

    ``like``: an array (its dtype) or a scalar (its type); ``n`` a literal.
    The buffer lives until the kernel returns, so it must not escape it.
    """
    return np.empty(n, np.asarray(like).dtype)


@intrinsic
def _stack_buffer(typingctx, like, n):
    """``stack_buffer``: an ``alloca`` in the function's entry block, line-aligned."""
    if not isinstance(n, types.IntegerLiteral):
        return None
    count = n.literal_value
    array_type = types.Array(_element_of(like), 1, "C")

    def codegen(context, builder, signature, args):
        element = context.get_data_type(array_type.dtype)
        with builder.goto_entry_block():
            memory = builder.alloca(ir.ArrayType(element, count))
            memory.align = LINE_BYTES
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(element))
        view = context.make_array(array_type)(context, builder)
        context.populate_array(view, data=builder.bitcast(memory, element.as_pointer()),
                               shape=[context.get_constant(types.intp, count)],
                               strides=[itemsize], itemsize=itemsize, meminfo=None)
        return view._getvalue()
    return array_type(like, n), codegen


@overload(stack_buffer, inline="always", prefer_literal=True)
def _stack_buffer_jit(like, n):
    return lambda like, n: _stack_buffer(like, n)


def contiguous_view(a, shape):
    """The elements of C-contiguous ``a`` (``prod(shape)`` of them) as an array of ``shape``.

    ``a.reshape(shape)`` without its run-time call: jitted, the view is built
    in place (tens of cycles less per call, which short runs and segments pay
    once or more each).  It borrows ``a``'s memory without a reference, so it
    must not outlive ``a`` (true of every use: views inside one kernel call).
    """
    return a[:int(np.prod(shape))].reshape(shape)


@intrinsic
def _contiguous_view(typingctx, a, shape):
    """``contiguous_view``: a C-contiguous array over ``a``'s data, strides from ``shape``."""
    if not (isinstance(a, types.Array) and a.layout == "C" and isinstance(shape, types.UniTuple)
            and isinstance(shape.dtype, types.Integer)):
        return None
    view_type = types.Array(a.dtype, shape.count, "C", readonly=not a.mutable)

    def codegen(context, builder, signature, args):
        source = context.make_array(a)(context, builder, args[0])
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(
            context.get_data_type(a.dtype)))
        dims = [builder.sext(d, itemsize.type) if d.type.width < itemsize.type.width else d
                for d in cgutils.unpack_tuple(builder, args[1], shape.count)]
        strides = [itemsize]
        for d in reversed(dims[1:]):
            strides.insert(0, builder.mul(strides[0], d))
        view = context.make_array(view_type)(context, builder)
        context.populate_array(view, data=source.data, shape=dims, strides=strides,
                               itemsize=itemsize, meminfo=None)
        return view._getvalue()
    return view_type(a, shape), codegen


@overload(contiguous_view, inline="always")
def _contiguous_view_jit(a, shape):
    return lambda a, shape: _contiguous_view(a, shape)


def prefetch_element(array, index):
    """Hint ``array[index]`` into cache (a no-op in plain Python, ``NUMBA_DISABLE_JIT=1``)."""


@intrinsic
def _prefetch_element(typingctx, array, index):
    """LLVM's ``llvm.prefetch`` (read, keep in all cache levels) of ``array[index]``."""
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]],
                                           wraparound=False, boundscheck=False)
        i32 = ir.IntType(32)
        hint = ir.FunctionType(ir.VoidType(), [pointer.type, i32, i32, i32])
        prefetch = cgutils.get_or_insert_function(builder.module, hint, "llvm.prefetch.p0")
        builder.call(prefetch, [pointer, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()
    return types.void(array, index), codegen


@overload(prefetch_element, inline="always")
def _prefetch_element_jit(array, index):
    return lambda array, index: _prefetch_element(array, index)


@device
def prefetch_lines(a, start, stop):
    """Ask the CPU to start loading the cache lines of ``a[start:stop]`` (1-D, in bounds).

    A hint only: results never depend on it.  Used where the hardware
    prefetcher cannot guess the next address (a channel's runs are one
    ``C * inner`` stride apart), one call per block of work so the loads of the
    next run overlap the arithmetic on this one.
    """
    step = max(1, 64 // a.itemsize)
    for i in range(start, min(stop, a.shape[0]), step):
        prefetch_element(a, i)
