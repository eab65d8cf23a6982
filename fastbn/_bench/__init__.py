"""The benchmark engine behind ``fastbn bench`` (and the machine report of ``fastbn info``).

One job per module:

- ``cases``: the registry of benchmarked ops and the shapes they run on;
- ``reference``: straightforward vectorised NumPy implementations (a baseline);
- ``torch_ref``: the same ops through PyTorch, when it is installed;
- ``floor``: a parallel copy of the same array, the memory floor;
- ``timing``: pinned thread counts and interleaved, warmed-up measurements;
- ``runner``: builds the cases, measures them and derives ratios and GB/s;
- ``report``: progress bar, table and JSON;
- ``plot``: the PNG chart (needs matplotlib, the ``bench`` extra);
- ``machine``: versions, threads, SIMD, CUDA and cache facts.
"""
