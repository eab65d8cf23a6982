"""Per-channel kernels: the deterministic second merge stage and small vector operations.

``merge_partials`` runs one block per channel: thread ``t`` folds partials
``t, t + T, t + 2T, ...`` in order, then the block tree merges the threads'
results; the order depends only on the number of partials and ``T``, so the
statistics are bitwise reproducible (no atomics).  The vector kernels run one
thread per channel over vectors of length C.
"""

import math

from numba import cuda, float64

from ._device import block_reduce, combine, inverse_std
from ._jit import kernel


@kernel
def merge_partials(part, moments, eps, out):
    """``out[:3, c]`` = the merge of ``part[c, :]``: moments (Chan) or sums (addition).

    A fourth row of ``out`` receives ``1 / sqrt(m2 / count + eps)``: the
    normalisation needs it next, and this saves a launch.
    """
    sh = cuda.shared.array(0, float64)
    c = cuda.blockIdx.x
    t = cuda.threadIdx.x
    T = cuda.blockDim.x
    a0 = a1 = a2 = 0.0
    for j in range(t, part.shape[1], T):
        a0, a1, a2 = combine(moments, a0, a1, a2, part[c, j, 0], part[c, j, 1], part[c, j, 2])
    a0, a1, a2 = block_reduce(sh, t, t, 1, T, moments, a0, a1, a2)
    if t == 0:
        out[0, c] = a0
        out[1, c] = a1
        out[2, c] = a2
        if out.shape[0] == 4:
            out[3, c] = inverse_std(a2 / a0, eps)


@kernel
def copy(src, out):
    """``out = src`` (converting the dtype)."""
    c = cuda.grid(1)
    if c < out.shape[0]:
        out[c] = src[c]


@kernel
def fill(out, value):
    c = cuda.grid(1)
    if c < out.shape[0]:
        out[c] = value


@kernel
def inverse_stds(m2, divisor, eps, out):
    """``out = 1 / sqrt(m2 / divisor + eps)`` (``divisor`` 1 turns a variance into invstd)."""
    c = cuda.grid(1)
    if c < out.shape[0]:
        out[c] = inverse_std(float64(m2[c]) / divisor, eps)


@kernel
def multiply(a, b, out):
    c = cuda.grid(1)
    if c < out.shape[0]:
        out[c] = a[c] * b[c]


@kernel
def divide(a, d, out):
    c = cuda.grid(1)
    if c < out.shape[0]:
        out[c] = a[c] / d


@kernel
def flag_nonfinite(a, b, flag):
    """``flag[0] = 1`` when ``a`` or ``b`` holds a NaN or an infinity (all writers write 1)."""
    c = cuda.grid(1)
    if c < a.shape[0] and not (math.isfinite(a[c]) and math.isfinite(b[c])):
        flag[0] = 1


@kernel
def blend_if_finite(running_mean, running_var, has_mean, has_var, batch_mean, batch_var,
                    momentum, skipped):
    """``running = (1 - momentum) * running + momentum * batch`` unless a statistic is not finite.

    One block: every thread checks its channels, the block agrees
    (``syncthreads_or``), then either both buffers blend (float64 arithmetic) or
    neither does; ``skipped[0]`` says which.  Absent buffers (``has_*`` False)
    are stand-ins that are never written.
    """
    t = cuda.threadIdx.x
    T = cuda.blockDim.x
    C = batch_mean.shape[0]
    bad = 0
    for c in range(t, C, T):
        if not (math.isfinite(batch_mean[c]) and math.isfinite(batch_var[c])):
            bad = 1
    if cuda.syncthreads_or(bad):
        if t == 0:
            skipped[0] = 1
        return
    if t == 0:
        skipped[0] = 0
    for c in range(t, C, T):
        if has_mean:
            running_mean[c] = (1.0 - momentum) * float64(running_mean[c]) + momentum * batch_mean[c]
        if has_var:
            running_var[c] = (1.0 - momentum) * float64(running_var[c]) + momentum * batch_var[c]
