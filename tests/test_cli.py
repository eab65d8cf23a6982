"""The ``fastbn`` command: ``info`` reports, ``bench`` writes JSON and PNG, bad options fail."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import SUBPROCESS_CWD, subprocess_env

import fastbn
from fastbn import _threads
from fastbn._bench import cases, timing
from fastbn.cli import main

TINY = "4x8x5x5,4x8x5x5:cl,64x16"


def test_info_prints_versions(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"fastbn      {fastbn.__version__}" in out
    assert np.__version__ in out
    for word in ("Python", "Numba", "extension", "threads", "set_num_threads",
                 "NUMBA_NUM_THREADS", "SIMD", "CUDA", "Numba cache"):
        assert word in out


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["versions"]["fastbn"] == fastbn.__version__
    assert facts["threads"]["fastbn"] >= 1
    assert isinstance(facts["cuda"]["available"], bool)


def test_console_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "fastbn.cli", "--version"],
                          env=subprocess_env(), cwd=SUBPROCESS_CWD, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    assert fastbn.__version__ in proc.stdout


def test_bench_quick_writes_json_and_png(tmp_path, capsys):
    path, png = tmp_path / "bench.json", tmp_path / "bench.png"
    argv = ["bench", "--quick", "--shapes", TINY, "--repeats", "2", "--threads", "1",
            "--json", str(path)]
    try:
        import matplotlib  # noqa: F401
        argv += ["--plot", str(png)]
    except ImportError:
        png = None
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "batch_norm.forward" in out and "x copy" in out

    result = json.loads(path.read_text())
    assert {"fastbn_version", "config", "machine", "cases", "combined", "elapsed_s"} <= set(result)
    assert result["config"]["threads"] == 1 and result["config"]["repeats"] == 2
    labels = {(r["op"], r["label"]) for r in result["cases"]}
    assert ("batch_norm.backward", "4x8x5x5:cl") in labels
    for row in result["cases"]:
        assert row["errors"] == {}
        assert set(row["median_s"]) >= {"fastbn", "numpy", "copy"}
        assert all(len(s) == 2 for s in row["samples_s"].values())
        assert row["gbps"]["fastbn"] > 0 and row["copy_ratio"] > 0
        assert row["speedup"]["numpy"] > 0
    assert {r["op"] for r in result["combined"]} >= {"batch_norm.forward+backward"}
    if png is not None:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, message", [
    (["bench", "--shapes", "4y5"], "expected a shape like"),
    (["bench", "--shapes", "4x0x3"], "expected a shape like"),
    (["bench", "--ops", "nope"], "unknown op 'nope'"),
    (["bench", "--threads", "0"], "expected a positive integer"),
    (["bench", "--threads", str(_threads.default_num_threads() + 1)], "--threads must be at most"),
    (["bench", "--repeats", "x"], "expected a positive integer"),
    (["bench", "--dtype", "int8"], "invalid choice"),
    (["bench", "--device", "tpu"], "invalid choice"),
    (["bench", "--gap-ms", "-1"], "expected a number >= 0"),
    (["bench", "--json", "/no/such/folder/b.json"], "does not exist"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_options_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--quick", "--shapes", "4x8", "--plot", str(tmp_path / "p.png")])
    assert exc.value.code == 2
    assert "pip install 'fastbn[bench]'" in capsys.readouterr().err


def test_cuda_without_a_gpu_fails_clearly(capsys):
    from fastbn._bench import machine

    if machine.cuda_status()["available"]:
        pytest.skip("CUDA is available here")
    assert main(["bench", "--device", "cuda", "--quick", "--shapes", "4x8"]) == 1
    assert "CUDA was requested but is not available" in capsys.readouterr().err


def test_shape_parsing():
    s = cases.parse_shape("2x3x4x5:cl")
    assert s.dims == (2, 3, 4, 5) and s.axis == -1 and s.array_shape == (2, 4, 5, 3)
    assert cases.parse_shape("6x7").array_shape == (6, 7)


def test_ops_select_by_family():
    assert [op.name for op in cases.select(["batch_norm"])] == [
        "batch_norm.forward", "batch_norm.backward", "batch_norm.eval"]


def test_ops_select_by_name_without_suffix():
    """``batch_norm_add_relu`` names its forward and backward (its family is batch_norm_relu)."""
    assert [op.name for op in cases.select(["batch_norm_add_relu"])] == [
        "batch_norm_add_relu.forward", "batch_norm_add_relu.backward"]


def test_measure_interleaves_and_pinning_restores():
    calls = []
    fns = {name: (lambda n=name: calls.append(n)) for name in "abc"}
    samples = timing.measure(fns, repeats=3, warmup=1)
    assert {k: len(v) for k, v in samples.items()} == {"a": 3, "b": 3, "c": 3}
    assert calls[:3] == list("abc") and calls[3:6] == list("bca")  # order rotates
    before = _threads._requested
    with timing.pinned_threads(1):
        assert fastbn.get_num_threads() == 1
    assert _threads._requested == before


def test_bench_without_torch(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    path = tmp_path / "b.json"
    assert main(["bench", "--quick", "--ops", "batch_norm.eval", "--shapes", "64x16",
                 "--repeats", "1", "--json", str(path)]) == 0
    assert "torch is not installed" in capsys.readouterr().out
    row = json.loads(path.read_text())["cases"][0]
    assert "torch" not in row["median_s"] and "torch" not in row["speedup"]


@pytest.mark.parametrize("extension", [True, False])
def test_copy_floor_copies(monkeypatch, extension):
    from fastbn import _inference
    from fastbn._bench import floor

    monkeypatch.setattr(_inference, "available", lambda: extension)
    x = np.arange(70000, dtype=np.float32).reshape(7, 10000)
    np.testing.assert_array_equal(floor.cpu_copy(x)(), x.reshape(-1))
