"""GPU benchmark of fastbn's CUDA backend: achieved bandwidth, PyTorch (cuDNN), correctness.

Run on a machine with an NVIDIA GPU and ``fastbn[cuda]``::

    python benchmarks/gpu_bench.py                      # headline: float32 (256, 256, 56, 56)
    python benchmarks/gpu_bench.py --shape 32 64 112 112 --dtype float64
    python benchmarks/gpu_bench.py --sim-smoke          # no GPU: tiny shape under the simulator

Every op is timed with CUDA events around each call, after warm-up (JIT
compilation, allocator); the median of ``--repeat`` calls is reported.  The
memory floor is a device-to-device copy of the same array (one read, one write),
timed the same way: an op's achieved bandwidth is the bytes it must move
(``passes`` times the array's size: training forward 2 reads + 1 write,
backward 4 reads + 1 write) over its time, and the table gives it as a fraction
of the copy's.  PyTorch's ``batch_norm`` (cuDNN) runs on the same data when
torch with CUDA is installed.  Layer norm (over ``x.shape[1:]``, per-element
affine), group norm (``gcd(32, C)`` groups) and instance norm run on the same
array, training forward and forward+backward with affine grads, against
``torch.nn.functional``'s namesakes.  Results are checked against fastbn's CPU
backend on the same input before anything is timed.
"""

import argparse
import math
import os
import statistics
import subprocess
import sys

import numpy as np

#: (name, read+write passes over the array, what it runs).
OPS = [("eval forward", 2), ("train forward", 3), ("backward", 5),
       ("train forward+backward", 8), ("moments", 1)]

#: The row-wise norms, each timed as ``<name> train forward`` (3 passes) and
#: ``<name> forward+backward`` (8 passes).
NORMS = ("layer norm", "group norm", "instance norm")
OPS += [(f"{n} {op}", passes) for n in NORMS for op, passes in (("train forward", 3),
                                                                  ("forward+backward", 8))]


def norm_calls(fastbn, shape, w_elem, b_elem, w, b):
    """``{name: (train, backward)}``: ``train(x) -> (y, *stats)``, ``backward(dy, x, stats)``.

    ``w_elem``/``b_elem`` are layer norm's (``shape[1:]``), ``w``/``b`` per channel.
    """
    groups = math.gcd(32, shape[1])
    ns = tuple(shape[1:])
    return {
        "layer norm": (lambda x: fastbn.layer_norm_train(x, ns, w_elem, b_elem),
                       lambda dy, x, st: fastbn.layer_norm_backward(dy, x, *st, ns, w_elem)),
        "group norm": (lambda x: fastbn.group_norm_train(x, groups, w, b),
                       lambda dy, x, st: fastbn.group_norm_backward(dy, x, *st, groups, w)),
        "instance norm": (lambda x: fastbn.instance_norm_train(x, w, b),
                          lambda dy, x, st: fastbn.instance_norm_backward(dy, x, *st, w)),
    }


def fastbn_ops(fastbn, x, dy, w, b, rm, rv, w_elem, b_elem):
    """``{name: zero-argument callable}`` running each op on device arrays."""
    saved = {}
    norms = {}
    for name, (train, backward) in norm_calls(fastbn, x.shape, w_elem, b_elem, w, b).items():
        norms[f"{name} train forward"] = lambda train=train: train(x)
        norms[f"{name} forward+backward"] = \
            lambda train=train, backward=backward: backward(dy, x, train(x)[1:])

    def forward():
        saved["y"], saved["mean"], saved["invstd"] = fastbn.batch_norm_train(x, w, b)
        return saved["y"]

    def backward():
        return fastbn.batch_norm_backward(dy, x, saved["mean"], saved["invstd"], w)

    forward()
    return {"eval forward": lambda: fastbn.batch_norm(x, rm, rv, w, b),
            "train forward": forward,
            "backward": backward,
            "train forward+backward": lambda: (forward(), backward()),
            "moments": lambda: fastbn.moments(x, axis=tuple(a for a in range(x.ndim) if a != 1)),
            **norms}


def torch_ops(x, dy, w, b, rm, rv, w_elem, b_elem):
    """The same ops through ``torch.nn.functional.batch_norm`` (cuDNN), or {} without torch."""
    try:
        import torch
    except ImportError:
        return {}
    if not torch.cuda.is_available():
        return {}
    F = torch.nn.functional
    tx, tdy = torch.as_tensor(x, device="cuda"), torch.as_tensor(dy, device="cuda")
    tw, tb = (torch.as_tensor(a, device="cuda").requires_grad_() for a in (w, b))
    trm, trv = torch.as_tensor(rm, device="cuda"), torch.as_tensor(rv, device="cuda")
    xg = tx.detach().requires_grad_()

    def train():
        return F.batch_norm(xg, None, None, tw, tb, training=True)

    def fwd_bwd():
        train().backward(tdy)

    def eval_fwd():
        with torch.no_grad():
            return F.batch_norm(tx, trm, trv, tw, tb, training=False)

    dims = (0,) + tuple(range(2, tx.ndim))
    ops = {"eval forward": eval_fwd, "train forward": train,
           "train forward+backward": fwd_bwd,
           "moments": lambda: torch.var_mean(tx, dim=dims, unbiased=False)}
    twe, tbe = (torch.as_tensor(a, device="cuda").requires_grad_() for a in (w_elem, b_elem))
    groups = math.gcd(32, tx.shape[1])
    for name, fn in (("layer norm", lambda: F.layer_norm(xg, tx.shape[1:], twe, tbe)),
                     ("group norm", lambda: F.group_norm(xg, groups, tw, tb)),
                     ("instance norm", lambda: F.instance_norm(xg, weight=tw, bias=tb))):
        ops[f"{name} train forward"] = fn
        ops[f"{name} forward+backward"] = lambda fn=fn: fn().backward(tdy)
    return ops


def median_ms(cuda, fn, warmup, repeat):
    """Median milliseconds of ``fn()`` between two CUDA events, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, stop = cuda.event(), cuda.event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def _max_rel(got, want):
    """Largest ``|got - want|`` over arrays (device or host, None skipped), relative to ``want``."""
    return max(np.abs(np.asarray(g) - c).max() / max(1.0, np.abs(c).max())
               for g, c in zip(got, want) if c is not None)


def check_against_cpu(fastbn, x, dy, w, b, rm, rv, w_elem, b_elem):
    """Compare every op on the device with the CPU backend on the same data; returns max errors."""
    hx, hdy = x.copy_to_host(), dy.copy_to_host()
    tol = 1e-10 if hx.dtype == np.float64 else 1e-4
    errors = {}
    y, mean, invstd = fastbn.batch_norm_train(x, w, b)
    cy, cmean, cinvstd = fastbn.batch_norm_train(hx, w, b)
    errors["train forward"] = max(np.abs(y.copy_to_host() - cy).max(),
                                  np.abs(mean.copy_to_host() - cmean).max())
    grads = fastbn.batch_norm_backward(dy, x, mean, invstd, w)
    cgrads = fastbn.batch_norm_backward(hdy, hx, cmean, cinvstd, w)
    errors["backward"] = max(np.abs(g.copy_to_host() - c).max() / max(1.0, np.abs(c).max())
                             for g, c in zip(grads, cgrads))
    errors["eval forward"] = np.abs(fastbn.batch_norm(x, rm, rv, w, b).copy_to_host()
                                    - fastbn.batch_norm(hx, rm, rv, w, b)).max()
    calls = norm_calls(fastbn, x.shape, w_elem, b_elem, w, b)
    for name, (train, backward) in calls.items():
        got, want = train(x), train(hx)
        errors[name] = max(_max_rel(got, want),
                           _max_rel(backward(dy, x, got[1:]), backward(hdy, hx, want[1:])))
    for name, err in errors.items():
        if not err <= tol:
            raise SystemExit(f"{name}: CUDA and CPU results differ by {err:.3g} (tolerance {tol})")
    return errors


def run(shape, dtype, warmup, repeat, use_torch, timing=True):
    import fastbn
    from numba import cuda

    rng = np.random.default_rng(0)
    C = shape[1]
    hx = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
    x = cuda.to_device(hx)
    dy = cuda.to_device(rng.standard_normal(shape, dtype=np.float32).astype(dtype))
    w, b = rng.normal(size=C).astype(dtype), rng.normal(size=C).astype(dtype)
    rm, rv = rng.normal(size=C).astype(dtype), rng.uniform(0.5, 2, C).astype(dtype)
    w_elem, b_elem = (rng.normal(size=shape[1:]).astype(dtype) for _ in range(2))
    del hx
    errors = check_against_cpu(fastbn, x, dy, w, b, rm, rv, w_elem, b_elem)
    print("max |CUDA - CPU|: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))

    dw, db, drm, drv, dwe, dbe = (cuda.to_device(a) for a in (w, b, rm, rv, w_elem, b_elem))
    mine = fastbn_ops(fastbn, x, dy, dw, db, drm, drv, dwe, dbe)
    if not timing:
        for name, _ in OPS:
            mine[name]()
        print(f"ran {len(OPS)} ops on device arrays; no timing")
        return
    copy_dst = cuda.device_array_like(x)
    nbytes = x.size * x.dtype.itemsize
    copy_ms = median_ms(cuda, lambda: copy_dst.copy_to_device(x), warmup, repeat)
    copy_gbs = 2 * nbytes / copy_ms / 1e6
    print(f"\n{dtype.__name__} {shape} ({nbytes / 1e6:.0f} MB) on {device_name(cuda)}")
    print(f"device-to-device copy: {copy_ms:.3f} ms, {copy_gbs:.0f} GB/s (1 read + 1 write)\n")
    theirs = torch_ops(x, dy, w, b, rm, rv, w_elem, b_elem) if use_torch else {}
    print(f"{'op':<34}{'passes':>7}{'fastbn ms':>11}{'GB/s':>8}{'of copy':>9}{'torch ms':>10}"
          f"{'torch/fastbn':>14}")
    for name, passes in OPS:
        ms = median_ms(cuda, mine[name], warmup, repeat)
        gbs = passes * nbytes / ms / 1e6
        line = f"{name:<34}{passes:>7}{ms:>11.3f}{gbs:>8.0f}{gbs / copy_gbs:>9.0%}"
        if name in theirs:
            tms = median_ms(cuda, theirs[name], warmup, repeat)
            line += f"{tms:>10.3f}{tms / ms:>14.2f}"
        print(line)


def device_name(cuda):
    name = getattr(cuda.get_current_device(), "name", "the CUDA simulator")
    return name.decode() if isinstance(name, bytes) else str(name)


def sim_smoke():
    """Correctness part only, on a tiny shape under the CUDA simulator (no GPU needed)."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
        sys.exit(subprocess.call([sys.executable, os.path.abspath(__file__), "--sim-smoke"],
                                 env=env))
    from fastbn._cuda import config
    config.THREADS_PER_BLOCK, config.CHUNK_ELEMENTS = 8, 32
    run((3, 4, 5, 6), np.float32, warmup=0, repeat=0, use_torch=False, timing=False)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[256, 256, 56, 56])
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument("--sim-smoke", action="store_true",
                        help="tiny shape under the CUDA simulator: correctness, no figures")
    args = parser.parse_args(argv)
    if args.sim_smoke:
        sim_smoke()
        return
    run(tuple(args.shape), np.dtype(args.dtype).type, args.warmup, args.repeat,
        not args.no_torch)


if __name__ == "__main__":
    main()
