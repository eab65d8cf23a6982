"""The running statistics' in-place update, compiled: one call instead of a dozen NumPy ops.

Every training step updates two per-channel buffers.  Through NumPy (a
finiteness check and a few temporaries per buffer) that took about 8 us, as
long as the kernels of a small batch.  Same arithmetic in the same order as
``fastbn._backend_cpu.update_running``'s NumPy form, so the same bits; that
form keeps every other case (a missing buffer, float16, views).
"""

import numpy as np
from numba import types

from ._jit import F64, VEC_IN, compiled

@compiled([(types.Array(t, 1, "C"), types.Array(t, 1, "C"), VEC_IN, VEC_IN, F64)
           for t in (types.float32, types.float64)])
def update_running(running_mean, running_var, batch_mean, batch_var, momentum):
    """``running = (1 - momentum) * running + momentum * batch`` in float64, rounded once.

    Only if every batch value is finite (nothing changes otherwise); returns
    whether it updated.
    """
    C = batch_mean.shape[0]
    for c in range(C):
        if not (np.isfinite(batch_mean[c]) and np.isfinite(batch_var[c])):
            return False
    for c in range(C):
        running_mean[c] = (1.0 - momentum) * np.float64(running_mean[c]) + momentum * batch_mean[c]
    for c in range(C):
        running_var[c] = (1.0 - momentum) * np.float64(running_var[c]) + momentum * batch_var[c]
    return True
