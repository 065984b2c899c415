"""The seed contract (SEED-README.md): the example prints exactly its four lines."""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cudagrad as cg

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "example.py"
EXPECTED = "[2794.0]\n[1]\n[143.0, 187.0, 143.0, 187.0]\n[66.0, 66.0, 88.0, 88.0]\n"


def run_seed(device=None):
    kw = {} if device is None else {"device": device}
    a = cg.tensor([2, 2], [2.0, 3.0, 4.0, 5.0], **kw)
    b = cg.tensor([2, 2], [6.0, 7.0, 8.0, 9.0], **kw)
    c = cg.tensor([2, 2], [10.0, 10.0, 10.0, 10.0], **kw)
    d = cg.tensor([2, 2], [11.0, 11.0, 11.0, 11.0], **kw)
    e = ((a @ b) + c) * d
    f = e.sum()
    f.backward()
    print(f.data)
    print(f.size)
    print(a.grad)
    print(b.grad)
    return a, b, c, d, e, f


def _env(device):
    env = dict(os.environ)
    env["CUDAGRAD_DEVICE"] = device
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.skipif(not EXAMPLE.exists(), reason="examples/example.py does not exist yet")
def test_example_subprocess_cpu():
    result = subprocess.run([sys.executable, str(EXAMPLE)], cwd=ROOT, env=_env("cpu"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == EXPECTED, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"


@pytest.mark.skipif(not EXAMPLE.exists(), reason="examples/example.py does not exist yet")
def test_example_subprocess_device(device):
    result = subprocess.run([sys.executable, str(EXAMPLE)], cwd=ROOT, env=_env(device),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == EXPECTED, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def test_seed_in_process(device):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run_seed(device)
    assert out.getvalue() == EXPECTED


def test_seed_in_process_default_device():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run_seed()
    assert out.getvalue() == EXPECTED


def test_seed_values_and_types(device):
    with contextlib.redirect_stdout(io.StringIO()):
        a, b, c, d, e, f = run_seed(device)
    assert f.data == [2794.0]
    assert f.size == [1]
    assert f.shape == (1,)
    assert isinstance(f.data, list) and all(isinstance(v, float) for v in f.data)
    assert isinstance(f.size, list) and all(isinstance(v, int) for v in f.size)
    assert a.grad == [143.0, 187.0, 143.0, 187.0]
    assert b.grad == [66.0, 66.0, 88.0, 88.0]
    assert isinstance(a.grad, list) and all(isinstance(v, float) for v in a.grad)
    # dc = d, dd = a @ b + c
    assert c.grad == [11.0] * 4
    assert d.grad == [46.0, 51.0, 74.0, 83.0]
    assert e.data == [506.0, 561.0, 814.0, 913.0]
    assert a.is_leaf and not e.is_leaf
    assert a.requires_grad and e.requires_grad
