"""CUDA backend through ``numba.cuda`` (NVIDIA's numba-cuda package).

``backend`` mirrors ``fastbn._backend_cpu`` function by function; ``driver``
allocates and launches; the ``_kernels_*`` modules hold the kernels.  Importing
this package (or ``backend``) imports neither Numba nor ``numba.cuda``: the CUDA
stack loads, and is checked, on first use.
"""
