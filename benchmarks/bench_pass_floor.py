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

The **float64 floor** makes the same passes, but its two reductions accumulate
in float64, as fastbn's contract requires for float32 input (``API.md``).  It
converts each element once and keeps the two sums a batch norm needs (x and
x * x; dy and dy * x) in registers, reassociated, with no pivot and one sum for
the whole array instead of one per channel: less work than any stable
per-channel reduction.  ``torch / floor64`` bounds the lead that any
implementation keeping that contract can have over PyTorch here.

One process times floor, fastbn's layer step and PyTorch's module step in
interleaved rounds (the order alternating), each ``--block`` calls per round
with the first untimed, on the same ``--threads``; medians.

``--phases`` times, for the channel-contiguous cases, each of the four passes
on its own instead: fastbn's row kernels through ``fastbn._cpu.driver``
(statistics, normalise, gradient sums, dx: what the layer's step runs there)
beside the floors' passes of the same kind.
"""

import argparse

import numba
import numpy as np
from bench_training_step import (CASES, case_inputs, make_fastbn, make_torch, pinned_torch,
                                 time_interleaved)
from numba import njit, prange

import fastbn
from fastbn._cpu import driver
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


@njit(fastmath=True, nogil=True)
def _moments64(a):
    """``sum(a) + 1e-30 * sum(a * a)`` accumulated in float64, reassociated (vectorised)."""
    s1 = 0.0
    s2 = 0.0
    for i in range(a.shape[0]):
        u = np.float64(a[i])
        s1 += u
        s2 += u * u
    return s1 + s2 * 1e-30


@njit(fastmath=True, nogil=True)
def _grad_sums64(g, b):
    """``sum(g) + 1e-30 * sum(g * b)`` accumulated in float64, reassociated (vectorised)."""
    s1 = 0.0
    s2 = 0.0
    for i in range(g.shape[0]):
        u = np.float64(g[i])
        s1 += u
        s2 += u * np.float64(b[i])
    return s1 + s2 * 1e-30


@njit(inline="always")
def _share(t, threads, n):
    """Thread ``t``'s contiguous share of ``n`` elements, in whole chunks."""
    chunks = (n + CHUNK - 1) // CHUNK
    c0, c1 = chunks * t // threads, chunks * (t + 1) // threads
    return c0 * CHUNK, min(n, c1 * CHUNK)


@njit(parallel=True, fastmath=True, nogil=True)
def read_pass(x, dy, grad, wide):
    """A reduction pass: the statistics' (x) or, if ``grad``, the gradient sums' (x and dy).

    ``wide``: accumulate in float64 (the float64 floor).  Returns a factor near
    1 that depends on the sums, so that they are not optimised away.
    """
    threads = numba.get_num_threads()
    n = x.shape[0]
    part = np.zeros(threads)
    for t in prange(threads):
        lo, hi = _share(t, threads, n)
        if grad:
            part[t] = _grad_sums64(dy[lo:hi], x[lo:hi]) if wide else _dot(x[lo:hi], dy[lo:hi])
        else:
            part[t] = _moments64(x[lo:hi]) if wide else _sum(x[lo:hi])
    return np.float32(1) + np.float32(part.sum() * 1e-30)


@njit(parallel=True, fastmath=True, nogil=True)
def write_pass(x, dy, a, b, out, grad, nontemporal):
    """An output pass, each thread's share walked backwards: ``a*x + 0.5``, or ``a*x + b*dy``."""
    threads = numba.get_num_threads()
    n = x.shape[0]
    for t in prange(threads):
        lo, hi = _share(t, threads, n)
        for c1 in range(hi, lo, -CHUNK):
            c0 = max(lo, c1 - CHUNK)
            if grad:
                _write_combine((x[c0:c1], dy[c0:c1], a, b), out[c0:c1], nontemporal)
            else:
                _write_affine((x[c0:c1], a, np.float32(0.5)), out[c0:c1], nontemporal)
        if nontemporal:
            store_fence()


def floor_step(x, dy, y, dx, nontemporal, wide):
    """The four passes of a training step, minimal arithmetic; returns a checksum.

    ``wide``: the reductions accumulate in float64 (the float64 floor).
    """
    a = read_pass(x, dy, False, wide)                     # forward: read x
    write_pass(x, dy, a, a, y, False, nontemporal)        # read x, write y
    b = read_pass(x, dy, True, wide)                      # backward: read x and dy
    write_pass(x, dy, a, b, dx, True, nontemporal)        # read x and dy, write dx
    return a + b


def make_floor(x, dy, nontemporal, wide=False):
    flat = [a.reshape(-1) for a in (x, dy)]
    y, dx = np.empty_like(flat[0]), np.empty_like(flat[0])
    return lambda: floor_step(flat[0], flat[1], y, dx, nontemporal, wide)


def _phase_contenders(x, dy):
    """Each pass of fastbn's row kernels and of the two floors, on channel-contiguous ``x``."""
    x3, dy3 = (a.reshape(-1, a.shape[-1], 1) for a in (x, dy))
    y3, dx3 = np.empty_like(x3), np.empty_like(x3)
    C, count = x3.shape[1], x3.shape[0]
    weight, bias = np.ones(C), np.zeros(C)
    _, mean, m2 = driver.moments(x3)
    invstd = 1.0 / np.sqrt(m2 / count + 1e-5)
    sum_g, sum_gx = driver.grad_sums(dy3, x3, x3, mean, invstd, weight, bias, 0)
    xf, dyf, yf, dxf = (a.reshape(-1) for a in (x3, dy3, y3, dx3))
    a = b = np.float32(1)
    return {
        "statistics": lambda: driver.moments(x3),
        "statistics floor": lambda: read_pass(xf, dyf, False, False),
        "statistics floor64": lambda: read_pass(xf, dyf, False, True),
        "normalise": lambda: driver.normalize(x3, mean, invstd, weight, bias, None, False, y3),
        "normalise floor": lambda: write_pass(xf, dyf, a, b, yf, False, False),
        "normalise floor streaming": lambda: write_pass(xf, dyf, a, b, yf, False, True),
        "gradient sums": lambda: driver.grad_sums(dy3, x3, x3, mean, invstd, weight, bias, 0),
        "gradient sums floor": lambda: read_pass(xf, dyf, True, False),
        "gradient sums floor64": lambda: read_pass(xf, dyf, True, True),
        "dx": lambda: driver.input_grad(dy3, x3, x3, mean, invstd, weight, bias, 0, sum_g, sum_gx,
                                        count, True, dx3, None),
        "dx floor": lambda: write_pass(xf, dyf, a, b, dxf, True, False),
        "dx floor streaming": lambda: write_pass(xf, dyf, a, b, dxf, True, True),
    }


def _print_phases(label, ms):
    """One line per case: each fastbn pass, then its floor passes (output passes: the faster
    of plain and streaming stores), ms."""
    cells = []
    for phase in ("statistics", "normalise", "gradient sums", "dx"):
        if f"{phase} floor64" in ms:
            floors = f"{ms[f'{phase} floor']:.3f} / {ms[f'{phase} floor64']:.3f}"
        else:
            floors = f"{min(ms[f'{phase} floor'], ms[f'{phase} floor streaming']):.3f}"
        cells.append(f"{phase} {ms[phase]:.3f} ({floors})")
    print(f"{label}: " + "; ".join(cells), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--block", type=int, default=4)
    parser.add_argument("--cases", nargs="+", default=["batch"],
                        help="families or substrings of case labels")
    parser.add_argument("--phases", action="store_true",
                        help="time each pass on its own (channel-contiguous cases)")
    args = parser.parse_args(argv)
    torch = pinned_torch(args.threads)
    numba.set_num_threads(args.threads)
    print(f"threads={args.threads} repeats={args.repeats} block={args.block} float32, "
          f"fastbn {fastbn.__version__}, torch {torch.__version__}")
    if args.phases:
        print("ms per pass: fastbn (floor / floor64)")
    else:
        print(f"{'case':52s} {'floor ms':>9s} {'floor64 ms':>11s} {'fastbn ms':>10s} "
              f"{'torch ms':>9s} {'fastbn/floor':>13s} {'fastbn/floor64':>15s} "
              f"{'torch/floor':>12s} {'torch/floor64':>14s} {'torch/fastbn':>13s}")
    rng = np.random.default_rng(0)
    for label, case in CASES.items():
        if case.residual or case.plain is not None or not any(
                w == case.family or w in label for w in args.cases):
            continue
        x, dy = case_inputs(case.shape, rng)
        if args.phases:
            if case.channels_last or len(case.shape) == 2:
                _print_phases(label, {k: 1e3 * v for k, v in time_interleaved(
                    _phase_contenders(x, dy), args.repeats, 3, args.block).items()})
            continue
        contenders = {
            "floor-streaming": make_floor(x, dy, True),
            "floor-plain": make_floor(x, dy, False),
            "floor64-streaming": make_floor(x, dy, True, wide=True),
            "floor64-plain": make_floor(x, dy, False, wide=True),
            "fastbn": make_fastbn(case.fastbn(), x, dy, None),
            "torch": make_torch(torch, case.torch(torch.nn), x, dy, None, case.channels_last),
        }
        ms = {k: 1e3 * v for k, v in
              time_interleaved(contenders, args.repeats, 3, args.block).items()}
        floor = min(ms["floor-streaming"], ms["floor-plain"])
        floor64 = min(ms["floor64-streaming"], ms["floor64-plain"])
        print(f"{label:52s} {floor:9.2f} {floor64:11.2f} {ms['fastbn']:10.2f} {ms['torch']:9.2f} "
              f"{ms['fastbn'] / floor:12.2f}x {ms['fastbn'] / floor64:14.2f}x "
              f"{ms['torch'] / floor:11.2f}x {ms['torch'] / floor64:13.2f}x "
              f"{ms['torch'] / ms['fastbn']:12.2f}x", flush=True)


if __name__ == "__main__":
    main()
