"""Showing a benchmark: a progress bar while it runs, then a table and a JSON file."""

import json
import sys
import textwrap
import time


class Progress:
    """A one-line progress bar on ``stream`` (stderr); one line per case when not a terminal."""

    def __init__(self, stream=None, width=28):
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = self.stream.isatty()
        self.total = self.done = 0
        self.label = None
        self.started = time.perf_counter()

    def start(self, total):
        self.total, self.done = max(total, 1), 0
        self.started = time.perf_counter()

    def advance(self, label):
        self.done += 1
        if self.tty:
            filled = self.width * self.done // self.total
            bar = "#" * filled + "-" * (self.width - filled)
            elapsed = time.perf_counter() - self.started
            self.stream.write(f"\r[{bar}] {self.done}/{self.total} {elapsed:5.1f}s  {label:<48}")
        elif label != self.label:
            self.stream.write(f"[{self.done}/{self.total}] {label}\n")
        self.label = label
        self.stream.flush()

    def finish(self):
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _ms(seconds):
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def _x(ratio):
    if ratio is None:
        return "-"
    return f"{ratio:.2g}x" if ratio < 0.1 else f"{ratio:.0f}x" if ratio >= 100 else f"{ratio:.2f}x"


def _gbps(value):
    return "-" if value is None else f"{value:.1f}"


def _columns(rows):
    """Left-aligned first two columns, right-aligned numbers."""
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if k < 2 else c.rjust(w)
                      for k, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]


def table(result):
    """The human-readable summary of a ``runner.run`` result."""
    cfg = result["config"]
    head = ("op", "shape", "fastbn ms", "GB/s", "x copy", "vs NumPy", "vs torch")
    rows = [head]
    failures = []
    for r in result["cases"]:
        med = r["median_s"]
        rows.append((r["op"], r["label"], _ms(med.get("fastbn")) if "fastbn" in med else "error",
                     _gbps(r["gbps"]["fastbn"]), _x(r["copy_ratio"]),
                     _x(r["speedup"].get("numpy")), _x(r["speedup"].get("torch"))))
        failures += [f"{r['op']} {r['label']}: {impl} failed: {msg}"
                  for impl, msg in r["errors"].items()]
    for r in result["combined"]:
        rows.append((r["op"], r["label"], _ms(r["median_s"].get("fastbn")), "", "",
                     _x(r["speedup"].get("numpy")), _x(r["speedup"].get("torch"))))
    lines = _columns(rows)
    lines.insert(1, "-" * len(lines[0]))
    first = sum(r["setup_s"].get("fastbn", 0.0) for r in result["cases"])
    notes = [
        f"{cfg['dtype']}, {cfg['device']}, {cfg['threads']} thread(s), median of {cfg['repeats']} "
        f"interleaved runs ({cfg['gap_ms']:g} ms apart) after {cfg['warmup']} warm-up(s); "
        f"{result['elapsed_s']:.0f} s in all, "
        f"of which {first:.1f} s in fastbn's first calls (JIT compilation or Numba cache load, "
        "not in the medians).",
        "GB/s: the bytes an op must move (forward and eval: read x, write y; backward: read x and "
        "dy, write dx) / fastbn's time.",
        "x copy: fastbn's time / a parallel copy of the same array (1.00x = the memory floor).",
        "vs NumPy, vs torch: their time / fastbn's (above 1.00x: fastbn is faster)"
        + ("." if result["torch_version"] else "; torch is not installed."),
        *(["forward+backward: the two medians added."] if result["combined"] else []),
    ] + failures
    lines.append("")
    lines += [wrapped for note in notes for wrapped in textwrap.wrap(note, 100)]
    return "\n".join(lines)


def write_json(result, path):
    """Write the raw result (every sample, the machine, the configuration) to ``path``."""
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
