"""fastbn: fast, trustworthy normalization layers for NumPy on CPUs and NVIDIA GPUs.

Importing fastbn loads no JIT compiler: the Numba and CUDA backends load on
first use, and the CPU eval forward runs on an ahead-of-time compiled kernel.
"""

from ._batchnorm import batch_norm, batch_norm_backward, batch_norm_train
from ._moments import moments
from ._threads import get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = [
    "batch_norm", "batch_norm_train", "batch_norm_backward", "moments",
    "get_num_threads", "set_num_threads",
]
