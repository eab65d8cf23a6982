"""Facts about this machine and installation, for ``fastbn info`` and the bench JSON.

Everything here reports instead of failing: a missing package, CUDA driver or
``/proc`` file becomes a value such as ``None`` or a reason string.  Numba and
``numba.cuda`` are imported here (only ``fastbn`` itself must not import them).
"""

import glob
import importlib.metadata
import os
import platform
import re
import sys
import textwrap

import fastbn
from fastbn import _inference, _threads

_SIMD = re.compile(r"^(sse|ssse|avx|fma|f16c|amx|neon|asimd|sve|altivec|vsx)")


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model")):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu():
    """Model, logical CPUs, the host target LLVM compiles for and its SIMD features."""
    info = {"model": _cpu_model(), "logical_cpus": os.cpu_count(), "machine": platform.machine()}
    try:
        import llvmlite.binding as llvm

        info["llvm_target"] = llvm.get_host_cpu_name()
        features = llvm.get_host_cpu_features()
        info["simd"] = sorted(k for k, on in features.items() if on and _SIMD.match(k))
    except Exception as exc:  # reported, not raised
        info["llvm_target"] = None
        info["simd"] = []
        info["simd_error"] = f"{type(exc).__name__}: {exc}"
    return info


def threads():
    """fastbn's thread count now, its default, and the settings that change it."""
    import numba

    return {"fastbn": _threads.get_num_threads(), "default": _threads.default_num_threads(),
            "NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS"),
            "numba_threading_layer": numba.config.THREADING_LAYER}


def extension():
    """The compiled (Cython) inference extension: built, OpenMP, or why not."""
    return {"built": _inference.available(), "openmp": _inference.openmp_enabled(),
            "reason": _inference.unavailable_reason()}


def cuda_status():
    """CUDA through ``numba.cuda``: ``available``, ``devices`` and otherwise a ``reason``."""
    status = {"available": False, "simulator": os.environ.get("NUMBA_ENABLE_CUDASIM") == "1",
              "devices": [], "reason": None}
    try:
        from numba import cuda

        if status["simulator"]:
            status["available"] = cuda.is_available()
        elif cuda.is_available():
            status["available"] = True
            for d in cuda.list_devices():
                name = d.name.decode() if isinstance(d.name, bytes) else str(d.name)
                status["devices"].append({"id": d.id, "name": name,
                                          "compute_capability": list(d.compute_capability)})
        else:
            from numba.cuda.cudadrv.driver import driver

            driver.get_device_count()  # raises the driver's own explanation
            status["reason"] = "numba.cuda found no usable device"
    except Exception as exc:  # CUDA missing is information here, not an error
        status["reason"] = " ".join(f"{type(exc).__name__}: {exc}".split()).rstrip(" :")
    return status


def numba_cache():
    """Where Numba keeps fastbn's compiled kernels, and how many are there."""
    env = os.environ.get("NUMBA_CACHE_DIR")
    root = os.path.dirname(fastbn.__file__)
    dirs = [env] if env else sorted(glob.glob(os.path.join(root, "**", "__pycache__"),
                                              recursive=True))
    entries = {d: len(glob.glob(os.path.join(d, "**", "*.nbi"), recursive=True)) for d in dirs}
    return {"NUMBA_CACHE_DIR": env, "dirs": {d: n for d, n in entries.items() if n or env},
            "writable": os.access(env or root, os.W_OK)}


def describe():
    """Everything above plus versions, as one JSON-ready dict."""
    return {
        "versions": {"fastbn": fastbn.__version__, "python": platform.python_version(),
                     "numpy": _version("numpy"), "numba": _version("numba"),
                     "llvmlite": _version("llvmlite"), "numba-cuda": _version("numba-cuda"),
                     "torch": _version("torch"), "matplotlib": _version("matplotlib")},
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "cpu": cpu(),
        "threads": threads(),
        "extension": extension(),
        "output_cache": fastbn.output_cache_info(),
        "cuda": cuda_status(),
        "numba_cache": numba_cache(),
    }


def _or(value, missing="not installed"):
    return value if value is not None else missing


def format_info(d):
    """``describe()`` as the text ``fastbn info`` prints."""
    v, t, ext, c, cache = d["versions"], d["threads"], d["extension"], d["cuda"], d["numba_cache"]
    if ext["built"]:
        ext_line = "built, OpenMP " + ("on" if ext["openmp"] else "off (serial build)")
    else:
        ext_line = f"not built ({ext['reason']}); eval falls back to Numba"
    env = t["NUMBA_NUM_THREADS"]
    if c["simulator"]:
        cuda_line = "the CUDA simulator (NUMBA_ENABLE_CUDASIM=1): kernels run in Python, no GPU"
    elif c["available"]:
        cuda_line = "; ".join(f"[{g['id']}] {g['name']} (compute capability "
                              f"{'.'.join(map(str, g['compute_capability']))})"
                              for g in c["devices"])
    else:
        cuda_line = f"not available: {c['reason']}"
    oc = d["output_cache"]
    if oc["available"]:
        outputs_line = (f"freed outputs cached up to {oc['limit'] / 2**20:g} MiB for reuse "
                        f"(now {oc['blocks']} blocks); change: fastbn.set_output_cache_limit(n)")
    else:
        outputs_line = "no cache of freed outputs (needs the compiled extension)"
    cache_dirs = [f"{p} ({n} cached functions)" for p, n in cache["dirs"].items()] or ["none yet"]
    lines = [
        f"fastbn      {v['fastbn']}",
        f"Python      {v['python']} ({d['python_executable']})",
        f"platform    {d['platform']}",
        f"NumPy       {v['numpy']}",
        f"Numba       {v['numba']} (llvmlite {v['llvmlite']}; numba-cuda {_or(v['numba-cuda'])})",
        f"extension   {ext_line}",
        f"outputs     {outputs_line}",
        f"optional    torch {_or(v['torch'])} (bench baseline), "
        f"matplotlib {_or(v['matplotlib'])} (bench --plot)",
        f"threads     {t['fastbn']} (default {t['default']}: "
        + (f"NUMBA_NUM_THREADS={env}" if env else "all CPUs this process may use")
        + f"; Numba threading layer {t['numba_threading_layer']})",
        "            change: fastbn.set_num_threads(n) in Python (None restores the default),",
        "            or NUMBA_NUM_THREADS=n in the environment before Python starts",
        f"CPU         {d['cpu']['model']}, {d['cpu']['logical_cpus']} logical CPUs, "
        f"LLVM target {d['cpu']['llvm_target']}",
        *textwrap.wrap(" ".join(d["cpu"]["simd"]) or d["cpu"].get("simd_error", "none found"),
                       width=96, initial_indent="SIMD        ", subsequent_indent=" " * 12),
        f"CUDA        {cuda_line}",
        f"Numba cache {cache_dirs[0]}",
        *(f"            {line}" for line in cache_dirs[1:]),
        "            " + ("writable" if cache["writable"] else "NOT writable: kernels recompile "
                         "each run unless NUMBA_CACHE_DIR points somewhere writable")
        + ("" if cache["NUMBA_CACHE_DIR"] else "; move it with NUMBA_CACHE_DIR=path"),
    ]
    return "\n".join(lines)
