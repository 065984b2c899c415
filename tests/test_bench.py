"""`python -m cudagrad.bench` runs and writes the JSON it promises (no timing assertions)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_bench(suite: str, tmp_path: Path) -> tuple[dict, str]:
    out = tmp_path / f"{suite}.json"
    env = dict(os.environ, CUDAGRAD_DEVICE="cpu")
    result = subprocess.run([sys.executable, "-m", "cudagrad.bench", suite, "--quick", "--json",
                             str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text()), result.stdout


def check_common(data: dict, suite: str, stdout: str) -> None:
    assert data["suite"] == suite and data["quick"] is True
    assert {"cpu", "cores", "python", "numpy"} <= set(data["machine"])
    assert data["reference"] and data["rows"]
    for row in data["rows"]:
        assert {"name", "cudagrad_s", "reference_s", "speedup"} <= set(row)
        assert row["cudagrad_s"] > 0 and row["reference_s"] > 0
        assert row["name"] in stdout, "each row is printed in the table"
    assert data["machine"]["cpu"] in stdout, "the machine is named"


def test_tiny_suite(tmp_path):
    data, stdout = run_bench("tiny", tmp_path)
    check_common(data, "tiny", stdout)
    lazy = [row for row in data["rows"] if row["lazy"]]
    realized = [row for row in data["rows"] if not row["lazy"]]
    assert len(lazy) == 2 and len(realized) == 2
    assert all("lazy" in row["name"] for row in lazy), "lazy timings are labelled as such"
    assert all(row.get("target_speedup") for row in realized)


def test_cpu_suite(tmp_path):
    data, stdout = run_bench("cpu", tmp_path)
    check_common(data, "cpu", stdout)
    assert data["reference"].startswith("numpy")
    names = " ".join(row["name"] for row in data["rows"])
    assert "elementwise chain" in names and "softmax" in names and "matmul" in names
    for row in data["rows"]:
        assert row["kernels"] >= 1
        assert row["max_abs_error"] < 1e-3, row


def test_a_missing_suite_says_so(tmp_path):
    if (REPO / "cudagrad" / "bench" / "gpu.py").exists():
        pytest.skip("the gpu suite exists")
    result = subprocess.run([sys.executable, "-m", "cudagrad.bench", "gpu"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and "not written yet" in result.stderr
