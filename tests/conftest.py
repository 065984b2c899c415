"""Fixtures shared by the whole suite: `device`, `rng`, `seed`, and helpers (see helpers.py)."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest

import cudagrad as cg


def _cuda_status():
    check = getattr(cg, "cuda_available", None)
    if check is None:
        return False, "cudagrad has no cuda_available() yet"
    try:
        result = check()
    except Exception as error:  # a broken probe must not take the CPU tests down with it
        return False, f"cg.cuda_available() raised {error!r}"
    if isinstance(result, tuple):
        ok = bool(result[0])
        reason = result[1] if len(result) > 1 else ""
    else:
        ok, reason = bool(result), ""
    return ok, reason or "no usable CUDA device"


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    """Every device test runs on the CPU and, where a usable GPU exists, on CUDA."""
    if request.param == "cuda":
        ok, reason = _cuda_status()
        if not ok:
            pytest.skip(f"cuda: {reason}")
    return request.param


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture
def seed():
    """A fresh seed every run (set CUDAGRAD_TEST_SEED to replay one); printed so failures show it."""
    value = os.environ.get("CUDAGRAD_TEST_SEED")
    value = int(value) if value else random.SystemRandom().randrange(2**32)
    print(f"random seed: {value} (replay with CUDAGRAD_TEST_SEED={value})")
    return value


@pytest.fixture
def rng(seed):
    """A fresh numpy Generator; its seed is in the captured output of any failure."""
    return np.random.default_rng(seed)


# ---- every graph the suite realizes on the CPU is also rendered for CUDA ----------
# tests/test_zz_cuda_compile.py compiles each of those CUDA kernels with NVRTC for
# sm_80 and sm_90, so CI (no GPU) still proves that all generated CUDA C compiles.
RECORDED_CUDA_KERNELS: dict[str, object] = {}


@pytest.fixture(autouse=True, scope="session")
def record_cuda_kernels():
    import cudagrad.realization as realize

    original = realize.plan_kernels

    def plan_and_record(targets, device_name):
        planned = original(targets, device_name)
        if device_name == "cpu":
            try:
                for _, kernel, _ in original(targets, "cuda"):
                    RECORDED_CUDA_KERNELS.setdefault(kernel.source, kernel)
            except Exception as error:  # rendering for CUDA must never fail where CPU works
                RECORDED_CUDA_KERNELS.setdefault(f"render failure {error!r}", error)
        return planned

    realize.plan_kernels = plan_and_record
    yield RECORDED_CUDA_KERNELS
    realize.plan_kernels = original
