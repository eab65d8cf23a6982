"""Training step (forward + backward) of fastbn's layers vs the same PyTorch modules.

Run as ``python benchmarks/bench_training_step.py`` (``--quick`` for a smoke
run, ``--cases batch,norms`` to pick families).
For each case, one process times in interleaved rounds (the order alternating
each round), after warm-up, and reports medians:

* **fastbn**: ``layer.forward(x)`` then ``layer.backward(dy)`` (parameter grads
  accumulated, as in training);
* **torch**: the same ``torch.nn`` module, ``module(x).backward(dy)`` with
  ``x.requires_grad`` (autograd computes dx and the parameter grads);
* **copy**: a parallel copy of x into a preallocated array on the same threads
  (the memory floor, ``fastbn._inference.parallel_copy``);
* **plain** (epilogue cases only): the same batch norm layer without the
  epilogue on the same x and dy, so "fused / plain" (what the ReLU and the
  residual cost on top of batch norm) is measured side by side too.

Channels-last cases hand torch the same NHWC memory as a ``channels_last``
tensor; the residual cases time ``relu(bn(x) + r)`` and its backward (fastbn
returns the residual's gradient too).

Both libraries run on the same thread count (``--threads``, default 2):
``fastbn.set_num_threads`` and ``torch.set_num_threads``.  Float32.
"""

import argparse
import statistics
import time
from typing import NamedTuple

import numpy as np

import fastbn

class Case(NamedTuple):
    family: str
    shape: tuple           # the stored array's shape (NHWC for channels-last)
    quick_shape: tuple
    fastbn: object         # () -> fastbn layer
    torch: object          # nn -> torch module
    channels_last: bool = False
    residual: bool = False
    plain: object = None   # () -> the fastbn layer without the epilogue (epilogue cases)


def _relu_after(nn, bn):
    return nn.Sequential(bn, nn.ReLU())


CASES = {
    "BatchNorm2d(64) on (32, 64, 56, 56)": Case(
        "batch", (32, 64, 56, 56), (8, 64, 14, 14), lambda: fastbn.BatchNorm2d(64),
        lambda nn: nn.BatchNorm2d(64)),
    "BatchNorm2d(256) on (8, 256, 28, 28)": Case(
        "batch", (8, 256, 28, 28), (2, 256, 7, 7), lambda: fastbn.BatchNorm2d(256),
        lambda nn: nn.BatchNorm2d(256)),
    "BatchNorm2d(64) on (32, 56, 56, 64) channels-last": Case(
        "batch", (32, 56, 56, 64), (8, 14, 14, 64), lambda: fastbn.BatchNorm2d(64, axis=-1),
        lambda nn: nn.BatchNorm2d(64), channels_last=True),
    "BatchNorm2d(256) on (8, 28, 28, 256) channels-last": Case(
        "batch", (8, 28, 28, 256), (2, 7, 7, 256), lambda: fastbn.BatchNorm2d(256, axis=-1),
        lambda nn: nn.BatchNorm2d(256), channels_last=True),
    "BatchNorm1d(1024) on (4096, 1024)": Case(
        "batch", (4096, 1024), (256, 1024), lambda: fastbn.BatchNorm1d(1024),
        lambda nn: nn.BatchNorm1d(1024)),
    "BatchNorm1d(64) on (65536, 64)": Case(
        "batch", (65536, 64), (4096, 64), lambda: fastbn.BatchNorm1d(64),
        lambda nn: nn.BatchNorm1d(64)),
    "BatchNorm2d(128) on (64, 128, 112, 112), > LLC": Case(
        "large", (64, 128, 112, 112), (8, 128, 28, 28), lambda: fastbn.BatchNorm2d(128),
        lambda nn: nn.BatchNorm2d(128)),
    "BatchNorm2d(64) + ReLU on (32, 64, 56, 56)": Case(
        "epilogue", (32, 64, 56, 56), (8, 64, 14, 14),
        lambda: fastbn.BatchNorm2d(64, activation="relu"),
        lambda nn: _relu_after(nn, nn.BatchNorm2d(64)), plain=lambda: fastbn.BatchNorm2d(64)),
    "BatchNorm2d(64) + add + ReLU on (32, 64, 56, 56)": Case(
        "epilogue", (32, 64, 56, 56), (8, 64, 14, 14),
        lambda: fastbn.BatchNorm2d(64, activation="relu"), lambda nn: nn.BatchNorm2d(64),
        residual=True, plain=lambda: fastbn.BatchNorm2d(64)),
    "LayerNorm(768) on (64, 197, 768)": Case(
        "norms", (64, 197, 768), (16, 49, 768), lambda: fastbn.LayerNorm(768),
        lambda nn: nn.LayerNorm(768)),
    "GroupNorm(32, 256) on (32, 256, 28, 28)": Case(
        "norms", (32, 256, 28, 28), (4, 256, 14, 14), lambda: fastbn.GroupNorm(32, 256),
        lambda nn: nn.GroupNorm(32, 256)),
    "BatchNorm1d(64) on (32, 64), a small batch": Case(
        "small", (32, 64), (32, 64), lambda: fastbn.BatchNorm1d(64),
        lambda nn: nn.BatchNorm1d(64)),
    "BatchNorm2d(64) on (16, 64, 8, 8), a small batch": Case(
        "small", (16, 64, 8, 8), (16, 64, 8, 8), lambda: fastbn.BatchNorm2d(64),
        lambda nn: nn.BatchNorm2d(64)),
    "InstanceNorm2d(64) on (8, 64, 128, 128)": Case(
        "norms", (8, 64, 128, 128), (2, 64, 32, 32), lambda: fastbn.InstanceNorm2d(64),
        lambda nn: nn.InstanceNorm2d(64)),
}


def make_fastbn(layer, x, dy, residual):
    def step():
        layer.forward(x, residual) if residual is not None else layer.forward(x)
        layer.backward(dy)
    return step


def _torch_view(torch, a, channels_last):
    t = torch.from_numpy(a)
    return t.permute(0, a.ndim - 1, *range(1, a.ndim - 1)) if channels_last else t


def make_torch(torch, module, x, dy, residual, channels_last):
    xt = _torch_view(torch, x, channels_last).requires_grad_(True)
    dyt = _torch_view(torch, dy, channels_last)
    rt = None if residual is None else _torch_view(torch, residual, channels_last)

    def step():
        y = module(xt) if rt is None else torch.relu(module(xt) + rt)
        y.backward(dyt)
        xt.grad = None
        module.zero_grad(set_to_none=True)
    return step


def pinned_torch(threads):
    """PyTorch, with it and fastbn on ``threads`` threads (exits if PyTorch is not installed)."""
    try:
        import torch
    except ImportError:
        raise SystemExit("this benchmark compares with PyTorch, which is not installed") from None
    fastbn.set_num_threads(threads)
    torch.set_num_threads(threads)
    return torch


def case_inputs(shape, rng):
    """``(x, dy)`` for a case: float32, x off zero (mean 0.5, std 2) as real activations are."""
    x = rng.standard_normal(shape, dtype=np.float32) * 2 + 0.5
    return x, rng.standard_normal(shape, dtype=np.float32)


def make_copy(x):
    from fastbn import _inference
    src, out = x.reshape(-1), np.empty(x.size, x.dtype)
    return lambda: _inference.parallel_copy(src, out)


def time_interleaved(contenders, repeats, warmup, block):
    """Median seconds per contender over ``repeats`` rounds, the order alternating per round.

    In each round a contender runs ``block`` calls back to back and only the
    last ``block - 1`` are timed: the first absorbs the switch from the other
    contenders (their OpenMP pools keep spinning for a while after a call, and
    the caches hold their data), so each library is timed in its steady state,
    as in a training loop that runs only one of them.
    """
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    samples = {name: [] for name in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            for k in range(block):
                t0 = time.perf_counter()
                contenders[name]()
                if k or block == 1:
                    samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(s) for name, s in samples.items()}


def _ms(value, width):
    """Milliseconds in ``width`` columns: two decimals, three below 1 ms (the small batches)."""
    return f"{value:{width}.{2 if value >= 1 else 3}f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--block", type=int, default=4,
                        help="calls per contender per round, the first untimed (1: time every call)")
    parser.add_argument("--quick", action="store_true", help="small shapes, 5 repeats")
    parser.add_argument("--cases", default="batch,epilogue,norms,small",
                        help="families: batch, epilogue, norms, small, large "
                             "(default: all but large)")
    args = parser.parse_args(argv)
    torch = pinned_torch(args.threads)
    repeats = 5 if args.quick else args.repeats
    print(f"threads={args.threads} repeats={repeats} warmup={args.warmup} block={args.block} float32, "
          f"fastbn {fastbn.__version__}, torch {torch.__version__}")
    print(f"{'case':52s} {'fastbn ms':>10s} {'torch ms':>10s} {'copy ms':>8s} {'x copy':>7s} "
          f"{'speed-up':>9s} {'/ plain':>10s}")
    families = set(args.cases.split(","))
    rng = np.random.default_rng(0)
    for label, case in CASES.items():
        if case.family not in families:
            continue
        shape = case.quick_shape if args.quick else case.shape
        x, dy = case_inputs(shape, rng)
        r = rng.standard_normal(shape, dtype=np.float32) if case.residual else None
        contenders = {
            "fastbn": make_fastbn(case.fastbn(), x, dy, r),
            "torch": make_torch(torch, case.torch(torch.nn), x, dy, r, case.channels_last),
            "copy": make_copy(x),
        }
        if case.plain is not None:
            contenders["plain"] = make_fastbn(case.plain(), x, dy, None)
        ms = {k: 1e3 * v for k, v in
              time_interleaved(contenders, repeats, args.warmup, args.block).items()}
        over_plain = f" {ms['fastbn'] / ms['plain']:9.2f}x" if "plain" in ms else ""
        print(f"{label:52s} {_ms(ms['fastbn'], 10)} {_ms(ms['torch'], 10)} {_ms(ms['copy'], 8)} "
              f"{ms['fastbn'] / ms['copy']:6.2f}x {ms['torch'] / ms['fastbn']:8.2f}x{over_plain}",
              flush=True)


if __name__ == "__main__":
    main()
