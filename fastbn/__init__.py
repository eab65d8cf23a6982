"""fastbn: fast, trustworthy normalization layers for NumPy on CPUs and NVIDIA GPUs.

Importing fastbn loads no JIT compiler: the Numba and CUDA backends load on
first use, and the CPU eval forward runs on an ahead-of-time compiled kernel.
"""

from ._batchnorm import batch_norm, batch_norm_backward, batch_norm_train
from ._batchnorm_layers import BatchNorm1d, BatchNorm2d, BatchNorm3d
from ._cuda.errors import CudaUnavailableError
from ._fold import fold_batchnorm
from ._memory import empty_output_cache, output_cache_info, set_output_cache_limit
from ._moments import moments
from ._norm_layers import (GroupNorm, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d, LayerNorm,
                           RMSNorm)
from ._norms import (layer_norm, layer_norm_backward, layer_norm_train, rms_norm,
                     rms_norm_backward, rms_norm_train)
from ._norms_channel import (group_norm, group_norm_backward, group_norm_train, instance_norm,
                             instance_norm_backward, instance_norm_train)
from ._renorm import batch_renorm_backward, batch_renorm_train
from ._sync import SyncBatchNorm, convert_sync_batchnorm
from ._threads import get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = [
    "batch_norm", "batch_norm_train", "batch_norm_backward", "moments",
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
    "layer_norm", "layer_norm_train", "layer_norm_backward",
    "group_norm", "group_norm_train", "group_norm_backward",
    "instance_norm", "instance_norm_train", "instance_norm_backward",
    "rms_norm", "rms_norm_train", "rms_norm_backward",
    "LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "RMSNorm",
    "fold_batchnorm", "batch_renorm_train", "batch_renorm_backward",
    "SyncBatchNorm", "convert_sync_batchnorm",
    "get_num_threads", "set_num_threads", "CudaUnavailableError",
    "set_output_cache_limit", "empty_output_cache", "output_cache_info",
]
