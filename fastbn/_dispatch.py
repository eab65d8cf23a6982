"""Pick the backend from the input: CUDA-array objects go to CUDA, the rest to the CPU.

``device="cpu" | "cuda"`` overrides.  Backends load on first use, so importing
fastbn never imports Numba, and a missing CUDA stack is reported only when CUDA
is asked for.
"""

import functools
import importlib

_BACKENDS = {"cpu": "fastbn._backend_cpu", "cuda": "fastbn._cuda.backend"}


@functools.cache
def load(module_name):
    """``importlib.import_module(module_name)``, remembered: every call of every op asks."""
    return importlib.import_module(module_name)


def is_device_array(x):
    """Whether ``x`` lives on a CUDA device (or is a simulator device array)."""
    return hasattr(x, "__cuda_array_interface__") or hasattr(x, "__cuda_ndarray__")


def device_name(x, device=None):
    """``"cpu"`` or ``"cuda"`` for input ``x`` and the optional override ``device``."""
    if device is None:
        return "cuda" if is_device_array(x) else "cpu"
    name = str(device).lower()
    if name.startswith("cuda"):
        return "cuda"
    if name != "cpu":
        raise ValueError(f"device must be None, 'cpu' or 'cuda', got {device!r}")
    return "cpu"


def backend(x, device=None, modules=_BACKENDS):
    """The backend module for input ``x``: see ``fastbn._backend_cpu`` for its interface.

    ``modules`` maps a device name to a module name (the row norms pass their own).
    """
    return load(modules[device_name(x, device)])
