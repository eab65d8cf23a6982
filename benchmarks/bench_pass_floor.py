"""How far a batch norm training step can be ahead of another: the floor its memory passes set.

Run as ``python benchmarks/bench_pass_floor.py`` (``--cases`` takes substrings
of ``bench_training_step.CASES`` labels; ``--repeats 31``).

A training step with batch statistics must read the whole input before it can
write any output (the forward's mean and variance), and the whole input and
upstream gradient before any input gradient (the backward's two sums).  Once
the arrays no longer fit in the caches together, that is at least four passes
over memory: read x; read x and write y; read x and dy; read x and dy and write
dx (6 reads and 2 writes of the array's size).

The **floor** contender makes exactly those four passes with as little
arithmetic as a pass can have: a float32 ``fastmath`` sum, and one multiply-add
per output element, written the two ways fastbn's kernels write (plain stores;
streaming stores through ``fastbn._cpu._nontemporal.run_writer``), the second
read of each phase walking each thread's share backwards from where the first
ended (what is still in cache first).  The faster of the two variants is the
floor.  Any implementation of the step with these passes takes at least about
that long, so ``torch / floor`` bounds the lead any such implementation can
have over PyTorch on this machine, and ``fastbn / floor`` says how much of the
step is fastbn's own overhead.

One process times floor, fastbn's layer step and PyTorch's module step in
interleaved rounds (the order alternating), each ``--block`` calls per round
with the first untimed, on the same ``--threads``; medians.
"""

import argparse

import numba
import numpy as np
from bench_training_step import (CASES, case_inputs, make_fastbn, make_torch, pinned_torch,
                                 time_interleaved)
from numba import njit, prange

import fastbn
from fastbn._cpu._jit import device
from fastbn._cpu._nontemporal import run_writer, store_fence

#: Elements per inner chunk of a pass (64 KiB of float32).
CHUNK = 1 << 14


@device
def _affine_span(params, lo, hi, y):
    """``y = a * x + b`` over elements ``[lo, hi)`` of ``x``."""
    x, a, b = params
    xs = x[lo:hi]
    for i in range(xs.shape[0]):
        y[i] = xs[i] * a + b


@device
def _combine_span(params, lo, hi, y):
    """``y = a * x + b * dy`` over elements ``[lo, hi)``."""
    x, dy, a, b = params
    xs, gs = x[lo:hi], dy[lo:hi]
    for i in range(xs.shape[0]):
        y[i] = xs[i] * a + gs[i] * b


_write_affine = run_writer(_affine_span)
_write_combine = run_writer(_combine_span)


@njit(fastmath=True, nogil=True)
def _sum(a):
    """``sum(a)`` in float32, reassociated (vectorised)."""
    s = np.float32(0)
    for i in range(a.shape[0]):
        s += a[i]
    return s


@njit(fastmath=True, nogil=True)
def _dot(a, b):
    """``sum(a * b)`` in float32, reassociated (vectorised)."""
    s = np.float32(0)
    for i in range(a.shape[0]):
        s += a[i] * b[i]
    return s


@njit(inline="always")
def _share(t, threads, n):
    """Thread ``t``'s contiguous share of ``n`` elements, in whole chunks."""
    chunks = (n + CHUNK - 1) // CHUNK
    c0, c1 = chunks * t // threads, chunks * (t + 1) // threads
    return c0 * CHUNK, min(n, c1 * CHUNK)


@njit(parallel=True, fastmath=True, nogil=True)
def floor_step(x, dy, y, dx, nontemporal):
    """The four passes of a training step, minimal arithmetic; returns a checksum."""
    threads = numba.get_num_threads()
    n = x.shape[0]
    part = np.zeros(threads, np.float32)
    for t in prange(threads):              # forward: read x
        lo, hi = _share(t, threads, n)
        part[t] = _sum(x[lo:hi])
    a = np.float32(1) + part.sum() * np.float32(1e-30)
    for t in prange(threads):              # forward: read x, write y (backwards)
        lo, hi = _share(t, threads, n)
        for c1 in range(hi, lo, -CHUNK):
            c0 = max(lo, c1 - CHUNK)
            _write_affine((x[c0:c1], a, np.float32(0.5)), y[c0:c1], nontemporal)
        if nontemporal:
            store_fence()
    for t in prange(threads):              # backward: read x and dy
        lo, hi = _share(t, threads, n)
        part[t] = _dot(x[lo:hi], dy[lo:hi])
    b = np.float32(1) + part.sum() * np.float32(1e-30)
    for t in prange(threads):              # backward: read x and dy, write dx (backwards)
        lo, hi = _share(t, threads, n)
        for c1 in range(hi, lo, -CHUNK):
            c0 = max(lo, c1 - CHUNK)
            _write_combine((x[c0:c1], dy[c0:c1], a, b), dx[c0:c1], nontemporal)
        if nontemporal:
            store_fence()
    return a + b


def make_floor(x, dy, nontemporal):
    flat = [a.reshape(-1) for a in (x, dy)]
    y, dx = np.empty_like(flat[0]), np.empty_like(flat[0])
    return lambda: floor_step(flat[0], flat[1], y, dx, nontemporal)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--block", type=int, default=4)
    parser.add_argument("--cases", nargs="+", default=["batch"],
                        help="families or substrings of case labels")
    args = parser.parse_args(argv)
    torch = pinned_torch(args.threads)
    numba.set_num_threads(args.threads)
    print(f"threads={args.threads} repeats={args.repeats} block={args.block} float32, "
          f"fastbn {fastbn.__version__}, torch {torch.__version__}")
    print(f"{'case':52s} {'floor ms':>9s} {'fastbn ms':>10s} {'torch ms':>9s} "
          f"{'fastbn/floor':>13s} {'torch/floor':>12s} {'torch/fastbn':>13s}")
    rng = np.random.default_rng(0)
    for label, case in CASES.items():
        if case.residual or case.plain is not None or not any(
                w == case.family or w in label for w in args.cases):
            continue
        x, dy = case_inputs(case.shape, rng)
        contenders = {
            "floor-streaming": make_floor(x, dy, True),
            "floor-plain": make_floor(x, dy, False),
            "fastbn": make_fastbn(case.fastbn(), x, dy, None),
            "torch": make_torch(torch, case.torch(torch.nn), x, dy, None, case.channels_last),
        }
        ms = {k: 1e3 * v for k, v in
              time_interleaved(contenders, args.repeats, 3, args.block).items()}
        floor = min(ms["floor-streaming"], ms["floor-plain"])
        print(f"{label:52s} {floor:9.2f} {ms['fastbn']:10.2f} {ms['torch']:9.2f} "
              f"{ms['fastbn'] / floor:12.2f}x {ms['torch'] / floor:11.2f}x "
              f"{ms['torch'] / ms['fastbn']:12.2f}x", flush=True)


if __name__ == "__main__":
    main()
