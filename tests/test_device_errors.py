"""Clear failures: asking for cuda without a GPU, and running out of device memory."""
from __future__ import annotations

import numpy as np
import pytest

import cudagrad as cg


def test_cuda_without_a_gpu_says_so():
    usable, reason = cg.cuda_available()
    if usable:
        pytest.skip("this machine has a usable GPU")
    assert reason                                   # a plain-words reason, never empty
    with pytest.raises(cg.DeviceError, match="cuda"):
        cg.tensor([1.0, 2.0], device="cuda")


def test_unknown_device_is_a_value_error():
    with pytest.raises(ValueError, match="device"):
        cg.tensor([1.0], device="tpu")


def test_out_of_device_memory_is_clear_and_the_process_stays_usable():
    usable, reason = cg.cuda_available()
    if not usable:
        pytest.skip(f"cuda: {reason}")
    from cudagrad.device import get_device
    device = get_device("cuda")
    with pytest.raises(cg.DeviceError, match="out of memory"):
        device.allocate(1 << 50)                    # a petabyte
    x = np.random.default_rng().standard_normal(1000).astype(np.float32)
    np.testing.assert_allclose((cg.tensor(x, device="cuda") * 2).numpy(), x * 2, rtol=1e-6)
