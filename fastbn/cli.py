"""The ``fastbn`` command: ``fastbn bench`` measures, ``fastbn info`` describes the install.

Exit status: 0 on success, 1 when a benchmark case failed or the benchmark
could not run (for example ``--device cuda`` without CUDA), 2 for bad options.
"""

import argparse
import json
import os
import sys

import fastbn
from fastbn import _threads

#: Timed rounds and warm-up rounds: the default workload, and ``--quick``.
DEFAULT_REPEATS, DEFAULT_WARMUP = 9, 2
QUICK_REPEATS, QUICK_WARMUP = 3, 1


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _names(text):
    return [t.strip() for t in text.split(",") if t.strip()]


def _parser():
    parser = argparse.ArgumentParser(
        prog="fastbn", description="fastbn: fast, trustworthy normalization layers.")
    parser.add_argument("--version", action="version", version=f"fastbn {fastbn.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{bench,info}")

    bench = sub.add_parser(
        "bench", help="time fastbn against NumPy, PyTorch and a parallel copy",
        description="Time fastbn on this machine against a NumPy implementation, PyTorch (when "
                    "installed) at the same thread count, and a parallel copy of the same array "
                    "(the memory floor). Runs interleaved, after warm-up; reports medians.")
    bench.add_argument("--ops", type=_names, metavar="LIST",
                       help="comma-separated ops or families, e.g. batch_norm.forward,layer_norm "
                            "or batch_norm_add_relu (default: every op this fastbn provides)")
    bench.add_argument("--shapes", type=_names, metavar="LIST",
                       help="comma-separated logical (N, C, *) shapes, e.g. 32x64x56x56,"
                            "32x64x56x56:cl,4096x1024 (:cl = channels-last; default: each op "
                            "family's own)")
    bench.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    bench.add_argument("--threads", type=_positive, metavar="N",
                       help=f"threads for fastbn, PyTorch and the copy "
                            f"(default: all {_threads.default_num_threads()})")
    bench.add_argument("--repeats", type=_positive, metavar="N",
                       help=f"timed runs per case (default {DEFAULT_REPEATS}, "
                            f"--quick {QUICK_REPEATS})")
    bench.add_argument("--warmup", type=_positive, metavar="N",
                       help=f"untimed runs first (default {DEFAULT_WARMUP}, "
                            f"--quick {QUICK_WARMUP})")
    bench.add_argument("--gap-ms", type=_non_negative, default=10.0, metavar="MS",
                       help="untimed pause before each call, so the previous implementation's "
                            "OpenMP threads stop spinning (default 10)")
    bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    bench.add_argument("--json", metavar="PATH", help="write every number and the machine here")
    bench.add_argument("--plot", metavar="PATH", help="write a PNG chart here (needs matplotlib)")
    bench.add_argument("--quick", action="store_true",
                       help="small default shapes and few repeats: a smoke test, not a measurement")

    bench.set_defaults(run=_bench, subparser=bench)

    info = sub.add_parser("info", help="versions, threads, SIMD, CUDA and cache of this install")
    info.add_argument("--json", action="store_true", help="print the facts as JSON")
    info.set_defaults(run=_info, subparser=info)
    return parser


def _config(args):
    """The runner configuration, or a usage error (exit 2) naming the bad option."""
    from fastbn._bench import cases, runner

    parser = args.subparser
    try:
        ops = cases.select(args.ops)
        shapes = [cases.parse_shape(s) for s in args.shapes] if args.shapes else None
    except ValueError as exc:
        parser.error(str(exc))
    if args.threads is not None and args.threads > _threads.default_num_threads():
        parser.error(f"--threads must be at most {_threads.default_num_threads()} "
                     f"(the CPUs this process may use), got {args.threads}")
    for option, path in (("--json", args.json), ("--plot", args.plot)):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            parser.error(f"{option}: the folder of {path!r} does not exist")
    if not cases.cases(ops, shapes, args.quick):
        parser.error("no op accepts these shapes (layer/group/instance norm take channels-first "
                     "shapes; instance norm needs a spatial dimension)")
    return runner.Config(
        ops=ops, shapes=shapes, dtype=args.dtype, threads=args.threads, device=args.device,
        quick=args.quick, gap_ms=args.gap_ms,
        repeats=args.repeats or (QUICK_REPEATS if args.quick else DEFAULT_REPEATS),
        warmup=args.warmup or (QUICK_WARMUP if args.quick else DEFAULT_WARMUP))


def _bench(args):
    from fastbn._bench import plot, report, runner

    config = _config(args)
    if args.plot:
        try:
            plot.require_matplotlib()
        except plot.PlotUnavailable as exc:
            args.subparser.error(str(exc))
    try:
        result = runner.run(config, report.Progress())
    except runner.BenchError as exc:
        print(f"fastbn bench: error: {exc}", file=sys.stderr)
        return 1
    print(report.table(result))
    if args.json:
        report.write_json(result, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        plot.plot(result, args.plot)
        print(f"wrote {args.plot}")
    return 1 if any("fastbn" in r["errors"] for r in result["cases"]) else 0


def _info(args):
    from fastbn._bench import machine

    facts = machine.describe()
    print(json.dumps(facts, indent=1) if args.json else machine.format_info(facts))
    return 0


def main(argv=None):
    """Run ``fastbn`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = _parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
