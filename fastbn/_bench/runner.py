"""Run the benchmark: build each case, time its implementations, derive the ratios.

The result is one JSON-ready dict: the configuration, the machine, one row per
case (medians, raw samples, speedups, ratio to the copy floor, GB/s) and a
``forward+backward`` row per family and shape where both were measured.
"""

import dataclasses
import statistics
import time

import numpy as np

import fastbn

from . import cases, floor, machine, timing, torch_ref

#: Implementations in the order they appear in rows, tables and charts.
IMPLS = ("fastbn", "numpy", "torch", "copy")


class BenchError(RuntimeError):
    """The benchmark cannot run as asked (for example CUDA requested but absent)."""


@dataclasses.dataclass
class Config:
    """What to run; see ``fastbn bench --help`` for the meaning of each field."""

    ops: list             # cases.Op entries
    shapes: list          # cases.Shape, or None for each family's defaults
    dtype: str
    threads: int          # None: fastbn.get_num_threads()
    repeats: int
    warmup: int           # >= 1 (the first warm-up call also checks each implementation)
    gap_ms: float
    device: str
    quick: bool

    def as_dict(self):
        return {"ops": [op.name for op in self.ops],
                "shapes": None if self.shapes is None else [s.label for s in self.shapes],
                "dtype": self.dtype, "threads": self.threads, "repeats": self.repeats,
                "warmup": self.warmup, "gap_ms": self.gap_ms, "device": self.device,
                "quick": self.quick}


class _Device:
    """Where the fastbn and torch inputs live, and how to wait for the work."""

    def __init__(self, name, torch):
        self.name = name
        self.torch = torch
        self.sync = None
        if name == "cuda":
            from numba import cuda

            if not cuda.is_available():
                raise BenchError("CUDA was requested but is not available: "
                                 + machine.cuda_status()["reason"])
            self.cuda = cuda
            self.sync = cuda.synchronize
            if torch is not None and not torch.cuda.is_available():
                self.torch = None

    def inputs(self, i):
        """``i`` with every array on this device (Numba device arrays for CUDA)."""
        if self.name == "cpu":
            return i
        fields = ("x", "dy", "weight", "bias", "running_mean", "running_var")
        moved = {f: self.cuda.to_device(getattr(i, f)) for f in fields}
        return cases.Inputs(**{**i.__dict__, **moved})

    def copy(self, x):
        return floor.cpu_copy(x) if self.name == "cpu" else floor.cuda_copy(x)


def _error(exc):
    return f"{type(exc).__name__}: {exc}"


def _setups(op, host, dev):
    """The implementations' setups for one case, ``fastbn`` first."""
    on_device = dev.inputs(host)
    setups = {"fastbn": lambda: op.fastbn(on_device)}
    if dev.name == "cpu":
        setups["numpy"] = lambda: op.numpy(host)
    if dev.torch is not None:
        setups["torch"] = lambda: op.torch(host, dev.name)
    setups["copy"] = lambda: dev.copy(on_device.x)
    return setups


def _prepare(op, host, dev):
    """Callables that ran once without error, the errors of the rest, and the setup times.

    A setup time is the setup plus that first call: for fastbn it holds the JIT
    compilation (or Numba cache load) a fresh install pays once.
    """
    fns, errors, first = {}, {}, {}
    for name, setup in _setups(op, host, dev).items():
        start = time.perf_counter()
        try:
            fn = setup()
            fn()
            if dev.sync is not None:
                dev.sync()
        except Exception as exc:  # reported per implementation; the run goes on
            errors[name] = _error(exc)
        else:
            fns[name] = fn
        first[name] = time.perf_counter() - start
    return fns, errors, first


def _row(op, shape, config, host, samples, errors, first):
    medians = {k: statistics.median(v) for k, v in samples.items()}
    nbytes = host.x.nbytes
    moved = op.passes * nbytes
    t = medians.get("fastbn")
    return {
        "op": op.name, "family": op.family.name, "label": shape.label,
        "shape": list(shape.dims), "channels_last": shape.channels_last,
        "array_shape": list(shape.array_shape), "axis": shape.axis,
        "dtype": config.dtype, "device": config.device, "threads": config.threads,
        "bytes_moved": moved,
        "median_s": medians,
        "samples_s": samples,
        "setup_s": first,
        "speedup": {k: medians[k] / t for k in ("numpy", "torch") if t and k in medians},
        "copy_ratio": t / medians["copy"] if t and "copy" in medians else None,
        "gbps": {"fastbn": moved / t / 1e9 if t else None,
                 "copy": 2 * nbytes / medians["copy"] / 1e9 if "copy" in medians else None},
        "errors": errors,
    }


def _combined(rows):
    """``family.forward+backward`` rows: per implementation, the sum of the two medians."""
    by_key = {(r["op"], r["label"]): r for r in rows}
    out = []
    for r in rows:
        family, _, kind = r["op"].partition(".")
        back = by_key.get((f"{family}.backward", r["label"]))
        if kind != "forward" or back is None:
            continue
        medians = {k: r["median_s"][k] + back["median_s"][k]
                   for k in IMPLS if k in r["median_s"] and k in back["median_s"]}
        t = medians.get("fastbn")
        out.append({"op": f"{family}.forward+backward", "label": r["label"],
                    "median_s": medians,
                    "speedup": {k: medians[k] / t for k in ("numpy", "torch")
                                if t and k in medians}})
    return out


def run(config, progress=None):
    """Run every case of ``config``; returns the JSON-ready result.

    ``progress`` (optional) gets ``start(total_rounds)``, ``advance(label)`` after
    each timing round and ``finish()``.

    Raises
    ------
    BenchError
        If the device asked for cannot be used.
    """
    torch = torch_ref.torch_module()
    dev = _Device(config.device, torch)
    todo = cases.cases(config.ops, config.shapes, config.quick)
    config = dataclasses.replace(config, threads=config.threads or fastbn.get_num_threads())
    rounds = config.warmup + config.repeats
    if progress is not None:
        progress.start(len(todo) * rounds)
    rows = []
    started = time.perf_counter()
    with timing.pinned_threads(config.threads, dev.torch):
        for op, shape in todo:
            label = f"{op.name} {shape.label}"
            host = cases.make_inputs(shape, np.dtype(config.dtype), op.family)
            fns, errors, first = _prepare(op, host, dev)
            samples = {}
            if "fastbn" in fns:
                tick = (lambda: progress.advance(label)) if progress is not None else None
                samples = timing.measure(fns, config.repeats, config.warmup - 1, dev.sync, tick,
                                         config.gap_ms / 1e3)
            elif progress is not None:
                for _ in range(rounds):
                    progress.advance(label)
            rows.append(_row(op, shape, config, host, samples, errors, first))
    if progress is not None:
        progress.finish()
    return {
        "fastbn_version": fastbn.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_s": time.perf_counter() - started,
        "torch_version": getattr(torch, "__version__", None),
        "config": config.as_dict(),
        "machine": machine.describe(),
        "cases": rows,
        "combined": _combined(rows),
    }
