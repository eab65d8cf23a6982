"""Eval-forward benchmarks for inference services (issue 4).

Run as ``python benchmarks/bench_inference.py`` (``--quick`` for a smoke run).
Reports, from one process, with interleaved rounds and medians:

* per-call latency of the eval forward for (1, 512) and (1, 64, 56, 56)
  float32: the fastbn layer, the compiled kernel alone, and
  ``torch.nn.BatchNorm1d/2d(...).eval()`` under ``torch.no_grad()`` at
  fastbn's thread count;
* cold start: a fresh interpreter from before ``import numpy`` to the first
  eval result (median of several processes);
* throughput of (32, 64, 56, 56) float32 eval vs a parallel copy of the same
  array on the same threads (the memory floor: one read, one write).

Every contender is a zero-argument callable built by a ``make_*`` factory, so
other entry points (``fastbn.batch_norm``) slot into the same harness.
"""

import argparse
import statistics
import subprocess
import sys
import time

import numpy as np

from fastbn import _inference, _threads

#: Programs timed by the cold-start benchmark: the public layer, and the
#: compiled kernel alone.  Each prints only its import-to-result seconds.
COLD_START_CODE = {
    "layer": """\
import time
t0 = time.perf_counter()
import numpy as np
import fastbn
y = fastbn.BatchNorm2d(64).eval()(np.ones((1, 64, 56, 56), np.float32))
print(time.perf_counter() - t0)
""",
    "kernel": """\
import time
t0 = time.perf_counter()
import numpy as np
import fastbn._inference as inf
x = np.ones((1, 64, 56 * 56), np.float32)
p = np.ones(64, np.float32)
inf.normalize_eval(x, p, p, p, p, 1e-5, False, None, np.empty_like(x))
print(time.perf_counter() - t0)
""",
}


def _params(C, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(C).astype(np.float32), (rng.random(C) + 0.5).astype(np.float32),
            rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32))


def random_input(shape, seed=0):
    """A float32 ``(N, C, *)`` standard-normal input."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def make_layer_eval(x):
    """``fastbn.BatchNorm{1,2}d(C).eval()(x)``: the public path, output allocated per call."""
    import fastbn

    layer = (fastbn.BatchNorm1d if x.ndim <= 3 else fastbn.BatchNorm2d)(x.shape[1]).eval()
    for buf, value in zip((layer.running_mean, layer.running_var, layer.weight, layer.bias),
                          _params(x.shape[1])):
        buf[...] = value
    return lambda: layer(x)


def make_fastbn_eval(x, out):
    """The compiled eval kernel alone: ``x`` (float32 ``(N, C, *)``) into ``out``."""
    x3 = x.reshape(x.shape[0], x.shape[1], -1)
    y3 = out.reshape(x3.shape)
    rm, rv, w, b = _params(x.shape[1])
    return lambda: _inference.normalize_eval(x3, rm, rv, w, b, 1e-5, False, None, y3)


def make_torch_eval(x):
    """The same forward through ``torch.nn.BatchNorm{1,2}d(C).eval()`` under no_grad."""
    import torch

    torch.set_num_threads(_threads.get_num_threads())
    xt = torch.from_numpy(x)
    layer = (torch.nn.BatchNorm1d if x.ndim <= 3 else torch.nn.BatchNorm2d)(x.shape[1]).eval()
    with torch.no_grad():
        for buf, value in zip((layer.running_mean, layer.running_var, layer.weight, layer.bias),
                              _params(x.shape[1])):
            buf.copy_(torch.from_numpy(value))

    def call():
        with torch.no_grad():
            return layer(xt)
    return call


def make_parallel_copy(x, out):
    """A parallel copy of ``x`` into ``out`` on fastbn's threads (the memory floor)."""
    src, dst = x.reshape(-1), out.reshape(-1)
    return lambda: _inference.parallel_copy(src, dst)


def interleaved_times(callables, *, rounds, inner, warmup=3):
    """Seconds per call of each callable, one entry per interleaved round.

    Each round times ``inner`` back-to-back calls of every callable, in an
    order that rotates between rounds; ``warmup`` untimed rounds come first.
    Entry ``i`` of every list comes from the same round, so ratios can be
    taken pairwise, which cancels the machine's slow drifts.
    """
    names = list(callables)
    times = {name: [] for name in names}
    for r in range(warmup + rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            fn = callables[name]
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            if r >= warmup:
                times[name].append((time.perf_counter() - t0) / inner)
    return times


def paired_ratio(times, num, den):
    """Median over rounds of ``times[num][i] / times[den][i]``."""
    return statistics.median(a / b for a, b in zip(times[num], times[den]))


def medians(times):
    """Median seconds per call of each contender."""
    return {name: statistics.median(ts) for name, ts in times.items()}


def cold_start(code, runs=7):
    """Median (import-to-first-result, whole-process) seconds over fresh processes."""
    inside, whole = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                             text=True).stdout
        whole.append(time.perf_counter() - t0)
        inside.append(float(out.split()[-1]))
    return statistics.median(inside), statistics.median(whole)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats (smoke test)")
    args = parser.parse_args(argv)
    scale = 0.1 if args.quick else 1.0
    print(f"threads={_threads.get_num_threads()} openmp={_inference.openmp_enabled()}")

    for shape, inner in (((1, 512), 200), ((1, 64, 56, 56), 20)):
        x = random_input(shape)
        contenders = {"layer": make_layer_eval(x), "kernel": make_fastbn_eval(x, np.empty_like(x))}
        try:
            contenders["torch"] = make_torch_eval(x)
        except ImportError:
            pass
        times = interleaved_times(contenders, rounds=max(5, int(200 * scale)), inner=inner)
        line = "  ".join(f"{k} {v * 1e6:7.2f} us" for k, v in medians(times).items())
        if "torch" in times:
            line += "".join(f"  torch/{k} {paired_ratio(times, 'torch', k):.2f}x"
                            for k in ("layer", "kernel"))
        print(f"latency {str(shape):16s} {line}")

    for name, code in COLD_START_CODE.items():
        inside, whole = cold_start(code, runs=max(3, int(7 * scale)))
        print(f"cold start ({name}): import to first result {inside:.3f} s "
              f"(process incl. interpreter {whole:.3f} s)")

    shape = (32, 64, 56, 56)
    x = random_input(shape)
    out = np.empty_like(x)  # both contenders read x and write out: same pages, same caches
    times = interleaved_times({"fastbn": make_fastbn_eval(x, out), "copy": make_parallel_copy(x, out)},
                              rounds=max(5, int(200 * scale)), inner=1)
    med = medians(times)
    gbs = 2 * 4 * np.prod(shape) / med["copy"] / 1e9
    print(f"throughput {shape}: fastbn {med['fastbn'] * 1e3:.3f} ms, parallel copy "
          f"{med['copy'] * 1e3:.3f} ms ({gbs:.1f} GB/s), "
          f"fastbn/copy {paired_ratio(times, 'fastbn', 'copy'):.3f}")


if __name__ == "__main__":
    main()
