"""Training-step time of SyncBatchNorm vs plain batch norm on the local slice (issue 10).

Run under MPI, one process per rank, e.g.::

    NUMBA_NUM_THREADS=1 mpirun -n 3 python benchmarks/bench_sync.py

(with Open MPI as root add ``--allow-run-as-root``; with more ranks than
cores add ``--oversubscribe --mca mpi_yield_when_idle 1``, or waiting ranks
spin on the cores the others need).  Every rank holds an ``(8, 64, 56, 56)``
float32 slice (``--shape``).  A step is ``forward`` + ``backward`` in training
mode.  Each round times, on every rank, in rotating order with a barrier
(untimed) before each:

* ``SyncBatchNorm`` on ``COMM_WORLD`` (the whole batch's statistics: one
  Allgather forward, one backward);
* ``SyncBatchNorm`` on ``COMM_SELF``: the same code path with one-rank
  collectives, i.e. the local work alone;
* ``BatchNorm2d`` on the local slice (no communication);
* ``BatchNorm2d`` with an Allgather of the same size after its forward and
  after its backward: SyncBatchNorm's two synchronisation points without its
  statistics (on an oversubscribed or shared machine their cost is waiting
  for descheduled ranks);
* the two Allgathers alone.

A step takes as long as its slowest rank, so a round's time is the maximum
over ranks.  Rank 0 prints the medians over rounds.
"""

import argparse
import os
import time

import numpy as np
from mpi4py import MPI

import fastbn


def _step(layer, x, dy, exchange=None):
    """A training step, calling ``exchange()`` after the forward and after the backward.

    With a plain layer that gives it SyncBatchNorm's synchronisation points (one
    per pass) without its statistics.
    """
    exchange = exchange or (lambda: None)
    layer(x)
    exchange()
    layer.backward(dy)
    exchange()


def _allgather(comm, C):
    """One Allgather of SyncBatchNorm's message (2 * C + 1 float64 per rank)."""
    send = np.zeros(2 * C + 1)
    recv = np.empty((comm.Get_size(), send.size))
    return lambda: comm.Allgather(send, recv)


def _time_rounds(comm, fns, repeats, warmup):
    """Per name, the per-round maximum over ranks of one call's seconds."""
    names = list(fns)
    samples = {name: [] for name in names}
    for r in range(warmup + repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            comm.Barrier()
            t0 = time.perf_counter()
            fns[name]()
            elapsed = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
            if r >= warmup:
                samples[name].append(elapsed)
    return samples


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[8, 64, 56, 56],
                        help="per-rank input shape (N, C, H, W)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    shape = tuple(args.shape)
    C = shape[1]
    rng = np.random.default_rng(comm.Get_rank())
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    sync, plain = fastbn.SyncBatchNorm(C, comm=comm), fastbn.BatchNorm2d(C)
    alone = fastbn.SyncBatchNorm(C, comm=MPI.COMM_SELF)
    exchange = _allgather(comm, C)
    fns = {"SyncBatchNorm": lambda: _step(sync, x, dy),
           "SyncBatchNorm, COMM_SELF": lambda: _step(alone, x, dy),
           "BatchNorm2d (local)": lambda: _step(plain, x, dy),
           "BatchNorm2d + 2 Allgathers": lambda: _step(plain, x, dy, exchange),
           "2 Allgathers alone": lambda: (exchange(), exchange())}
    samples = _time_rounds(comm, fns, args.repeats, args.warmup)
    if comm.Get_rank() == 0:
        medians = {name: float(np.median(s)) for name, s in samples.items()}
        base = medians["BatchNorm2d (local)"]
        print(f"ranks: {comm.Get_size()}, per-rank shape {shape} float32, "
              f"fastbn threads per rank: {fastbn.get_num_threads()}, "
              f"cores: {len(os.sched_getaffinity(0))}, MPI: {MPI.Get_library_version()[:20]}, "
              f"{args.repeats} rounds")
        for name, med in medians.items():
            print(f"  {name:26s} {med * 1e3:8.2f} ms   ({med / base:5.2f}x local BatchNorm2d)")


if __name__ == "__main__":
    main()
