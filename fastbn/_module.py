"""``Module``: the small base every fastbn layer builds on (no autograd).

A layer registers its parameters and buffers by name; the base gives it the
rest: ``training`` and ``train()``/``eval()``, gradient accumulation into
``grad_<name>`` attributes (like PyTorch's ``.grad``, until ``zero_grad()``),
``state_dict()``/``load_state_dict()`` with PyTorch's keys, atomic
``save()``/``load()`` to ``.npz``, and ``to(device)``.

Every array a layer owns is created by :meth:`Module._array` (and
:meth:`Module._empty_like`), the one place a device backend plugs in; today
arrays are NumPy whatever ``device`` says.
"""

import os
import tempfile
import zipfile
import zlib

import numpy as np

from . import _dispatch, _memory, _validate


def _check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


class RunningStats:
    """``reset_running_stats`` for layers with ``running_mean``/``running_var`` buffers."""

    def reset_running_stats(self):
        """Running mean 0, running variance 1, ``num_batches_tracked`` 0 (in place)."""
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0


class Module:
    """Base class of the fastbn layers.

    Parameters
    ----------
    dtype : float16, float32 or float64
        dtype of the floating parameters and buffers.
    device : None, "cpu" or "cuda"
        Where the layer's arrays live (recorded; arrays are NumPy for now).

    Attributes
    ----------
    training : bool
        Training mode (True after construction), set by :meth:`train`/:meth:`eval`.
    requires_grad : bool
        Whether :meth:`backward` accumulates parameter gradients (see
        :meth:`requires_grad_`); the input gradient is always returned.
    """

    def __init__(self, *, dtype=np.float32, device=None):
        self.dtype = _validate.float_dtype(dtype, "dtype")
        self.device = _dispatch.device_name(None, device)
        self.training = True
        self.requires_grad = True
        self._param_names = []
        self._buffer_names = []

    # -- arrays: the device plug-in point ------------------------------------------------

    def _array(self, values, dtype=None):
        """A new array on this layer's device holding a copy of ``values``."""
        return np.array(values, dtype=self.dtype if dtype is None else dtype, copy=True)

    def _empty_like(self, a):
        """A new uninitialised array shaped, typed and laid out like ``a``, of ``a``'s kind.

        A device ``a`` gets a device array from its backend, as the caller's kind.
        """
        if not _dispatch.is_device_array(a):
            return _memory.empty_like(a)
        be = _dispatch.backend(a)
        dev = be.as_input(a, "array")
        return be.export(be.output(None, dev, be.plan(dev, ()), dev.dtype, ())[0], a)

    @staticmethod
    def _input(be, a, arg_name):
        """``a`` checked by backend ``be``: a NumPy array, or the caller's own device array.

        A device input stays the caller's array (a torch tensor, a CuPy or Numba
        array), so the functional calls return their results as its kind and
        ghost batches slice it as the caller would.
        """
        checked = be.as_input(a, arg_name)
        return a if _dispatch.is_device_array(a) else checked

    @staticmethod
    def _host(a):
        """A NumPy copy of one of the layer's arrays."""
        return np.array(a, copy=True)

    # -- registry ------------------------------------------------------------------------

    def register_parameter(self, name, value):
        """Create parameter ``name`` (None for an absent one) and its ``grad_<name>`` (None)."""
        setattr(self, name, None if value is None else self._array(value))
        setattr(self, "grad_" + name, None)
        self._param_names.append(name)

    def register_buffer(self, name, value, dtype=None):
        """Create buffer ``name`` (None for an absent one), in ``dtype`` or the layer's dtype."""
        setattr(self, name, None if value is None else self._array(value, dtype))
        self._buffer_names.append(name)

    def named_parameters(self):
        """``(name, array)`` for each present parameter, in registration order."""
        return [(n, getattr(self, n)) for n in self._param_names if getattr(self, n) is not None]

    def named_buffers(self):
        """``(name, array)`` for each present buffer, in registration order."""
        return [(n, getattr(self, n)) for n in self._buffer_names if getattr(self, n) is not None]

    # -- modes and gradients ---------------------------------------------------------------

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def train(self, mode=True):
        """Set training mode (``mode=False`` is eval mode); returns the layer."""
        self.training = _check_bool(mode, "mode")
        return self

    def eval(self):
        """Set eval mode; returns the layer."""
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        """Set whether parameter gradients accumulate (False freezes them); returns the layer."""
        self.requires_grad = _check_bool(requires_grad, "requires_grad")
        return self

    def zero_grad(self, set_to_none=True):
        """Clear the parameter gradients: to None (like PyTorch's default) or to zeros."""
        set_to_none = _check_bool(set_to_none, "set_to_none")
        for name, _ in self.named_parameters():
            grad = getattr(self, "grad_" + name)
            if set_to_none or grad is None:
                setattr(self, "grad_" + name, None)
            else:
                grad[...] = 0

    def _accumulate_grads(self, grads):
        """Add ``{name: gradient}`` to ``grad_<name>`` (nothing when ``requires_grad`` is False).

        Gradients of a device input come back to the host first: the layer's arrays are NumPy.
        """
        if not self.requires_grad:
            return
        host = {name: _dispatch.backend(g).to_host(g) for name, g in grads.items()
                if g is not None and getattr(self, name) is not None}
        for name, g in host.items():
            current = getattr(self, "grad_" + name)
            if current is None:
                setattr(self, "grad_" + name, self._array(g, getattr(self, name).dtype))
            else:
                current += g

    # -- state -------------------------------------------------------------------------------

    def _state_names(self):
        return [n for n, _ in self.named_parameters()] + [n for n, _ in self.named_buffers()]

    def state_dict(self):
        """A dict of NumPy copies of the parameters and buffers, under PyTorch's keys."""
        return {n: self._host(getattr(self, n)) for n in self._state_names()}

    def _checked_state(self, state_dict, strict):
        """``{name: NumPy array}`` to copy in, after checking every entry (ValueError otherwise)."""
        if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        names = self._state_names()
        unknown = sorted(str(k) for k in state_dict.keys() if k not in names)
        missing = [n for n in names if n not in state_dict]
        if strict and (unknown or missing):
            raise ValueError(f"state_dict does not match {type(self).__name__}: unknown keys "
                             f"{unknown}, missing keys {missing} (expected {names})")
        checked = {}
        for name in (n for n in names if n in state_dict):
            current = getattr(self, name)
            try:
                value = np.asarray(state_dict[name])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"state_dict[{name!r}] is not an array: {exc}") from None
            if value.shape != tuple(current.shape):
                raise ValueError(f"state_dict[{name!r}] must have shape {tuple(current.shape)}, "
                                 f"got {value.shape}")
            if current.dtype.kind == "f" and value.dtype != current.dtype:
                raise ValueError(f"state_dict[{name!r}] must have dtype {current.dtype}, got "
                                 f"{value.dtype} (convert it, or build the layer with "
                                 f"dtype={value.dtype})")
            if current.dtype.kind in "iu" and (value.dtype.kind not in "iu" or (value < 0).any()):
                raise ValueError(f"state_dict[{name!r}] must hold non-negative integers, got "
                                 f"dtype {value.dtype}")
            checked[name] = value
        return checked

    def load_state_dict(self, state_dict, strict=True):
        """Copy parameters and buffers in place from a mapping with PyTorch's keys.

        Every entry is checked first (keys, shapes, dtypes: a floating entry must
        have the layer's dtype exactly); on any mismatch a ``ValueError`` is
        raised and the layer is left exactly as it was.

        Parameters
        ----------
        state_dict : mapping of str to array
            E.g. ``{k: v.numpy() for k, v in torch_layer.state_dict().items()}``.
        strict : bool
            With False, unknown keys are ignored and missing ones left as they are
            (shapes and dtypes are still checked), like PyTorch.

        Raises
        ------
        TypeError
            If ``state_dict`` is not a mapping.
        ValueError
            For an unknown or missing key (when strict), a wrong shape or dtype.
        """
        strict = _check_bool(strict, "strict")
        for name, value in self._checked_state(state_dict, strict).items():
            np.copyto(getattr(self, name), value, casting="unsafe")

    def save(self, path):
        """Write :meth:`state_dict` to the ``.npz`` file ``path`` (exactly that name), atomically.

        The file is written to a temporary file in the same directory and renamed
        over ``path``, so a crash never leaves a partial file behind.
        """
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".fastbn-", suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **self.state_dict())
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    def load(self, path):
        """Load a file written by :meth:`save` (or any ``.npz`` of a matching state dict).

        Returns the layer.  A corrupted, truncated or mismatched file raises
        ``ValueError`` and leaves the layer exactly as it was; a missing file
        raises ``FileNotFoundError``.
        """
        path = os.fspath(path)
        try:
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            with data:
                state = {k: data[k] for k in data.files}
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            raise
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
            raise ValueError(f"path {path!r} is not a readable fastbn state file: {exc}") from exc
        try:
            self.load_state_dict(state)
        except ValueError as exc:
            raise ValueError(f"path {path!r} does not match this layer: {exc}") from exc
        return self

    def to(self, device):
        """Move the layer's arrays to ``device`` ("cpu" or "cuda"); returns the layer."""
        device = _dispatch.device_name(None, device)
        moved = {n: self._host(getattr(self, n)) for n in self._state_names()}
        grads = {n: getattr(self, "grad_" + n) for n in self._param_names}
        self.device = device
        for name, value in moved.items():
            setattr(self, name, self._array(value, value.dtype))
        for name, grad in grads.items():
            if grad is not None:
                setattr(self, "grad_" + name, self._array(self._host(grad), grad.dtype))
        return self

    def extra_repr(self):
        return ""

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"
