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
