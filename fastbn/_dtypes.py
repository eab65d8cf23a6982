"""Which dtypes fastbn computes in, decided in one place."""

import numpy as np

#: dtypes the kernels are compiled for.
KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: float16 is accepted and computed through this dtype.
HALF_COMPUTE = np.dtype(np.float32)


def compute_dtype(dtype):
    """The dtype the kernels see for an input of ``dtype`` (float16 -> float32)."""
    dtype = np.dtype(dtype)
    return HALF_COMPUTE if dtype == np.float16 else dtype


def accumulator_dtype(dtype):
    """Statistics accumulate in float64 for float16/32/64 inputs."""
    return np.dtype(np.float64)
