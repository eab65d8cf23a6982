"""Per-round torch / fastbn ratios of the layer training step, for a verdict that noise cannot flip.

Run as ``python benchmarks/bench_paired_ratio.py`` (``--rounds 61``;
``--cases`` takes substrings of the case labels in
``bench_training_step.CASES``, by default the channel-contiguous batch norm
cases).  Each round times both libraries back to back (the order alternating
per round), four calls each with the first untimed (steady state, as in
``bench_training_step``), and takes the ratio of their medians.  A run's
medians can land on a slow stretch for one side; the per-round ratio compares
the two under the same conditions, and its quartiles and the count of rounds
below 1 say how often fastbn was the slower one.
"""

import argparse
import statistics
import time

import numpy as np
from bench_training_step import CASES, case_inputs, make_fastbn, make_torch, pinned_torch

import fastbn

DEFAULT_CASES = ("channels-last", "(4096, 1024)", "(65536, 64)")


def _steady(step, calls=4):
    """Median seconds of ``calls - 1`` calls after an untimed one."""
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def paired_ratios(fastbn_step, torch_step, rounds):
    """torch's time over fastbn's, round by round."""
    ratios = []
    for r in range(rounds):
        if r % 2:
            f, t = _steady(fastbn_step), _steady(torch_step)
        else:
            t, f = _steady(torch_step), _steady(fastbn_step)
        ratios.append(t / f)
    return ratios


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=61)
    parser.add_argument("--cases", nargs="+", default=DEFAULT_CASES,
                        help="substrings of case labels, e.g. 'channels-last' '(4096, 1024)'")
    args = parser.parse_args(argv)
    torch = pinned_torch(args.threads)
    print(f"threads={args.threads} rounds={args.rounds} float32, fastbn {fastbn.__version__}, "
          f"torch {torch.__version__}; torch / fastbn per round")
    rng = np.random.default_rng(0)
    for label, case in CASES.items():
        if case.residual or not any(w in label for w in args.cases):
            continue
        x, dy = case_inputs(case.shape, rng)
        fastbn_step = make_fastbn(case.fastbn(), x, dy, None)
        torch_step = make_torch(torch, case.torch(torch.nn), x, dy, None, case.channels_last)
        for _ in range(3):
            fastbn_step()
            torch_step()
        ratios = paired_ratios(fastbn_step, torch_step, args.rounds)
        low, _, high = statistics.quantiles(ratios, n=4)
        below = sum(r < 1 for r in ratios)
        print(f"{label:52s} median {statistics.median(ratios):5.2f}x  quartiles {low:.2f}-{high:.2f}"
              f"  rounds below 1: {below}/{args.rounds}", flush=True)


if __name__ == "__main__":
    main()
