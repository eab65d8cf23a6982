"""The CUDA backend without a GPU: simulator runs, PTX compilation, interface and errors.

* ``cuda_sim_cases.py`` (batch norm, moments) and ``cuda_sim_rowwise_cases.py``
  (layer, RMS, group, instance norm) run every CUDA op under Numba's CUDA
  simulator in a subprocess (``NUMBA_ENABLE_CUDASIM=1`` must be set before
  Numba is imported, and this process has imported Numba for the CPU backend
  already);
* every kernel the driver launches is compiled to PTX for the real CUDA target
  with the launch's argument types (needs NVVM, no GPU), which catches typing
  errors the simulator, running plain Python, cannot;
* the CPU and CUDA backends (batch norm and row-wise) expose the same functions
  with the same signatures;
* asking for CUDA without a GPU raises ``CudaUnavailableError``;
* ``benchmarks/gpu_bench.py --sim-smoke`` runs its correctness part.
"""

import importlib.util
import inspect
import re
import struct
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from conftest import SUBPROCESS_CWD, subprocess_env

import fastbn
from fastbn import _backend_cpu, _backend_cpu_rowwise
from fastbn._cuda import backend as cuda_backend
from fastbn._cuda import backend_rowwise as cuda_backend_rowwise
from fastbn._cuda.errors import CudaUnavailableError

HAVE_NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None
ROOT = Path(__file__).resolve().parents[1]


_env = subprocess_env


#: The CUDA cases: batch norm and moments, the row-statistics norms, the layers.
CASE_FILES = ("cuda_sim_cases.py", "cuda_sim_rowwise_cases.py", "cuda_sim_layer_cases.py")


def _run_cases(**env):
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         *(str(ROOT / "tests" / name) for name in CASE_FILES)],
        cwd=SUBPROCESS_CWD, env=_env(**env), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1]


@pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="numba-cuda is not installed")
def test_simulator_cases_pass():
    _run_cases(NUMBA_ENABLE_CUDASIM="1")


def _gpu_present():
    if not HAVE_NUMBA_CUDA:
        return False
    from numba import cuda
    return cuda.is_available()


@pytest.mark.skipif(not _gpu_present(), reason="no real GPU on this machine (the simulator "
                    "runs the same cases)")
def test_cases_pass_on_the_real_gpu():
    _run_cases(FASTBN_CUDA_CASES="gpu")


@pytest.mark.skipif(not _gpu_present(), reason="no real GPU on this machine (the simulator "
                    "has no device memory to free)")
def test_device_memory_is_freed_from_threads_without_a_context():
    """More than the GPU holds, 1 GiB at a time, each last dropped in a thread new to CUDA.

    Such a thread has no current context, where a bare ``cuMemFreeAsync``
    fails and leaks: the loop would then run out of memory.
    """
    import gc
    import threading

    from fastbn._cuda import devarray
    devarray.ensure_context()
    total = devarray.driver().cuMemGetInfo()[2]
    chunk = 1 << 30

    def drop(holder):
        holder.clear()
        gc.collect()

    for _ in range(total // chunk + 8):
        holder = [devarray.empty((chunk,), np.uint8)]
        worker = threading.Thread(target=drop, args=(holder,))
        worker.start()
        worker.join()
        assert not holder
    devarray.synchronize_stream(0)


@pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="numba-cuda is not installed")
def test_gpu_bench_correctness_part_runs_under_the_simulator():
    bench = ROOT / "benchmarks" / "gpu_bench.py"
    proc = subprocess.run([sys.executable, str(bench), "--sim-smoke"], cwd=SUBPROCESS_CWD, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "max |CUDA - CPU|" in proc.stdout and "ran 11 ops" in proc.stdout


def _public_functions(module, reexported=False):
    """Public functions defined in ``module`` (and, if ``reexported``, those it imports)."""
    return {n: f for n, f in vars(module).items()
            if inspect.isfunction(f) and not n.startswith("_")
            and (reexported or f.__module__ == module.__name__)}


def test_backends_have_the_same_interface():
    cpu, gpu = _public_functions(_backend_cpu), _public_functions(cuda_backend)
    assert sorted(cpu) == sorted(gpu)
    for n, f in cpu.items():
        assert inspect.signature(f) == inspect.signature(gpu[n]), n
    for const in ("MASK_NONE", "MASK_RECOMPUTE", "MASK_FROM_OUTPUT"):
        assert getattr(_backend_cpu, const) == getattr(cuda_backend, const)


def test_rowwise_backends_have_the_same_interface():
    cpu = _public_functions(_backend_cpu_rowwise, reexported=True)
    gpu = _public_functions(cuda_backend_rowwise, reexported=True)
    assert sorted(cpu) == sorted(gpu)
    for n, f in cpu.items():
        assert inspect.signature(f) == inspect.signature(gpu[n]), n
    assert (_backend_cpu_rowwise.name, cuda_backend_rowwise.name) == ("cpu", "cuda")


def test_importing_the_cuda_backend_loads_no_cuda():
    code = ("import sys, fastbn, fastbn._cuda.backend, fastbn._cuda.backend_rowwise; "
            "loaded = [m for m in sys.modules if m.startswith(('numba.cuda', 'numba_cuda', "
            "'fastbn._cuda.driver', 'fastbn._cuda.rowwise_driver'))]; assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], cwd=SUBPROCESS_CWD, env=_env(), check=True, timeout=120)


@pytest.mark.skipif(_gpu_present(), reason="a GPU is present")
@pytest.mark.parametrize("call", [
    lambda x: fastbn.batch_norm(x, np.zeros(3), np.ones(3), device="cuda"),
    lambda x: fastbn.batch_norm_train(x, device="cuda:0"),
    lambda x: fastbn.moments(x, axis=0, device="cuda"),
    lambda x: fastbn.layer_norm(x, 3, device="cuda"),
    lambda x: fastbn.group_norm_train(x, 1, device="cuda"),
])
def test_cuda_without_gpu_is_a_clear_error(call):
    x = np.ones((4, 3))
    with pytest.raises(CudaUnavailableError, match="CUDA was requested but cannot be used: "
                                                   "(no usable CUDA GPU|the numba-cuda package)"):
        call(x)
    assert issubclass(CudaUnavailableError, RuntimeError)


@pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="numba-cuda is not installed")
def test_numpy_without_row_stack_is_named_before_any_kernel_fails(monkeypatch):
    """numba-cuda 0.30 with NumPy >= 2.5 fails inside its first compile; fastbn says why first."""
    from fastbn._cuda import arrays
    monkeypatch.delattr(np, "row_stack", raising=False)
    arrays._cuda_or_reason.cache_clear()
    try:
        with pytest.raises(CudaUnavailableError, match=r"NumPy .*np\.row_stack.*numpy<2\.5"):
            fastbn.batch_norm_train(np.ones((4, 3)), device="cuda")
        import numba_cuda  # a later release may support NumPy 2.5: no verdict on it
        monkeypatch.setattr(numba_cuda, "__version__", "0.31.0")
        from numba import cuda
        assert arrays._numpy_mismatch(cuda) is None
    finally:
        arrays._cuda_or_reason.cache_clear()


def _ptx_params(arg):
    """The PTX parameter types of one launch argument (Numba's kernel calling convention)."""
    from fastbn._cuda.devarray import DeviceArray
    if type(arg) is DeviceArray:
        return ["u64"] * (5 + 2 * arg.ndim)
    return {bool: ["u8"], int: ["u64"], float: ["f64"]}[type(arg)]


@pytest.fixture
def compile_instead_of_launch(monkeypatch):
    """Patch the driver so that each launch compiles its kernel to PTX (cc 8.0) instead of running.

    Each launch is compiled with the signature fastbn's launcher computes, and the
    PTX entry's parameters must be the 8-byte slots the launcher packs.  Memory
    is host memory (as in the simulator); device functions take the compute
    capability from the current device, given here without a GPU.  Returns
    ``(driver, to_device, compiled signatures)``.
    """
    if not HAVE_NUMBA_CUDA:
        pytest.skip("numba-cuda is not installed")
    import numba
    from numba import cuda
    import numba.cuda.dispatcher as dispatcher
    from fastbn._cuda import devarray, driver, launch

    monkeypatch.setattr(dispatcher, "get_current_device",
                        lambda: types.SimpleNamespace(compute_capability=(8, 0)))
    try:
        cuda.compile_ptx(lambda a: None, (numba.float64[::1],), cc=(8, 0))
    except Exception as exc:  # NVVM/NVRTC libraries missing: nothing to compile with
        pytest.skip(f"cannot compile PTX here: {str(exc).splitlines()[0]}")
    monkeypatch.setattr(devarray, "simulated", lambda: True)
    compiled = set()

    def compile_only(kernel, blocks, threads, shared_bytes, *args):
        sig = launch.signature(args)
        key = (kernel.py_func.__module__, kernel.py_func.__name__, sig)
        if key not in compiled:
            ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(8, 0))
            entry = ptx[ptx.index(".entry"):]
            params = re.findall(r"\.param\s+\.(\w+)", entry[:entry.index(")")])
            assert params == [p for a in args for p in _ptx_params(a)], key
            assert struct.calcsize(launch.parameter_format(args)) == 8 * len(params)
            compiled.add(key)

    monkeypatch.setattr(driver, "launch", compile_only)
    return driver, devarray.to_device, compiled


def _compile_rowwise_launches(monkeypatch, dev):
    """Every launch of ``rowwise_driver``: both row paths, both affine kinds, both dtypes."""
    from fastbn._cuda import config
    from fastbn._cuda import rowwise_driver as rowwise
    for row_block in (config.ROW_BLOCK_ELEMENTS, 4):   # (1, 4, 6): whole rows, then pieces
        monkeypatch.setattr(config, "ROW_BLOCK_ELEMENTS", row_block)
        for dtype in (np.float32, np.float64):
            x = dev(np.zeros((1, 4, 6), dtype))
            r = dev(np.zeros(4))
            for G, inner in ((2, 3), (1, 1)):   # per-channel affine, per-element affine
                w = dev(np.zeros(G * 6 // inner))
                rowwise.forward(x, G, inner, w, w, 1e-5, True, x)
                rowwise.normalize(x, G, inner, r, r, w, w, x)
                rowwise.backward(x, x, G, inner, r, r, w, True, True, True, x)
    rowwise.repeated(dev(np.zeros(3)), 6)


@pytest.mark.slow
def test_every_launch_compiles_for_the_gpu(compile_instead_of_launch, monkeypatch):
    driver, dev, compiled = compile_instead_of_launch
    _compile_rowwise_launches(monkeypatch, dev)
    v3 = lambda dtype=np.float64: dev(np.zeros(3, dtype))
    for dtype in (np.float32, np.float64):
        for shape in ((2, 3, 4), (5, 3, 1)):   # channel runs, channel-contiguous rows
            x = dev(np.zeros(shape, dtype))
            v = v3()
            driver.train_forward(x, v, v, 1e-5, None, False, x)
            driver.normalize(x, v, v, v, v, x, True, x)
            for mask in range(3):
                driver.backward(x, x, x if mask == 2 else None, v, v, v, v, mask, True, x, None)
            driver.backward(x, x, x, v, v, v, v, 2, False, x, x)
        driver.converted(v3(dtype), np.float64)
        driver.converted(v3(), dtype)
        driver.blend_if_finite(v3(dtype), None, v3(), v3(), 0.1)
    driver.converted(v3(), np.float16)
    driver.converted(v3(np.float16), np.float64)
    driver.filled(3, 1.0)
    driver.divide(v3(), 2)
    driver.multiply(v3(), v3())
    driver.inverse_std(v3(), 1.0, 1e-5)
    assert driver.all_finite(v3(), v3())
    from fastbn._cuda import _kernels_common, _kernels_rows, _kernels_rowwise, _kernels_runs
    defined = {(m.__name__, n)
               for m in (_kernels_common, _kernels_rows, _kernels_runs, _kernels_rowwise)
               for n, k in vars(m).items()
               if hasattr(k, "py_func") and not k.targetoptions.get("device")}
    assert {(m, n) for m, n, _ in compiled} == defined
