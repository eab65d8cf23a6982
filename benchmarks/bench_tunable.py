"""A/B of one ``fastbn._config`` tunable: the batch norm training step at each value, side by side.

Run as ``python benchmarks/bench_tunable.py RUN_SUM_LANES 16,32`` (``--layouts rows``
for the channel-contiguous shapes of the row kernels).  Tunables
are read at call time, so one process times every value in the same
interleaved rounds (``bench_training_step.time_interleaved``): on a noisy
machine only such a comparison tells a few percent from the weather.  Each
contender sets its value and runs the batch norm layer's ``forward`` then
``backward``; the table gives the medians and each value's time over the first
value's, and (when PyTorch is installed) torch's module step in the same rounds
for scale.
"""

import argparse

import numpy as np
from bench_training_step import make_fastbn, make_torch, time_interleaved

import fastbn
from fastbn import _config

#: Stored shapes per layout; ``rows`` are channels-last (4-D) or (N, C) arrays.
SHAPES = {
    "runs": ((32, 64, 56, 56), (8, 256, 28, 28), (16, 64, 112, 112), (64, 128, 28, 28)),
    "rows": ((32, 56, 56, 64), (8, 28, 28, 256), (4096, 1024), (65536, 64)),
}


def _layers(shape, layout):
    """``(fastbn layer, torch module factory, channels_last)`` of a stored shape."""
    if layout == "runs":
        return fastbn.BatchNorm2d(shape[1]), lambda nn: nn.BatchNorm2d(shape[1]), False
    C = shape[-1]
    if len(shape) == 2:
        return fastbn.BatchNorm1d(C), lambda nn: nn.BatchNorm1d(C), False
    return fastbn.BatchNorm2d(C, axis=-1), lambda nn: nn.BatchNorm2d(C), True


def _step_at(name, value, fastbn_step):
    def step():
        setattr(_config, name, value)
        fastbn_step()
    return step


def _torch_step(module, channels_last, x, dy, threads):
    """torch's module step on the same data (``make_torch``), or None without PyTorch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return make_torch(torch, module(torch.nn), x, dy, None, channels_last)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="a module global of fastbn._config, e.g. RUN_SUM_LANES")
    parser.add_argument("values", help="comma-separated integers, the first the baseline")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--layouts", default="runs",
                        help="comma-separated: runs (NCHW), rows (channels-last and (N, C))")
    args = parser.parse_args(argv)
    if not hasattr(_config, args.name):
        parser.error(f"fastbn._config has no tunable {args.name!r}")
    values = [int(v) for v in args.values.split(",")]
    original = getattr(_config, args.name)
    fastbn.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    shapes = [(shape, layout) for layout in args.layouts.split(",") for shape in SHAPES[layout]]
    print(f"{args.name}: {values}, threads={args.threads}, float32, training step "
          f"(batch norm forward + backward), medians of {args.repeats} rounds")
    print(f"{'shape':22s}" + "".join(f"{v:>12d} ms" for v in values)
          + "".join(f"{f'{v} / {values[0]}':>14s}" for v in values[1:]) + "      torch ms")
    try:
        for shape, layout in shapes:
            x = rng.standard_normal(shape, dtype=np.float32)
            dy = rng.standard_normal(shape, dtype=np.float32)
            layer, module, channels_last = _layers(shape, layout)
            fastbn_step = make_fastbn(layer, x, dy, None)
            contenders = {v: _step_at(args.name, v, fastbn_step) for v in values}
            torch_step = _torch_step(module, channels_last, x, dy, args.threads)
            if torch_step is not None:
                contenders["torch"] = torch_step
            t = time_interleaved(contenders, args.repeats, warmup=2, block=4)
            print(f"{str(shape):22s}" + "".join(f"{t[v] * 1e3:15.2f}" for v in values)
                  + "".join(f"{t[v] / t[values[0]]:13.2f}x" for v in values[1:])
                  + (f"{t['torch'] * 1e3:14.2f}" if "torch" in t else "       (none)"))
    finally:
        setattr(_config, args.name, original)


if __name__ == "__main__":
    main()
