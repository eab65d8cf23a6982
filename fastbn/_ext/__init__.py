"""Ahead-of-time compiled (Cython) kernels: the eval-mode forward path."""
