"""Fair timing: pinned thread counts, warm-up, interleaved rounds, medians.

Every implementation of a case runs once per round, and the order rotates from
round to round, so a noisy neighbour or a frequency change hits all of them
alike.  Before each call the timer pauses for a short gap (untimed): the
implementations run on different thread pools (Numba's and the extension's
OpenMP, PyTorch's own bundled OpenMP), and a pool that has just finished keeps
spinning for a few milliseconds (libgomp's default ``GOMP_SPINCOUNT``), taking
cores from whichever implementation runs next.  The garbage collector is
paused while timing.
"""

import contextlib
import gc
import time

from fastbn import _threads


@contextlib.contextmanager
def pinned_threads(n, torch=None):
    """Run fastbn (and ``torch``, when given) on ``n`` threads; restore both afterwards."""
    fastbn_before = _threads._requested
    torch_before = torch.get_num_threads() if torch is not None else None
    try:
        _threads.set_num_threads(n)
        if torch is not None:
            torch.set_num_threads(n)
        yield
    finally:
        _threads.set_num_threads(fastbn_before)
        if torch is not None:
            torch.set_num_threads(torch_before)


def measure(fns, repeats, warmup=1, sync=None, on_round=None, gap=0.0):
    """Time zero-argument callables in interleaved rounds.

    Parameters
    ----------
    fns : dict of name -> callable
    repeats : int, timed rounds (each runs every callable once)
    warmup : int, untimed rounds first (JIT compilation, caches, page faults)
    sync : callable or None, called after each call inside the timing (CUDA)
    on_round : callable or None, called after every round, warm-up included
    gap : float, seconds to sleep (untimed) before each call

    Returns
    -------
    dict of name -> list of seconds, one per timed round.
    """
    sync = sync or (lambda: None)
    names = list(fns)
    samples = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(warmup + repeats):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                if gap:
                    time.sleep(gap)
                start = time.perf_counter()
                fns[name]()
                sync()
                elapsed = time.perf_counter() - start
                if r >= warmup:
                    samples[name].append(elapsed)
            if on_round is not None:
                on_round()
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples

