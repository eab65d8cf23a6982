"""Kernel launches straight through the CUDA driver.

Numba's dispatcher types every argument and packs it through ``cuda.core`` at
each launch: 30 us for one vector argument, 120 us for twelve, measured on an
H200, against a few microseconds of GPU time for a small batch.  Here each
call's signature is a tuple computed from :class:`~.devarray.DeviceArray`
fields; a new signature is compiled once through the dispatcher (and its disk
cache), and every launch is one ``cuLaunchKernel`` over a block of 8-byte
parameters (about 5 us).

The parameters follow Numba's calling convention for kernels: an array is
``meminfo, parent, nitems, itemsize, data, *shape, *strides`` (the first two
unused, zero), a boolean, an integer and a float are one value each (int64,
float64; a boolean's byte is the low byte of its slot).  Under the CUDA
simulator the same launch runs the kernel in Python on NumPy views.
"""

import ctypes
import struct
import threading

from numba.core import types
from numba.np.numpy_support import from_dtype

from . import devarray
from .arrays import numba_view
from .devarray import DeviceArray

#: Compiled launch targets by (kernel, device id, signature key).
_TARGETS = {}


def launch(kernel, blocks, threads, shared_bytes, *args):
    """Run ``kernel`` on ``blocks`` blocks of ``threads``, with ``shared_bytes`` of shared memory.

    ``args`` are :class:`DeviceArray` views and Python bools, ints and floats.
    """
    if devarray.simulated():
        _simulate(kernel, blocks, threads, shared_bytes, args)
        return
    if blocks == 0:
        return
    ctx = devarray.ensure_context()
    key = (kernel, ctx.device.id, tuple(map(_arg_key, args)))
    target = _TARGETS.get(key)
    if target is None:
        target = _TARGETS[key] = _Target(kernel, args)
    target.launch(blocks, threads, shared_bytes, _flatten(args))


class _Target:
    """A compiled signature: its CUfunction and a reusable parameter block.

    ``cuLaunchKernel`` copies the parameters when called, so one block per
    signature serves every launch; a lock keeps threads from packing it at once.
    """

    def __init__(self, kernel, args):
        compiled = kernel.compile(signature(args))
        self.name = kernel.py_func.__name__
        self.function = devarray.driver().CUfunction(int(compiled.library.get_cufunc().handle))
        self.format = parameter_format(args)
        nslots = struct.calcsize(self.format) // 8
        self.params = ctypes.create_string_buffer(8 * nslots)
        base = ctypes.addressof(self.params)
        self.pointers = (ctypes.c_void_p * nslots)(*(base + 8 * i for i in range(nslots)))
        self.pointers_address = ctypes.addressof(self.pointers)
        self.lock = threading.Lock()

    def launch(self, blocks, threads, shared_bytes, values):
        driver = devarray.driver()
        with self.lock:
            struct.pack_into(self.format, self.params, 0, *values)
            err, = driver.cuLaunchKernel(self.function, blocks, 1, 1, threads, 1, 1, shared_bytes,
                                         0, self.pointers_address, 0)
        if err != driver.CUresult.CUDA_SUCCESS:
            raise RuntimeError(f"launching {self.name} failed: {err.name}")


def _arg_key(a):
    """What of an argument decides the compiled signature."""
    if type(a) is DeviceArray:
        return a.dtype.char, a.ndim, a.c_contiguous
    return type(a)


def signature(args):
    """The Numba argument types of a launch with ``args`` (arrays 'C' when C-contiguous)."""
    sig = []
    for a in args:
        if type(a) is DeviceArray:
            sig.append(types.Array(from_dtype(a.dtype), a.ndim, "C" if a.c_contiguous else "A"))
        elif type(a) is bool:
            sig.append(types.boolean)
        elif type(a) is int:
            sig.append(types.int64)
        elif type(a) is float:
            sig.append(types.float64)
        else:
            raise TypeError(f"unsupported kernel argument {type(a).__name__}")
    return tuple(sig)


def parameter_format(args):
    """The ``struct`` format of the launch's parameter block: one 8-byte slot per parameter."""
    fmt = ["="]
    for a in args:
        if type(a) is DeviceArray:
            fmt.append("q" * (5 + 2 * a.ndim))
        else:
            fmt.append("d" if type(a) is float else "q")
    return "".join(fmt)


def _flatten(args):
    """The parameter values of ``args`` in order (see the module docstring)."""
    out = []
    for a in args:
        if type(a) is DeviceArray:
            out += (0, 0, a.size, a.dtype.itemsize, a.ptr)
            out += a.shape
            out += a.strides
        else:
            out.append(a)
    return out


def _simulate(kernel, blocks, threads, shared_bytes, args):
    """The simulator's launch: device arrays become simulated arrays over the same memory."""
    sim_args = [numba_view(a) if type(a) is DeviceArray else a for a in args]
    if blocks:
        kernel[blocks, threads, 0, shared_bytes](*sim_args)
