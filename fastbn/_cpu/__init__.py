"""Numba CPU backend: kernels (``_kernels_*``) and the host driver (``driver``).

Importing this package imports Numba and loads (or, on a cold cache, compiles)
every kernel signature, so fastbn imports it only on first use.
"""
