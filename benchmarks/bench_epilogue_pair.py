"""What the fused ReLU costs on top of batch norm, timed pair by pair.

Run as ``python benchmarks/bench_epilogue_pair.py [--runs 3] [--rounds 41]``.
Each round times the fused ``BatchNorm2d(64, activation="relu")`` training
step and the plain ``BatchNorm2d(64)`` step on the same x and dy back to back
(the order alternating, one untimed call before each), and a run reports the
median and quartiles of the per-round ratio fused / plain: the pairing cancels
most of this machine's drift, which moves absolute times by 20% between runs.
Float32 (32, 64, 56, 56) NCHW unless ``--shape`` (``fastbn bench``'s syntax,
``:cl`` for channels-last), 2 threads unless ``--threads``.
"""

import argparse
import time

import numpy as np

import fastbn
from bench_training_step import make_fastbn
from fastbn._bench.cases import parse_shape


def paired_ratios(first, second, rounds):
    """Per-round ``time(second) / time(first)``, each call after an untimed one."""
    ratios = []
    for r in range(rounds):
        took = {}
        for step in ((first, second) if r % 2 else (second, first)):
            step()
            t0 = time.perf_counter()
            step()
            took[step] = time.perf_counter() - t0
        ratios.append(took[second] / took[first])
    return np.array(ratios)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--shape", type=parse_shape, default="32x64x56x56",
                        help="logical (N, C, H, W), e.g. 2x64x56x56 (in cache) or 32x64x56x56:cl")
    args = parser.parse_args(argv)
    fastbn.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    shape, channels = args.shape, args.shape.dims[1]
    x = rng.standard_normal(shape.array_shape, dtype=np.float32) * 2 + 0.5
    dy = rng.standard_normal(x.shape, dtype=np.float32)
    plain = make_fastbn(fastbn.BatchNorm2d(channels, axis=shape.axis), x, dy, None)
    fused = make_fastbn(fastbn.BatchNorm2d(channels, axis=shape.axis, activation="relu"), x, dy,
                        None)
    for _ in range(3):
        plain()
        fused()
    for _ in range(args.runs):
        q1, median, q3 = np.percentile(paired_ratios(plain, fused, args.rounds), [25, 50, 75])
        print(f"fused / plain: median {median:.3f} (quartiles {q1:.3f}-{q3:.3f}), "
              f"{args.rounds} rounds, {args.threads} threads, {shape.label}", flush=True)


if __name__ == "__main__":
    main()
