"""python -m cudagrad info: a full report everywhere, plain about what is missing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cudagrad as cg

REPO = Path(__file__).resolve().parents[1]


def run_cudagrad(*args, env_extra=None, code=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                                    os.environ.get("PYTHONPATH")])))
    env.pop("CUDAGRAD_DEVICE", None)
    env.update(env_extra or {})
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "cudagrad", *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_info_text(tmp_path):
    out = run_cudagrad("info", env_extra={"CUDAGRAD_CACHE_DIR": str(tmp_path)})
    for label in ("cudagrad:", "python:", "numpy:", "jinja2:", "cuda-python:", "GPU:", "NVRTC:",
                  "C compiler:", "cache:", "default device:"):
        assert label in out, out
    assert cg.__version__ in out
    assert f"{tmp_path} (0 entries" in out
    usable, reason = cg.cuda_available()
    if not usable:
        assert f"GPU:            none: {reason}" in out
        assert "default device: cpu (no usable GPU" in out
    else:
        assert "default device: cuda" in out


def test_info_json(tmp_path):
    (tmp_path / "abc.so").write_bytes(b"x" * 100)
    (tmp_path / "abc.so.sha256").write_bytes(b"y" * 64)
    report = json.loads(run_cudagrad("info", "--json", env_extra={"CUDAGRAD_CACHE_DIR": str(tmp_path)}))
    assert report["versions"]["cudagrad"] == cg.__version__
    assert report["cache"] == {"path": str(tmp_path), "usable": True, "entries": 1, "bytes": 164}
    assert report["cuda"]["usable"] == cg.cuda_available()[0]
    assert report["default_device"]["device"] == ("cuda" if report["cuda"]["usable"] else "cpu")
    if report["cuda"]["usable"]:
        device = report["cuda"]["devices"][0]
        assert device["arch"].startswith("sm_") and device["total_memory"] > 0


def test_info_device_override(tmp_path):
    report = json.loads(run_cudagrad("info", "--json", env_extra={"CUDAGRAD_DEVICE": "cpu",
                                                                   "CUDAGRAD_CACHE_DIR": str(tmp_path)}))
    assert report["default_device"] == {"device": "cpu", "why": "CUDAGRAD_DEVICE=cpu is set"}
    assert report["environment"]["CUDAGRAD_DEVICE"] == "cpu"


def test_info_without_cuda_python(tmp_path):
    """cuda-python missing: still a report, which says so plainly."""
    code = ("import sys; sys.modules['cuda'] = None\n"
            "from cudagrad.__main__ import main; sys.exit(main(['info']))")
    out = run_cudagrad(code=code, env_extra={"CUDAGRAD_CACHE_DIR": str(tmp_path)})
    assert "GPU:            none: cuda-python is not installed" in out
    assert "NVRTC:          not found: nvrtc: cuda-python is not installed" in out
    assert "default device: cpu" in out


def test_info_without_c_compiler(tmp_path):
    out = run_cudagrad("info", env_extra={"CC": "no-such-compiler-cudagrad",
                                          "CUDAGRAD_CACHE_DIR": str(tmp_path)})
    assert "C compiler:     not found: cpu: no C compiler found" in out


def test_usage_and_unknown_command():
    assert "info" in run_cudagrad("--help")
    from cudagrad.__main__ import main
    assert main(["no-such-command"]) == 2


def test_import_stays_light():
    """info and draw pull in nothing heavy at `import cudagrad`."""
    code = ("import sys, cudagrad\n"
            "heavy = [m for m in ('cuda.bindings', 'cudagrad.info')"
            " if m in sys.modules]\n"
            "print(heavy)")
    assert run_cudagrad(code=code).strip() == "[]"


@pytest.mark.parametrize("nbytes,text", [(10, "10 bytes"), (2048, "2.0 KiB"), (3 * 2**30, "3.0 GiB")])
def test_size_text(nbytes, text):
    from cudagrad.info import _size
    assert _size(nbytes) == text
