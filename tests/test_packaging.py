"""A non-editable install (a built wheel) finds its templates and runs the seed example."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SEED = """
import cudagrad as cg
a = cg.tensor([2, 2], [2.0, 3.0, 4.0, 5.0])
b = cg.tensor([2, 2], [6.0, 7.0, 8.0, 9.0])
c = cg.tensor([2, 2], [10.0, 10.0, 10.0, 10.0])
d = cg.tensor([2, 2], [11.0, 11.0, 11.0, 11.0])
e = ((a @ b) + c) * d
f = e.sum()
f.backward()
print(f.data)
print(f.size)
print(a.grad)
print(b.grad)
import sys
print(cg.__file__, file=sys.stderr)
print("native:", cg.native.reason() or "in use", file=sys.stderr)
"""
EXPECTED = "[2794.0]\n[1]\n[143.0, 187.0, 143.0, 187.0]\n[66.0, 66.0, 88.0, 88.0]\n"


def test_wheel_ships_templates_and_runs(tmp_path):
    pytest.importorskip("setuptools")
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                            "-w", str(wheels), "-q"], capture_output=True, text=True, timeout=600)
    if build.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {build.stderr[-500:]}")
    (wheel,) = wheels.glob("cudagrad-*.whl")
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target),
                    str(wheel), "-q"], check=True, capture_output=True, timeout=600)
    templates = [p.relative_to(target).as_posix() for p in target.rglob("*.j2")]
    assert any(t.startswith("cudagrad/templates/c/") for t in templates), templates
    assert any(t.startswith("cudagrad/templates/cuda/") for t in templates), templates
    assert (target / "cudagrad" / "native" / "_accel.c").is_file(), "the accelerator's source is not shipped"
    env = dict(os.environ, PYTHONPATH=str(target), CUDAGRAD_DEVICE="cpu",
               CUDAGRAD_CACHE_DIR=str(tmp_path / "cache"))
    run = subprocess.run([sys.executable, "-c", SEED], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout == EXPECTED
    assert str(target) in run.stderr, f"imported the wrong cudagrad: {run.stderr}"
    if os.environ.get("CUDAGRAD_NATIVE", "1") != "0":       # built from the shipped source
        assert "native: in use" in run.stderr, run.stderr
