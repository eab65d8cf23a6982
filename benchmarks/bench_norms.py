"""Training step (forward + backward) of the row-wise norm layers vs PyTorch (issue 6).

Run as ``python benchmarks/bench_norms.py`` (``--quick`` for a smoke run).
For each case, one process times in interleaved rounds (the order alternating
each round), after warm-up, and reports medians:

* **fastbn**: ``layer.forward(x)`` then ``layer.backward(dy)`` (parameter grads
  accumulated, as in training);
* **torch**: the same ``torch.nn`` module, ``module(x).backward(dy)`` with
  ``x.requires_grad`` (autograd computes dx and the parameter grads);
* **copy**: a copy of x into a preallocated array (NumPy, one thread): a
  reference for the machine's memory speed in that round.

Both libraries run on the same thread count (``--threads``, default 2):
``fastbn.set_num_threads`` and ``torch.set_num_threads``.  Float32.
"""

import argparse
import statistics
import time

import numpy as np

import fastbn

#: name -> (x shape, fastbn layer factory, torch module factory)
CASES = {
    "LayerNorm(768) on (64, 197, 768)": (
        (64, 197, 768), lambda: fastbn.LayerNorm(768), lambda nn: nn.LayerNorm(768)),
    "GroupNorm(32, 256) on (32, 256, 28, 28)": (
        (32, 256, 28, 28), lambda: fastbn.GroupNorm(32, 256), lambda nn: nn.GroupNorm(32, 256)),
    "InstanceNorm2d(64) on (8, 64, 128, 128)": (
        (8, 64, 128, 128), lambda: fastbn.InstanceNorm2d(64), lambda nn: nn.InstanceNorm2d(64)),
}

QUICK_SHAPES = {"LayerNorm": (16, 49, 768), "GroupNorm": (4, 256, 14, 14),
                "InstanceNorm2d": (2, 64, 32, 32)}


def make_fastbn(layer, x, dy):
    def step():
        layer.forward(x)
        layer.backward(dy)
    return step


def make_torch(torch, module, x, dy):
    xt = torch.from_numpy(x).requires_grad_(True)
    dyt = torch.from_numpy(dy)

    def step():
        module(xt).backward(dyt)
        xt.grad = None
        module.zero_grad(set_to_none=True)
    return step


def make_copy(x):
    out = np.empty_like(x)
    return lambda: np.copyto(out, x)


def time_interleaved(contenders, repeats, warmup):
    """Median seconds per contender over ``repeats`` rounds, the order alternating per round."""
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    samples = {name: [] for name in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            contenders[name]()
            samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(s) for name, s in samples.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small shapes, 5 repeats")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        raise SystemExit("this benchmark compares with PyTorch, which is not installed") from None
    fastbn.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    repeats = 5 if args.quick else args.repeats
    print(f"threads={args.threads} repeats={repeats} warmup={args.warmup} float32, "
          f"fastbn {fastbn.__version__}, torch {torch.__version__}")
    print(f"{'case':42s} {'fastbn ms':>10s} {'torch ms':>10s} {'copy ms':>8s} {'speed-up':>9s}")
    rng = np.random.default_rng(0)
    for label, (shape, make_ours, make_theirs) in CASES.items():
        if args.quick:
            shape = QUICK_SHAPES[label.split("(")[0]]
        x = (rng.standard_normal(shape, dtype=np.float32) * 2 + 0.5)
        dy = rng.standard_normal(shape, dtype=np.float32)
        medians = time_interleaved({
            "fastbn": make_fastbn(make_ours(), x, dy),
            "torch": make_torch(torch, make_theirs(torch.nn), x, dy),
            "copy": make_copy(x),
        }, repeats, args.warmup)
        ms = {k: 1e3 * v for k, v in medians.items()}
        print(f"{label:42s} {ms['fastbn']:10.2f} {ms['torch']:10.2f} {ms['copy']:8.2f} "
              f"{ms['torch'] / ms['fastbn']:8.2f}x")


if __name__ == "__main__":
    main()
