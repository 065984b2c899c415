"""`python -m cudagrad.bench gpu` (issue 7): every code path, on the CPU at quick sizes.

`--device cpu --quick` runs the GPU suite's workloads, timing, correctness checks,
table, JSON and plot on the CPU; no timing is asserted. torch.compile compiles
for minutes on the CPU, so the subprocess runs pass --no-compile and its
failure path (n/a) is checked in-process.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
WORKLOADS = ("elementwise chain", "full sum", "row softmax", "layer norm", "matmul float32",
             "matmul + bias + relu", "MLP step, compute-bound", "MLP step, overhead-bound")
# hides PyTorch from the suite (import torch raises ImportError), as on a machine without it
NO_TORCH = "import sys; sys.modules['torch'] = None; import runpy; runpy.run_module('cudagrad.bench', run_name='__main__')"


def run_gpu_suite(tmp_path: Path, *extra: str, without_torch: bool = False):
    out = tmp_path / "gpu.json"
    args = ["gpu", "--device", "cpu", "--quick", "--no-compile", "--json", str(out), *extra]
    command = [sys.executable, "-c", NO_TORCH, *args] if without_torch else \
        [sys.executable, "-m", "cudagrad.bench", *args]
    env = dict(os.environ, CUDAGRAD_DEVICE="cpu", CUDAGRAD_QUIET="1")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    if result.returncode != 0:
        pytest.fail(f"the gpu suite failed on the cpu:\n{result.stdout}\n{result.stderr}")
    return json.loads(out.read_text()), result.stdout, result.stderr


def check_structure(data: dict, stdout: str, with_torch: bool) -> None:
    assert data["suite"] == "gpu" and data["quick"] is True and data["device"] == "cpu"
    assert data["card"] and data["card"] in stdout, "the card (here the CPU) is named"
    assert data["timing"] and data["references"]["copy_GBps"] > 0
    names = [row["name"] for row in data["rows"]]
    for workload in WORKLOADS:
        assert any(name.startswith(workload) for name in names), (workload, names)
    assert sum(name.startswith("matmul float32") for name in names) == 2
    assert sum(name.startswith(("matmul tf32", "matmul bfloat16")) for name in names) == 4
    for row in data["rows"]:
        assert not row.get("error"), row
        assert row["name"] in stdout, "each row is printed in the table"
        assert row["cudagrad_s"] > 0 and row["kernels"] >= 1
        assert row["target"]["text"] and row["target_met"] in (True, False, None)
        if row.get("unit"):
            assert row["unit"] in ("GB/s", "TFLOP/s") and row["cudagrad_rate"] > 0
        if with_torch:
            assert row["reference_s"] > 0 and row["speedup"] > 0
            # bfloat16 results carry 8-bit mantissas; TF32 products 11-bit ones on each side
            bound = 2e-2 if "bfloat16" in row["name"] else 1e-2 if "tf32" in row["name"] else 1e-3
            assert row["relative_error"] < bound, row
        else:
            assert row.get("reference_s") is None and row.get("speedup") is None
        if row["name"].startswith(("elementwise", "row softmax", "layer norm", "matmul + bias")):
            assert row["kernels"] == 1, row
    memory_bound = [row for row in data["rows"] if row.get("unit") == "GB/s"]
    assert len(memory_bound) == 4 and all(row["fraction_of_peak"] > 0 for row in memory_bound)
    assert any(row["input_sets"] > 1 for row in memory_bound), "small inputs are rotated past L2"
    fusion = data["fusion"]
    assert len(fusion) >= 5 and all(row["kernels"] >= 1 for row in fusion)
    assert "Fusion table" in stdout and fusion[0]["graph"] in stdout


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed (the no-torch run is tested below)")
def test_gpu_suite_on_the_cpu(tmp_path):
    data, stdout, stderr = run_gpu_suite(tmp_path, "--plot", str(tmp_path / "gpu.png"))
    check_structure(data, stdout, with_torch=True)
    assert data["reference"].startswith("PyTorch") and data["torch"]
    assert data["torch_compile"] is False and "torch.compile not run" in stdout
    assert data["references"]["cublas_float32_256_TFLOPs"] > 0
    if HAS_MATPLOTLIB:
        assert (tmp_path / "gpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "matplotlib is not installed" in stderr and not (tmp_path / "gpu.png").exists()


def test_gpu_suite_without_torch(tmp_path):
    data, stdout, _ = run_gpu_suite(tmp_path, without_torch=True)
    check_structure(data, stdout, with_torch=False)
    assert data["torch"] is None and "not installed" in data["reference"]
    assert data["references"]["copy_method"].startswith("cudagrad")


def test_options_a_suite_does_not_take_are_refused():
    result = subprocess.run([sys.executable, "-m", "cudagrad.bench", "tiny", "--device", "cpu"],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 2 and "--device is not an option of the tiny suite" in result.stderr


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")
def test_a_failing_torch_compile_is_reported_as_not_available():
    from cudagrad.bench.gpu import Bench
    bench = Bench("cpu", quick=True, compile_torch=True)

    def fails(x):
        raise RuntimeError("no compiler here")
    row: dict = {}
    bench.compiled_seconds(fails, [lambda compiled: compiled(1.0)], row)
    assert row["compiled_s"] is None and "no compiler here" in row["compile_error"]


def test_targets_are_judged_only_where_they_can_be():
    from cudagrad.bench.gpu import target_met
    target = {"text": "1 kernel, >= 1.0x compiled", "kernels": 1, "vs_compiled": 1.0}
    assert target_met({"target": target, "kernels": 1, "speedup_compiled": 1.2}) is True
    assert target_met({"target": target, "kernels": 2, "speedup_compiled": 1.2}) is False
    assert target_met({"target": target, "kernels": 1}) is None, "compiled PyTorch was n/a"
    assert target_met({"target": target, "kernels": 3}) is False, "a missed bound is a miss"


def test_only_runs_the_named_workloads():
    from cudagrad.bench.gpu import run
    result = run(quick=True, device="cpu", compile=False, only="softmax, layer norm")
    assert [row["name"].split(" ")[0] for row in result["rows"]] == ["row", "layer"]


def test_event_timing_reads_the_gaps_between_back_to_back_runs():
    """timing.event_median_seconds with stand-ins for torch.cuda's events and stream."""
    import time
    import types

    from cudagrad.bench.timing import event_median_seconds

    class Event:
        def __init__(self, enable_timing):
            assert enable_timing

        def record(self, stream):
            self.at = time.perf_counter()

        def synchronize(self):
            pass

        def elapsed_time(self, later):
            return (later.at - self.at) * 1e3      # milliseconds, as CUDA events give
    fake_torch = types.SimpleNamespace(cuda=types.SimpleNamespace(Event=Event))
    stream = types.SimpleNamespace(synchronize=lambda: None)
    calls = []
    seconds = event_median_seconds(lambda: (calls.append(1), time.sleep(0.002)), fake_torch, stream,
                                   warmup=2, repeats=5)
    assert len(calls) == 7 and 0.0015 < seconds < 0.05
