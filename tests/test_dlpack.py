"""DLPack interchange shares memory, without copies: numpy on the CPU, PyTorch and
CuPy on the GPU (those cases skip where the library or a GPU is missing)."""
from __future__ import annotations

import numpy as np
import pytest

import cudagrad as cg
from cudagrad.realization import input_buffer


def _ptr(tensor) -> int:
    tensor.realize()
    return input_buffer(tensor.node).ptr


def test_numpy_to_cudagrad_shares_memory(rng):
    array = rng.standard_normal((3, 4)).astype(np.float32)
    tensor = cg.from_dlpack(array)
    assert tensor.shape == (3, 4) and tensor.dtype == cg.float32 and tensor.device == "cpu"
    assert _ptr(tensor) == array.ctypes.data
    array[1, 2] = 123.0                       # the tensor sees writes to the shared memory
    assert tensor.numpy()[1, 2] == 123.0
    np.testing.assert_allclose((tensor * 2).numpy(), array * 2)


def test_cudagrad_to_numpy_shares_memory(rng):
    x = rng.standard_normal((5, 2))
    tensor = cg.tensor(x, dtype=cg.float64, device="cpu")   # numpy reads host memory only
    result = (tensor + 1).realize()
    view = np.from_dlpack(result)
    assert view.ctypes.data == _ptr(result)
    np.testing.assert_allclose(view, x + 1)


def test_from_dlpack_rejects_non_contiguous(rng):
    array = rng.standard_normal((4, 4)).astype(np.float32).T
    with pytest.raises((ValueError, BufferError, RuntimeError)):
        cg.from_dlpack(array)


def _cuda_or_skip():
    ok, reason = cg.cuda_available()
    if not ok:
        pytest.skip(f"cuda: {reason}")


def test_torch_round_trip_shares_device_memory(rng):
    _cuda_or_skip()
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(rng.standard_normal((64, 33)).astype(np.float32)).cuda()
    tensor = cg.from_dlpack(x)
    assert tensor.device == "cuda" and tensor.shape == (64, 33)
    assert _ptr(tensor) == x.data_ptr()
    y = (tensor * 3 + 1).realize()
    back = torch.from_dlpack(y)
    assert back.data_ptr() == _ptr(y)
    np.testing.assert_allclose(back.cpu().numpy(), x.cpu().numpy() * 3 + 1, rtol=1e-5, atol=1e-6)
    x.mul_(2)                                   # torch writes; cudagrad reads the same memory
    torch.cuda.synchronize()
    np.testing.assert_allclose(tensor.numpy(), x.cpu().numpy())


@pytest.mark.parametrize("name", ["float16", "bfloat16", "int32", "float64"])
def test_torch_dtypes(name, rng):
    _cuda_or_skip()
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(rng.standard_normal(100)).to(getattr(torch, name)).cuda()
    tensor = cg.from_dlpack(x)
    assert tensor.dtype.name == name
    back = torch.from_dlpack((tensor * 2).realize())
    assert back.dtype == x.dtype
    np.testing.assert_allclose(back.float().cpu().numpy(), (x * 2).float().cpu().numpy(), rtol=1e-2)


def test_cupy_round_trip(rng):
    _cuda_or_skip()
    cupy = pytest.importorskip("cupy")
    x = cupy.asarray(rng.standard_normal((10, 10)).astype(np.float32))
    tensor = cg.from_dlpack(x)
    assert _ptr(tensor) == x.data.ptr
    y = cupy.from_dlpack((tensor.exp()).realize())
    np.testing.assert_allclose(cupy.asnumpy(y), np.exp(cupy.asnumpy(x)), rtol=1e-5)
