"""state_dict / load_state_dict / save / load: PyTorch keys, validation, atomicity."""

import os
import zipfile

import numpy as np
import pytest

import fastbn


def _trained(rng, **kwargs):
    """A BatchNorm2d(3) with non-trivial parameters and statistics."""
    f = fastbn.BatchNorm2d(3, **kwargs)
    if f.affine:
        f.weight[...] = rng.uniform(0.5, 2.0, 3)
        f.bias[...] = rng.normal(size=3)
    for _ in range(3):
        f(rng.normal(size=(4, 3, 2, 2)).astype(f.dtype))
    return f


def _snapshot(layer):
    """Every array the layer owns, copied (for bitwise 'unchanged' checks)."""
    names = [n for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked",
                         "grad_weight", "grad_bias") if getattr(layer, n, None) is not None]
    return {n: getattr(layer, n).copy() for n in names}


def _assert_unchanged(layer, snap):
    assert _snapshot(layer).keys() == snap.keys()
    for name, value in snap.items():
        now = getattr(layer, name)
        assert now.dtype == value.dtype and now.tobytes() == value.tobytes(), name


def test_torch_state_dict_loads_and_round_trips(rng):
    torch = pytest.importorskip("torch", reason="torch is needed for the state dict round trip")
    t = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        t.weight.uniform_(0.5, 2.0)
        t.bias.normal_()
    for _ in range(3):
        t(torch.randn(4, 3, 2, 2) * 3 + 1)
    t.eval()
    f = fastbn.BatchNorm2d(3).eval()
    f.load_state_dict({k: v.numpy() for k, v in t.state_dict().items()})
    x = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(f(x), t(torch.from_numpy(x)).detach().numpy(), rtol=1e-6, atol=1e-6)

    f.running_mean[...] += 0.5       # make the state fastbn's own, then into a fresh torch layer
    f.num_batches_tracked[...] = 7
    t2 = torch.nn.BatchNorm2d(3).eval()
    t2.load_state_dict({k: torch.from_numpy(v) for k, v in f.state_dict().items()})
    assert int(t2.num_batches_tracked) == 7
    np.testing.assert_allclose(t2(torch.from_numpy(x)).detach().numpy(), f(x), rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize("kwargs,keys", [
    ({}, ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]),
    ({"affine": False}, ["running_mean", "running_var", "num_batches_tracked"]),
    ({"track_running_stats": False}, ["weight", "bias"]),
])
def test_keys_follow_pytorch(kwargs, keys, rng):
    f = _trained(rng, **kwargs)
    state = f.state_dict()
    assert list(state) == keys
    assert all(isinstance(v, np.ndarray) for v in state.values())
    if "num_batches_tracked" in state:
        count = state["num_batches_tracked"]
        assert count.shape == () and count.dtype == np.int64
    state[keys[0]][...] = 123          # a copy: editing it leaves the layer alone
    assert not (getattr(f, keys[0]) == 123).any()


def _variants(state):
    """(description, bad state dict) pairs, each wrong in one way."""
    extra = dict(state, extra=np.zeros(3, np.float32))
    missing = {k: v for k, v in state.items() if k != "running_var"}
    shape = dict(state, weight=np.ones(4, np.float32))
    dtype = dict(state, bias=state["bias"].astype(np.float64))
    count = dict(state, num_batches_tracked=np.array(2.0))
    negative = dict(state, num_batches_tracked=np.array(-1))
    scalar = dict(state, running_mean=None)
    return [("unknown keys", extra), ("missing keys", missing), ("shape", shape),
            ("dtype", dtype), ("non-negative integers", count),
            ("non-negative integers", negative), ("shape", scalar)]


def test_bad_state_dicts_raise_and_change_nothing(rng):
    f = _trained(rng)
    f.backward(rng.normal(size=(4, 3, 2, 2)).astype(np.float32))
    good = f.state_dict()
    # Valid entries come first in each bad dict, so a non-atomic load would have copied them.
    good = {k: v + 1 for k, v in good.items()}
    snap = _snapshot(f)
    for match, bad in _variants(good):
        with pytest.raises(ValueError, match=match):
            f.load_state_dict(bad)
        _assert_unchanged(f, snap)
    with pytest.raises(TypeError, match="mapping"):
        f.load_state_dict([("weight", good["weight"])])
    _assert_unchanged(f, snap)


def test_non_strict_load_ignores_unknown_and_missing(rng):
    f = _trained(rng)
    f.load_state_dict({"weight": np.full(3, 2.0, np.float32), "other": 1}, strict=False)
    assert (f.weight == 2).all()
    with pytest.raises(ValueError, match="shape"):
        f.load_state_dict({"bias": np.ones(2, np.float32)}, strict=False)


def test_save_load_round_trip(tmp_path, rng):
    f = _trained(rng, dtype=np.float64)
    path = tmp_path / "bn.npz"
    f.save(path)
    g = fastbn.BatchNorm2d(3, dtype=np.float64).load(path)
    for key, value in f.state_dict().items():
        assert getattr(g, key).tobytes() == value.tobytes(), key
    with np.load(path) as data:       # a plain .npz of the PyTorch-keyed state dict
        assert sorted(data.files) == sorted(f.state_dict())
    assert os.listdir(tmp_path) == ["bn.npz"]


def test_save_is_atomic(tmp_path, rng, monkeypatch):
    """A save that dies mid-write keeps the previous file and leaves no temporary behind."""
    f = _trained(rng)
    path = tmp_path / "bn.npz"
    f.save(path)
    before = path.read_bytes()

    def broken_savez(file, **arrays):
        file.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    f.running_mean[...] = 42
    with pytest.raises(OSError, match="disk full"):
        f.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["bn.npz"]


@pytest.mark.parametrize("corrupt", ["truncated", "garbage", "empty", "npy", "flipped", "other"])
def test_corrupted_or_mismatched_file_raises_value_error(tmp_path, rng, corrupt):
    f = _trained(rng)
    good = tmp_path / "good.npz"
    f.save(good)
    data = good.read_bytes()
    bad = tmp_path / "bad.npz"
    if corrupt == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif corrupt == "garbage":
        bad.write_bytes(b"this is not a state file at all" * 10)
    elif corrupt == "empty":
        bad.write_bytes(b"")
    elif corrupt == "npy":
        with bad.open("wb") as fh:
            np.save(fh, np.zeros(3))
    elif corrupt == "flipped":     # damage the stored bytes of one member: CRC mismatch
        with zipfile.ZipFile(good) as z:
            info = z.infolist()[0]
        at = info.header_offset + 30 + len(info.filename) + 60
        bad.write_bytes(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:])
    else:                          # a valid file of a different layer
        fastbn.BatchNorm2d(5).save(bad)
    target = _trained(rng)
    snap = _snapshot(target)
    with pytest.raises(ValueError, match="bad.npz"):
        target.load(bad)
    _assert_unchanged(target, snap)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        fastbn.BatchNorm1d(3).load(tmp_path / "nope.npz")


def test_to_keeps_arrays_and_records_device(rng):
    f = _trained(rng)
    state = f.state_dict()
    assert f.to("cpu") is f and f.device == "cpu"
    for key, value in state.items():
        np.testing.assert_array_equal(getattr(f, key), value)
    with pytest.raises(ValueError, match="device"):
        f.to("tpu")
