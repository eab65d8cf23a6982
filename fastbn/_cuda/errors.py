"""The one error raised when CUDA is asked for but cannot be used."""


class CudaUnavailableError(RuntimeError):
    """CUDA was requested (a device array, or ``device="cuda"``) but cannot be used.

    An environment problem rather than a bad argument, hence a ``RuntimeError``:
    the numba-cuda package is missing or cannot work with the installed NumPy,
    or the CUDA driver or a GPU is not found.
    The message carries Numba's own reason.
    """
