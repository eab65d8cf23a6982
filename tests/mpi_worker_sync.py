"""MPI worker of ``test_sync_batchnorm.py``: run as ``mpirun -n P python mpi_worker_sync.py``.

Every rank builds the same global batches, trains a ``SyncBatchNorm`` on its
own slice (unequal sizes, rank 1 empty) and checks it against single-process
fastbn batch norm on the whole batch: outputs, running statistics and
gradients to 1e-6 (float32) / 1e-12 (float64), and statistics bitwise
identical on every rank.  Then the error paths: every rank raises together
(no deadlock) and nothing changes.  Prints one ``passed`` line per rank; any
failure aborts the whole job with a traceback.
"""

import sys
import traceback

import numpy as np
from mpi4py import MPI

import fastbn

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.Get_rank(), COMM.Get_size()

#: Batch slice of each rank (rank r gets SLICES[r % 5]): unequal, rank 1 empty.
SLICES = [3, 0, 4, 2, 1]

#: (per-sample shape, axis, dtype, layer keyword arguments, with a residual).
CASES = [
    ((3, 5, 4), 1, np.float32, {}, False),
    ((3, 5, 4), 1, np.float64, {}, False),
    ((4, 3, 3), -1, np.float32, {"momentum": None}, False),
    ((5,), 1, np.float64, {"affine": False}, False),
    ((6, 4), -1, np.float64, {"activation": "relu"}, True),
    ((2, 2, 3, 4), 1, np.float32, {"track_running_stats": False}, False),
]

TOL = {np.float32: 1e-6, np.float64: 1e-12}

REFERENCE = {2: fastbn.BatchNorm1d, 3: fastbn.BatchNorm1d, 4: fastbn.BatchNorm2d,
             5: fastbn.BatchNorm3d}


class CountingComm:
    """``COMM_WORLD`` counting its collectives (to show what communicates and what not)."""

    def __init__(self, comm):
        self.comm, self.calls = comm, 0

    def Get_size(self):
        return self.comm.Get_size()

    def Allgather(self, send, recv):
        self.calls += 1
        self.comm.Allgather(send, recv)


def my_slice():
    """This rank's slice of the batch axis, and the global batch size."""
    sizes = [SLICES[r % len(SLICES)] for r in range(SIZE)]
    start = sum(sizes[:RANK])
    return slice(start, start + sizes[RANK]), sum(sizes)


def close(actual, expected, dtype, what):
    tol = TOL[dtype]
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                               rtol=tol, atol=tol, err_msg=f"rank {RANK}: {what}")


def same_on_all_ranks(arrays, what):
    """Every rank holds bitwise identical ``arrays``."""
    mine = b"".join(np.ascontiguousarray(a).tobytes() for a in arrays if a is not None)
    every = COMM.allgather(mine)
    assert all(b == every[0] for b in every), f"rank {RANK}: {what} differ between ranks"


def check_case(sample_shape, axis, dtype, kwargs, with_residual, seed):
    """Two training steps, then eval, against the reference layer on the whole batch."""
    mine, n = my_slice()
    shape = (n,) + sample_shape
    C = shape[axis]
    rng = np.random.default_rng(seed)  # the same global data on every rank
    comm = CountingComm(COMM)
    sync = fastbn.SyncBatchNorm(C, axis=axis, comm=comm, dtype=dtype, **kwargs)
    ref = REFERENCE[len(shape)](C, axis=axis, dtype=dtype, **kwargs)
    if sync.affine:
        for layer in (sync, ref):
            layer.weight[...] = np.linspace(0.5, 1.5, C)
            layer.bias[...] = np.linspace(-1.0, 1.0, C)
    for step in range(2):
        x = (rng.standard_normal(shape) * 3.0 + 10.0).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        res = rng.standard_normal(shape).astype(dtype) if with_residual else None
        y = sync(x[mine], None if res is None else res[mine])
        y_ref = ref(x, res)
        assert y.shape == x[mine].shape and y.dtype == x.dtype, (y.shape, y.dtype)
        close(y, y_ref[mine], dtype, f"output, step {step}")
        grads, grads_ref = sync.backward(dy[mine]), ref.backward(dy)
        if with_residual:
            close(grads[1], grads_ref[1][mine], dtype, "dresidual")
            grads, grads_ref = grads[0], grads_ref[0]
        close(grads, grads_ref[mine], dtype, f"dx, step {step}")
        assert comm.calls == 2 * (step + 1), "training must exchange once forward, once backward"
        group = sync._saved.groups[0]
        same_on_all_ranks([group.mean, group.invstd], "batch statistics")
    for name in ("running_mean", "running_var", "num_batches_tracked", "grad_weight",
                 "grad_bias"):
        value, expected = getattr(sync, name), getattr(ref, name)
        assert (value is None) == (expected is None), name
        if value is not None:
            close(value, expected, dtype, name)
    same_on_all_ranks([sync.running_mean, sync.running_var, sync.grad_weight, sync.grad_bias],
                      "running statistics and parameter gradients")
    if sync.track_running_stats and x[mine].size:
        sync.eval(), ref.eval()
        close(sync(x[mine], None if res is None else res[mine]), ref(x, res)[mine], dtype, "eval")
        assert comm.calls == 4, "eval mode must not communicate"


def expect_error_everywhere(call, what):
    """``call()`` raises ValueError on every rank (and returns its message)."""
    try:
        call()
    except ValueError as exc:
        return str(exc)
    raise AssertionError(f"rank {RANK}: {what} did not raise")


def check_errors():
    C = 4
    layer = fastbn.SyncBatchNorm(C, dtype=np.float64)
    rng = np.random.default_rng(7)
    before = [a.copy() for a in (layer.running_mean, layer.running_var,
                                 layer.num_batches_tracked)]

    def unchanged():
        for a, b in zip(before, (layer.running_mean, layer.running_var,
                                 layer.num_batches_tracked)):
            assert np.array_equal(a, b), f"rank {RANK}: a failed call changed the layer"

    # One value per channel over all ranks: BatchNorm's error, on every rank.
    one = rng.standard_normal((1 if RANK == 0 else 0, C))
    message = expect_error_everywhere(lambda: layer(one), "a global batch of 1")
    assert "more than 1 value per channel" in message, message
    unchanged()
    # A bad input on the last rank only: every rank raises, nobody waits forever.
    x = rng.standard_normal((2, C + (RANK == SIZE - 1)))
    expect_error_everywhere(lambda: layer(x), "a bad input on one rank")
    unchanged()
    # The ranks are still in step: a good call works, then a bad dy on the last rank.
    x = rng.standard_normal((3, C))
    layer(x)
    dy = rng.standard_normal((3 + (RANK == SIZE - 1), C))
    expect_error_everywhere(lambda: layer.backward(dy), "a bad dy on one rank")
    assert layer.grad_weight is None, "a failed backward accumulated gradients"
    layer.backward(dy[:3])


def main():
    for seed, case in enumerate(CASES):
        check_case(*case, seed=seed)
    check_errors()
    print(f"rank {RANK} of {SIZE}: passed", flush=True)


if __name__ == "__main__":
    try:
        main()
    except BaseException:  # any failure: report it and stop every rank
        traceback.print_exc()
        sys.stderr.flush()
        COMM.Abort(1)
