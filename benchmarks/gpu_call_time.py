"""Per-call time of fastbn's CUDA batch norm on small batches, where host time decides.

Run on a machine with an NVIDIA GPU, ``fastbn[cuda]`` and PyTorch with CUDA::

    python benchmarks/gpu_call_time.py                   # (2, 8, 4, 4) and (32, 64, 56, 56)
    python benchmarks/gpu_call_time.py --shapes 8x32x16x16

For each shape and input kind (Numba device arrays, PyTorch CUDA tensors) it
reports two medians over ``--repeat`` calls after warm-up:

* **wall**: the call and a device synchronisation (what a step that waits costs);
* **host**: the call alone, after a synchronisation (the host time the GPU
  cannot hide: while it exceeds the kernels' time the GPU idles).

PyTorch's ``F.batch_norm`` training forward + backward (cuDNN, autograd) on the
same tensors is the reference, and a batch norm layer's training step
(``BatchNorm2d`` forward + backward on a CUDA tensor) is timed too.
"""

import argparse
import statistics
import time

import numpy as np


def _sync():
    import torch
    from numba import cuda
    cuda.synchronize()
    torch.cuda.synchronize()


def wall_us(fn, repeat, warmup=5):
    """Median microseconds of ``fn()`` followed by a device synchronisation."""
    for _ in range(warmup):
        fn()
    _sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def host_us(fn, repeat, warmup=5):
    """Median microseconds until ``fn()`` returns, the device idle at each start."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        _sync()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    _sync()
    return statistics.median(times) * 1e6


def inputs(shape, kind):
    """``(x, dy, weight, bias, running_mean, running_var)`` on the device, as ``kind`` arrays."""
    import torch
    from numba import cuda
    C = shape[1]
    host = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    vectors = (np.ones(C, np.float32), np.zeros(C, np.float32), np.zeros(C, np.float32),
               np.ones(C, np.float32))
    if kind == "torch":
        return (torch.as_tensor(host, device="cuda"), torch.as_tensor(host, device="cuda"),
                *(torch.as_tensor(v, device="cuda") for v in vectors))
    return (cuda.to_device(host), cuda.to_device(host), *(cuda.to_device(v) for v in vectors))


def fastbn_calls(x, dy, w, b, rm, rv):
    """``{name: zero-argument call}`` of the functional API on these arrays."""
    import fastbn
    saved = {}

    def forward():
        saved["y"], saved["mean"], saved["invstd"] = fastbn.batch_norm_train(x, w, b)

    forward()
    return {
        "train forward": forward,
        "train forward + running stats": lambda: fastbn.batch_norm_train(
            x, w, b, running_mean=rm, running_var=rv),
        "backward": lambda: fastbn.batch_norm_backward(dy, x, saved["mean"], saved["invstd"], w),
        "eval forward": lambda: fastbn.batch_norm(x, rm, rv, w, b),
    }


def torch_step(x, dy, w, b, rm, rv):
    """PyTorch's training forward + backward (cuDNN) on the same tensors."""
    import torch.nn.functional as F
    xg = x.detach().requires_grad_()
    wg, bg = w.clone().requires_grad_(), b.clone().requires_grad_()
    return lambda: F.batch_norm(xg, rm, rv, wg, bg, training=True).backward(dy)


def layer_step(shape):
    """A ``BatchNorm2d`` training step (forward + backward) on a CUDA tensor."""
    import torch
    import fastbn
    layer = fastbn.BatchNorm2d(shape[1], device="cuda")
    x = torch.randn(*shape, device="cuda")
    dy = torch.randn_like(x)
    return lambda: (layer.forward(x), layer.backward(dy))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["2x8x4x4", "32x64x56x56"])
    parser.add_argument("--repeat", type=int, default=60)
    args = parser.parse_args(argv)
    print(f"{'shape':<18}{'input':<7}{'call':<32}{'wall us':>9}{'host us':>9}")
    for text in args.shapes:
        shape = tuple(int(n) for n in text.split("x"))
        rows = []
        for kind in ("numba", "torch"):
            arrays = inputs(shape, kind)
            rows += [(kind, name, fn) for name, fn in fastbn_calls(*arrays).items()]
        rows.append(("torch", "PyTorch F.batch_norm fwd+bwd", torch_step(*inputs(shape, "torch"))))
        rows.append(("torch", "BatchNorm2d layer step", layer_step(shape)))
        for kind, name, fn in rows:
            print(f"{text:<18}{kind:<7}{name:<32}{wall_us(fn, args.repeat):>9.1f}"
                  f"{host_us(fn, args.repeat):>9.1f}")


if __name__ == "__main__":
    main()
