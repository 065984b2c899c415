"""Tensors print like PyTorch's; shape queries and debugger hovers never realize."""
from __future__ import annotations

import sys

import numpy as np
import pytest

import cudagrad as cg


@pytest.fixture(autouse=True)
def eager_repr(monkeypatch):
    # a coverage tool's tracer would look like a debugger: ask for values explicitly
    monkeypatch.setenv("CUDAGRAD_LAZY_REPR", "0")
    monkeypatch.setenv("CUDAGRAD_DEVICE", "cpu")      # the expected texts leave out device='cpu'


def launches():
    return cg.stats()["kernels_launched"]


def test_pytorch_like_values():
    assert repr(cg.tensor([[1.0, 2.0], [3.0, 4.0]])) == (
        "tensor([[1., 2.],\n        [3., 4.]], requires_grad=True)")
    assert repr(cg.tensor([1.0, 2.5], requires_grad=False)) == "tensor([1.0000, 2.5000])"
    assert repr(cg.tensor([1e-5, 1e5], requires_grad=False)) == "tensor([1.0000e-05, 1.0000e+05])"
    assert repr(cg.tensor(3.0)) == "tensor(3., requires_grad=True)"
    assert repr(cg.tensor([-1.5, 0.25], requires_grad=False)) == "tensor([-1.5000,  0.2500])"
    assert repr(cg.tensor([float("nan"), 1.0, float("inf")], requires_grad=False)) == (
        "tensor([nan, 1., inf])")
    assert str(cg.tensor([1.0, 2.0])) == repr(cg.tensor([1.0, 2.0]))


def test_dtype_and_device_shown_when_not_default():
    assert repr(cg.tensor([1.0, 2.0], dtype=cg.float64, requires_grad=False)) == (
        "tensor([1., 2.], dtype=cudagrad.float64)")
    assert repr(cg.tensor([1, 2], dtype=cg.int32, requires_grad=False)) == (
        "tensor([1, 2], dtype=cudagrad.int32)")
    assert repr(cg.tensor([1.0, 0.0], requires_grad=False) > 0.5) == "tensor([1., 0.])"
    assert repr(cg.tensor([1.0, 2.0], dtype=cg.bfloat16, requires_grad=False)) == (
        "tensor([1., 2.], dtype=cudagrad.bfloat16)")


def test_cuda_device_shown(device):
    t = cg.tensor([1.0, 2.0], device=device, requires_grad=False)
    assert ("device='cuda'" in repr(t)) == (device == "cuda")


def test_empty():
    assert repr(cg.zeros([0], requires_grad=False)) == "tensor([])"
    assert repr(cg.zeros([0, 3], requires_grad=False)) == "tensor([], shape=[0, 3])"


def test_summarised_large_tensor():
    t = cg.from_numpy(np.arange(2000, dtype=np.float32).reshape(40, 50) / 7)
    text = repr(t)
    assert "..." in text and text.count("\n        [") == 5      # 3 first rows, ..., 3 last rows
    assert text.startswith("tensor([[0.0000e+00, 1.4286e-01,")   # 0 and 285 span more than 1000x
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines)
    long_row = repr(cg.tensor(list(range(7)), dtype=cg.float32, requires_grad=True))
    assert long_row == "tensor([0., 1., 2., 3., 4., 5., 6.], requires_grad=True)"


def test_repr_realizes():
    x = cg.randn([3, 3])
    y = (x * 2).exp()
    before = launches()
    text = repr(y)
    assert launches() > before and "unrealized" not in text
    np.testing.assert_allclose(y.numpy(), np.exp(x.numpy() * 2), rtol=1e-6)


def test_shape_queries_never_realize():
    x = cg.randn([4, 5])
    y = (x @ x.T).relu() + 1
    before = launches()
    assert y.shape == (4, 4) and y.size == [4, 4] and len(y) == 4
    assert y.dtype == cg.float32 and y.device == x.device and y.ndim == 2 and y.numel() == 16
    assert y.requires_grad and not y.is_leaf
    f"{y.shape} {y.size} {y.dtype} {y.device}"      # logging the shape
    assert launches() == before


def test_lazy_repr_environment_variable(monkeypatch):
    monkeypatch.setenv("CUDAGRAD_LAZY_REPR", "1")
    x = cg.randn([2, 3])
    y = x * 2
    before = launches()
    assert repr(y) == "tensor(<unrealized>, shape=[2, 3], requires_grad=True)"
    assert str(y.cast(cg.float64)) == (
        "tensor(<unrealized>, shape=[2, 3], dtype=cudagrad.float64, requires_grad=True)")
    assert launches() == before
    assert repr(x).startswith("tensor([[")          # a leaf's values are there to read
    y.realize()
    assert "unrealized" not in repr(y)
    monkeypatch.setenv("CUDAGRAD_LAZY_REPR", "0")
    assert "unrealized" not in repr(x * 3)


def test_debugger_hover_does_not_realize(monkeypatch):
    """A tracer set (as pdb and most debuggers do) makes repr lazy."""
    monkeypatch.delenv("CUDAGRAD_LAZY_REPR")
    x = cg.randn([2, 2])
    y = x.exp() + 1
    before = launches()

    def tracer(frame, event, arg):
        return None
    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        text = repr(y)
    finally:
        sys.settrace(previous)
    assert "<unrealized>" in text and launches() == before


def test_pending_assignment_not_realized_by_lazy_repr(monkeypatch):
    monkeypatch.setenv("CUDAGRAD_LAZY_REPR", "1")
    w = cg.randn([3])
    w.assign(w * 0.5)
    before = launches()
    assert "<unrealized>" in repr(w)
    assert launches() == before
