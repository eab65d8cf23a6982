"""``SyncBatchNorm``: batch norm with the statistics of the global batch, over MPI.

Each process (rank) holds a slice of the batch.  In a training step:

* forward -- every rank computes its slice's per-channel ``(count, mean, m2)``
  with the backend's moments, one ``Allgather`` exchanges them, and every rank
  merges them in rank order with Chan's formula (``fastbn._welford.chan_merge``,
  vectorised over channels), so all ranks hold bitwise identical statistics,
  normalise with them and update identical running statistics;
* backward -- every rank computes its slice's per-channel ``sum g`` and
  ``sum g * (x - mean)``, one ``Allgather`` exchanges them, every rank adds
  them in rank order and computes its slice of dx from the totals.

So the outputs, the running statistics and the gradients are those of plain
batch norm on the concatenated batch.  A message is ``2 * C + 1`` float64 per
rank: the slice's values per channel (the same for every channel), then two
per-channel vectors.  A count of -1 marks a rank whose call failed: every rank
then raises, instead of the others waiting forever in the collective.

mpi4py is imported only when a layer is built without an explicit ``comm``.
"""

import contextlib
import numbers
import types

import numpy as np

from . import _dispatch
from ._batchnorm import _backward, _Prepared, batch_norm
from ._batchnorm_layers import _BatchNorm, _Group
from ._welford import chan_merge

_FAILED = -1.0


def _world():
    """``MPI.COMM_WORLD``, or an ImportError that says what to install."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError("fastbn.SyncBatchNorm needs mpi4py and an MPI library; install them "
                          "with `pip install fastbn[mpi]` (or mpi4py against your system's MPI)"
                          ) from exc
    return MPI.COMM_WORLD


def _check_comm(comm):
    for method in ("Allgather", "Get_size"):
        if not callable(getattr(comm, method, None)):
            raise TypeError(f"comm must be an MPI communicator (e.g. mpi4py.MPI.COMM_WORLD), "
                            f"got {type(comm).__name__} without {method}()")
    return comm


class _SyncGroup(_Group):
    """A forward step normalised with the global batch's statistics (its backward syncs too)."""

    __slots__ = ()


class SyncBatchNorm(_BatchNorm):
    """Batch norm whose training statistics are those of the batch across all processes.

    Every process of ``comm`` calls ``forward`` and ``backward`` together, each
    with its own slice of the batch (slices may differ in size along the batch
    axis, and in training may be empty); the results equal
    :class:`fastbn.BatchNorm2d` on the slices concatenated in rank order.  The
    biased global variance normalises, the unbiased one (from the global count)
    feeds ``running_var``; running statistics and ``num_batches_tracked`` stay
    identical on every rank.

    Statistics are exchanged only in training mode (forward: one ``Allgather``
    of ``2 * C + 1`` float64 per rank; backward: one more).  In eval mode the
    layer is plain batch norm on the local slice, without communication.

    Parameters
    ----------
    num_features : int
        C, the number of channels.
    eps : float >= 0
    momentum : float in [0, 1] or None
        None: the cumulative average over ``num_batches_tracked`` batches.
    affine : bool
        Learnable ``weight`` (ones) and ``bias`` (zeros).
    track_running_stats : bool
    axis : int
        The channel axis (1; -1 for channels-last).  Any input rank >= 2.
    comm : mpi4py communicator or None
        The processes that share the batch (default ``MPI.COMM_WORLD``).
    activation : None or "relu"
        Applied after the residual add of ``forward(x, residual)``.
    dtype, device
        As in :class:`fastbn.BatchNorm2d`.

    Attributes
    ----------
    grad_weight, grad_bias
        The gradients of the *global* loss (the same on every rank): do not
        also sum them across ranks; averaging them leaves them unchanged.

    Raises
    ------
    ImportError
        When ``comm`` is None and mpi4py is not installed (``pip install fastbn[mpi]``).
    TypeError
        When ``comm`` is not a communicator.

    Notes
    -----
    Training takes NumPy (CPU) arrays.  A call that fails on one rank (a bad
    input, or a global batch with a single value per channel) raises on every
    rank, and changes nothing on any.  ``renorm`` and ``virtual_batch_size``
    are not supported.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, *, axis=1, comm=None, activation=None,
                 dtype=np.float32, device=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, axis=axis,
                         activation=activation, dtype=dtype, device=device)
        self.comm = _world() if comm is None else _check_comm(comm)
        self._exchanged = False

    def _check_config(self):
        super()._check_config()
        if self.renorm or self.virtual_batch_size is not None:
            raise ValueError("SyncBatchNorm supports neither renorm nor virtual_batch_size")

    # -- the collective ---------------------------------------------------------------------

    def _allgather(self, count, first, second):
        """Exchange ``(count, first, second)`` with every rank; returns them stacked by rank.

        ``count`` is this rank's values per channel, or ``_FAILED``.  Raises
        ValueError on the ranks that did not fail when any rank failed.
        """
        C = self.num_features
        send = np.empty(2 * C + 1)
        send[0], send[1:C + 1], send[C + 1:] = count, first, second
        recv = np.empty((self.comm.Get_size(), send.size))
        self.comm.Allgather(send, recv)
        self._exchanged = True
        failed = np.flatnonzero(recv[:, 0] == _FAILED)
        if failed.size and count != _FAILED:
            raise ValueError(f"{type(self).__name__}: the call failed on rank(s) "
                             f"{failed.tolist()} (see the error there); nothing was changed")
        return recv[:, 0], recv[:, 1:C + 1], recv[:, C + 1:]

    @contextlib.contextmanager
    def _collective(self, active):
        """Make a call every rank makes together fail on all of them, not hang.

        When the body raises on this rank before its exchange (and the call
        would exchange: ``active``), this rank still joins the exchange, marked
        failed, so that the others raise too.
        """
        self._exchanged = False
        try:
            yield
        except Exception:
            if active and not self._exchanged:
                zeros = np.zeros(self.num_features)
                self._allgather(_FAILED, zeros, zeros)
            raise

    def _global_moments(self, x):
        """``(count, mean, m2)`` of the global batch: the local ones merged in rank order."""
        if _dispatch.is_device_array(x):
            raise TypeError(f"{type(self).__name__} trains on NumPy (CPU) arrays, got a CUDA "
                            f"array {type(x).__name__}")
        C = self.num_features
        count, mean, m2 = 0, np.zeros(C), np.zeros(C)
        if x.size:
            prep = _Prepared(_dispatch.backend(x), x, self.axis)
            _, mean, m2 = prep.be.moments(prep.view(prep.xc))
            count = prep.count
        counts, means, m2s = self._allgather(count, mean, m2)
        total, mean, m2 = 0.0, np.zeros(C), np.zeros(C)
        for rank_stats in zip(counts, means, m2s):
            total, mean, m2 = chan_merge(total, mean, m2, *rank_stats)
        if total < 2:
            raise ValueError(f"expected more than 1 value per channel when training, got "
                             f"{total:.0f} value(s) per channel over the "
                             f"{self.comm.Get_size()} process(es) (x of shape "
                             f"{tuple(x.shape)} on this one)")
        return total, mean, m2

    def _global_sums(self, sum_g, sum_gx, count):
        """The ``reduce_sums`` of the backward: all ranks' sums, added in rank order."""
        counts, gs, gxs = self._allgather(count, sum_g, sum_gx)
        total_g, total_gx = gs[0].copy(), gxs[0].copy()
        for g, gx in zip(gs[1:], gxs[1:]):
            total_g += g
            total_gx += gx
        return total_g, total_gx, counts.sum()

    # -- forward and backward ---------------------------------------------------------------

    def forward(self, x, residual=None):
        """Normalise this rank's slice ``x`` with the global batch's statistics (in training).

        Every rank of ``comm`` must call it.  See :meth:`_BatchNorm.forward`.
        """
        with self._collective(self.training and any(self._modes())):
            return super().forward(x, residual)

    def _step(self, x, residual, out, use_batch, update):
        if not (self.training and (use_batch or update)):
            return super()._step(x, residual, out, use_batch, update)
        count, mean, m2 = self._global_moments(x)
        weight = None if self.weight is None else self._array(self.weight)
        bias = None if self.bias is None else self._array(self.bias)
        if use_batch:
            norm_mean, norm_var = mean, m2 / count
        else:
            norm_mean, norm_var = (v.astype(np.float64) for v in (self.running_mean,
                                                                 self.running_var))
        if x.size:
            y = batch_norm(x, norm_mean, norm_var, weight, bias, False, eps=self.eps,
                           axis=self.axis, out=out, activation=self.activation,
                           residual=residual)
        else:
            y = self._empty_like(x) if out is None else out
        if update and _dispatch.backend(x).update_running(
                self.running_mean, self.running_var, mean, m2 / (count - 1), self._factor()):
            self.num_batches_tracked += 1
        invstd = 1.0 / np.sqrt(norm_var + self.eps)
        group = (_SyncGroup if use_batch else _Group)(norm_mean, invstd, weight, bias, None, None,
                                                      use_batch)
        return y, group

    def backward(self, dy):
        """dx of this rank's slice; accumulates the global ``grad_weight``/``grad_bias``.

        Every rank of ``comm`` must call it.  See :meth:`_BatchNorm.backward`.
        """
        s = self._saved
        with self._collective(s is not None and isinstance(s.groups[0], _SyncGroup)):
            return super().backward(dy)

    def _group_backward(self, dy, x, output, g, has_residual, out):
        if not isinstance(g, _SyncGroup):
            return super()._group_backward(dy, x, output, g, has_residual, out)
        if x.size:
            return _backward(dy, x, g.mean, g.invstd, g.weight, axis=self.axis, out=out,
                             device=None, bias=g.bias, activation=self.activation, output=output,
                             residual=has_residual, batch_stats=True,
                             reduce_sums=self._global_sums)
        zeros = np.zeros(self.num_features)
        sum_g, sum_gx, _ = self._global_sums(zeros, zeros, 0)
        dx = self._empty_like(x) if out is None else out
        return (dx, *g.param_grads(sum_g, sum_gx)) + ((dy,) if has_residual else ())

    def extra_repr(self):
        return super().extra_repr() + f", comm={type(self.comm).__name__}"


def _sync_copy(layer, comm):
    """A SyncBatchNorm sharing ``layer``'s parameters, buffers, gradients and modes."""
    if layer.renorm or layer.virtual_batch_size is not None:
        raise ValueError(f"cannot convert {layer!r}: SyncBatchNorm supports neither renorm nor "
                         "virtual_batch_size")
    sync = SyncBatchNorm(layer.num_features, layer.eps, layer.momentum, layer.affine,
                         layer.track_running_stats, axis=layer.axis, comm=comm,
                         activation=layer.activation, dtype=layer.dtype, device=layer.device)
    for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked",
                 "grad_weight", "grad_bias", "training", "requires_grad", "use_batch_stats",
                 "update_running_stats"):
        setattr(sync, name, getattr(layer, name))
    return sync


#: Objects whose attributes are never searched for layers.
_OPAQUE = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
           types.MethodType, np.ndarray, np.generic, str, bytes, numbers.Number)


def convert_sync_batchnorm(obj, comm=None):
    """Replace every batch norm layer in ``obj`` by a :class:`SyncBatchNorm`.

    In the spirit of ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``: a
    ``BatchNorm1d/2d/3d`` becomes a ``SyncBatchNorm`` with the same
    configuration that *shares* its parameter, buffer and gradient arrays (so
    an optimiser holding them keeps working) and its train/eval mode.

    Parameters
    ----------
    obj : layer, list, tuple, dict, or any object holding layers as attributes
        Searched recursively.  Lists, tuples and dicts that contain a converted
        layer are rebuilt (new containers); an object's attributes are replaced
        in place, as PyTorch does.  Anything else (and a ``SyncBatchNorm``) is
        returned as is.
    comm : mpi4py communicator or None
        For the new layers (default ``MPI.COMM_WORLD``).

    Returns
    -------
    The converted structure: a new layer or container, or ``obj`` itself.

    Raises
    ------
    ValueError
        For a layer using ``renorm`` or ``virtual_batch_size``.
    ImportError
        When a layer needs converting, ``comm`` is None and mpi4py is missing.
    """
    converted = {}

    def convert(item):
        key = id(item)
        if key in converted:
            return converted[key]
        converted[key] = item  # a reference cycle ends here
        if isinstance(item, (SyncBatchNorm, *_OPAQUE)):
            new = item
        elif isinstance(item, _BatchNorm):
            new = _sync_copy(item, comm)
        elif isinstance(item, (list, tuple)):
            items = [convert(v) for v in item]
            unchanged = all(a is b for a, b in zip(items, item))
            new = item if unchanged else (type(item)(*items) if hasattr(item, "_fields")
                                          else type(item)(items))
        elif isinstance(item, dict):
            values = {k: convert(v) for k, v in item.items()}
            new = item if all(values[k] is v for k, v in item.items()) else type(item)(values)
        else:
            new = item
            for name, value in list(getattr(item, "__dict__", {}).items()):
                replaced = convert(value)
                if replaced is not value:
                    setattr(item, name, replaced)
        converted[key] = new
        return new

    return convert(obj)
