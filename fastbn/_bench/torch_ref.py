"""The benchmarked ops through PyTorch, when it is installed (imported on first use).

Each setup takes a case's host :class:`~fastbn._bench.cases.Inputs` and a
device (``"cpu"`` or ``"cuda"``) and returns a zero-argument callable.  Inputs
are shared with NumPy without a copy on the CPU; channels-last arrays become
tensors in ``torch.channels_last`` memory format.  Forwards run without
building a graph, as fastbn's do; backwards are autograd's backward of the
public functional, run again on one retained graph (``retain_graph=True``), so
the forward is not in the timing.
"""

import importlib


def torch_module():
    """The ``torch`` module, or None when it cannot be imported."""
    try:
        return importlib.import_module("torch")
    except ImportError:
        return None


def _tensor(torch, a, shape, device, grad=False):
    """Tensor of host array ``a``; a full-size channels-last array is viewed as NCHW."""
    t = torch.from_numpy(a)
    if shape.channels_last and a.ndim == len(shape.dims):
        t = t.permute(0, a.ndim - 1, *range(1, a.ndim - 1))
    t = t.to(device).detach()
    return t.requires_grad_() if grad else t


class _Ctx:
    """A case's tensors: ``x``, ``w``, ``b`` (with gradients when asked) and fresh running stats."""

    def __init__(self, i, device, grad=False):
        import torch

        self.torch = torch
        self.x = _tensor(torch, i.x, i.shape, device, grad)
        self.w = _tensor(torch, i.weight, i.shape, device, grad)
        self.b = _tensor(torch, i.bias, i.shape, device, grad)
        self.rm = _tensor(torch, i.running_mean.copy(), i.shape, device)
        self.rv = _tensor(torch, i.running_var.copy(), i.shape, device)
        self.res = None if i.residual is None else _tensor(torch, i.residual, i.shape, device)


def _timed_forward(forward):
    """Setup timing ``forward(ctx, inputs)`` without autograd."""
    def setup(i, device):
        ctx = _Ctx(i, device)

        def run():
            with ctx.torch.no_grad():
                return forward(ctx, i)
        return run
    return setup


def _timed_backward(forward):
    """Setup timing autograd's backward of ``forward`` on a retained graph."""
    def setup(i, device):
        ctx = _Ctx(i, device, grad=True)
        y = forward(ctx, i)
        dy = _tensor(ctx.torch, i.dy, i.shape, device)
        return lambda: ctx.torch.autograd.grad(y, (ctx.x, ctx.w, ctx.b), dy, retain_graph=True)
    return setup


def _bn_train(c, i):
    return c.torch.nn.functional.batch_norm(c.x, c.rm, c.rv, c.w, c.b, training=True,
                                            momentum=i.momentum, eps=i.eps)


def _bn_relu(c, i):
    return c.torch.relu(_bn_train(c, i))


def _bn_add_relu(c, i):
    return c.torch.relu(_bn_train(c, i) + c.res)


def _bn_eval(c, i):
    return c.torch.nn.functional.batch_norm(c.x, c.rm, c.rv, c.w, c.b, training=False, eps=i.eps)


def _layer_norm(c, i):
    return c.torch.nn.functional.layer_norm(c.x, i.shape.dims[-1:], c.w, c.b, eps=i.eps)


def _group_norm(c, i):
    return c.torch.nn.functional.group_norm(c.x, i.groups, c.w, c.b, eps=i.eps)


def _instance_norm(c, i):
    return c.torch.nn.functional.instance_norm(c.x, weight=c.w, bias=c.b, use_input_stats=True,
                                               eps=i.eps)


batch_norm_forward = _timed_forward(_bn_train)
batch_norm_backward = _timed_backward(_bn_train)
batch_norm_eval = _timed_forward(_bn_eval)
batch_norm_relu_forward = _timed_forward(_bn_relu)
batch_norm_relu_backward = _timed_backward(_bn_relu)
batch_norm_add_relu_forward = _timed_forward(_bn_add_relu)
batch_norm_add_relu_backward = _timed_backward(_bn_add_relu)
layer_norm_forward = _timed_forward(_layer_norm)
layer_norm_backward = _timed_backward(_layer_norm)
group_norm_forward = _timed_forward(_group_norm)
group_norm_backward = _timed_backward(_group_norm)
instance_norm_forward = _timed_forward(_instance_norm)
instance_norm_backward = _timed_backward(_instance_norm)
