"""The C accelerator of the hot path (cudagrad/native): the same results as the Python
paths it replaces, and those paths whenever it is off or cannot be built.

In this process the accelerator is in use where it builds (the suite also runs whole
with CUDAGRAD_NATIVE=0); the other cases run in subprocesses.
"""
from __future__ import annotations

import gc
import importlib
import json
import math
import os
import shutil
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest

import cudagrad as cg
from cudagrad import creation, native, realization
from cudagrad.ir import ops as ir
from cudagrad.ir.node import Op, make_node

ROOT = Path(__file__).resolve().parents[1]
tensor_module = importlib.import_module("cudagrad.tensor")   # cg.tensor is the constructor

needs_native = pytest.mark.skipif(native.accel() is None,
                                  reason=f"the accelerator is not in use: {native.reason()}")

# Small workloads, each printing flat lists: run in both modes and compared exactly.
WORKLOADS = r"""
import json, math
import numpy as np
import cudagrad as cg
from cudagrad import native
out = {"native": native.accel() is not None, "reason": native.reason()}
A, B = [2.0, 3.0, 4.0, 5.0], [6.0, 7.0, 8.0, 9.0]
a = cg.tensor([2, 2], A, device="cpu"); b = cg.tensor([2, 2], B, device="cpu")
out["matmul"] = (a @ b).data
d = (a @ b).sum(); d.backward()
out["grads"] = [a.grad, b.grad, d.data]
rng = np.random.default_rng(5)
x = cg.tensor([3, 4], rng.standard_normal(12).tolist(), device="cpu")
w = cg.tensor((4, 2), rng.standard_normal(8).tolist(), device="cpu")
y = ((x @ w).relu() * 0.5 + 1).exp().sum()
y.backward()
out["chain"] = [y.data, x.grad, w.grad]
c = cg.tensor([3], [1, -2, 2**53], device="cpu")
out["ints"] = (c * -0.0).data + (c + float("nan")).data[:1]
out["repeat"] = [(cg.tensor([2], [i, 1.5], device="cpu") * i).sum().data for i in range(5)]
deep = cg.tensor([2], [1.0, 2.0], device="cpu")
for _ in range(400):
    deep = deep * 1.001
out["deep"] = deep.data
seed = cg.tensor([2, 2], A, device="cpu"); e = ((seed @ b) + 1) * 2; f = e.sum(); f.backward()
out["seed"] = [f.data, seed.grad, b.grad]
out["big"] = (cg.tensor([40, 40], [0.5] * 1600, device="cpu") @ cg.tensor([40, 40], [0.25] * 1600, device="cpu")).sum().data
print(json.dumps(out, default=str))
"""


def run_workloads(tmp_path, prelude: str = "", **env_changes) -> dict:
    env = dict(os.environ)
    env.pop("CUDAGRAD_NATIVE", None)        # the suite may run with it off: each test says
    env.update(env_changes)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("CUDAGRAD_CACHE_DIR", str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, "-c", prelude + WORKLOADS], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def expected_values() -> dict:
    """float64 references (numpy) of WORKLOADS' figures."""
    a, b = np.array([[2.0, 3.0], [4.0, 5.0]]), np.array([[6.0, 7.0], [8.0, 9.0]])
    ones = np.ones((2, 2))
    return {"matmul": (a @ b).ravel(), "grad_a": (ones @ b.T).ravel(), "grad_b": (a.T @ ones).ravel(),
            "seed": ((a @ b + 1) * 2).sum(), "deep": np.array([1.0, 2.0]) * 1.001 ** 400}


def test_both_paths_give_the_same_values(tmp_path):
    fast = run_workloads(tmp_path)
    slow = run_workloads(tmp_path, CUDAGRAD_NATIVE="0")
    assert slow["native"] is False and slow["reason"] == "CUDAGRAD_NATIVE=0"
    if not fast["native"]:
        pytest.skip(f"the accelerator does not build here: {fast['reason']}")
    for name in fast:
        if name not in ("native", "reason"):
            assert json.dumps(fast[name]) == json.dumps(slow[name]), name      # nan-safe, exact
    reference = expected_values()
    np.testing.assert_allclose(fast["matmul"], reference["matmul"], rtol=1e-6)
    np.testing.assert_allclose(fast["grads"][0], reference["grad_a"], rtol=1e-6)
    np.testing.assert_allclose(fast["grads"][1], reference["grad_b"], rtol=1e-6)
    np.testing.assert_allclose(fast["seed"][0], [reference["seed"]], rtol=1e-6)
    np.testing.assert_allclose(fast["deep"], reference["deep"], rtol=1e-4)
    assert fast["big"] == [40 * 40 * 40 * 0.125]


NO_HEADERS = """
import sysconfig
_paths = sysconfig.get_paths
sysconfig.get_paths = lambda *args, **kwargs: dict(_paths(*args, **kwargs), include="/nonexistent",
                                                   platinclude="/nonexistent")
"""


def test_without_python_headers_the_python_paths_run(tmp_path):
    out = run_workloads(tmp_path, prelude=NO_HEADERS, CUDAGRAD_CACHE_DIR=str(tmp_path / "fresh"))
    assert out["native"] is False and "headers" in out["reason"], out["reason"]
    assert out["matmul"] == [36.0, 41.0, 64.0, 73.0]
    assert out["grads"][0] == [13.0, 17.0, 13.0, 17.0]


def test_with_a_compiler_that_fails_on_it_the_python_paths_run(tmp_path):
    """CC compiles the kernels but fails on the accelerator's source."""
    real = shutil.which(os.environ.get("CC", "cc"))
    if real is None:
        pytest.skip("no C compiler")
    wrapper = tmp_path / "cc"
    wrapper.write_text(f'#!/bin/sh\ncase "$*" in *_accel.c*) echo broken >&2; exit 1;; esac\n'
                       f'exec {real} "$@"\n')
    wrapper.chmod(0o755)
    out = run_workloads(tmp_path, CC=str(wrapper), CUDAGRAD_CACHE_DIR=str(tmp_path / "fresh"))
    assert out["native"] is False and "build failed" in out["reason"], out["reason"]
    assert out["matmul"] == [36.0, 41.0, 64.0, 73.0]
    assert out["grads"][0] == [13.0, 17.0, 13.0, 17.0]


def test_a_corrupt_cached_module_is_rebuilt(tmp_path):
    cache = tmp_path / "cache"
    first = run_workloads(tmp_path, CUDAGRAD_CACHE_DIR=str(cache))
    if not first["native"]:
        pytest.skip(f"the accelerator does not build here: {first['reason']}")
    entries = [p for p in (cache / "native").iterdir() if p.suffix == ".so"]
    assert len(entries) == 1
    entries[0].write_bytes(entries[0].read_bytes()[:100])         # truncated
    second = run_workloads(tmp_path, CUDAGRAD_CACHE_DIR=str(cache))
    assert second["native"] is True and second["matmul"] == first["matmul"]


# ---- each C function against the Python one it replaces ------------------------------

def graphs():
    x = cg.tensor([2, 3], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], device="cpu")._node
    y = cg.tensor([3, 2], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], device="cpu")._node
    product = ir.matmul(x, y)
    shared = ir.add(ir.unary(Op.EXP, x), ir.unary(Op.EXP, x))
    constants = [ir.add(x, ir.const_like(x, value)) for value in (1, 1.0, -0.0, 0.0, float("nan"))]
    return [[product], [shared], [product, shared, product], constants, [x], [ir.reshape(product, (4,))]]


@needs_native
def test_canonicalize_gives_the_python_key():
    python = native.python_function("canonicalize")
    for targets in graphs():
        fast, slow = realization.canonicalize(targets), python(targets)
        assert repr(fast[0]) == repr(slow[0]) and fast[1] == slow[1]
        assert hash(fast[0]) == hash(slow[0])
    targets = graphs()[3]
    assert realization.canonicalize(targets, 3) is None and python(targets, 3) is None
    deep = cg.tensor([2], [1.0, 2.0], device="cpu")._node
    for _ in range(500):                  # past the recursive walk's depth: the stack walk
        deep = ir.neg(deep)
    assert realization.canonicalize([deep]) == python([deep])


@needs_native
def test_make_node_shares_nodes_with_the_python_one():
    python = native.python_function("make_node")
    x = cg.tensor([2], [1.0, 2.0], device="cpu")._node
    built = python(Op.NEG, (x,), None, (2,), x.dtype, "cpu")
    assert make_node(Op.NEG, (x,), None, (2,), x.dtype, "cpu") is built
    fresh = make_node(Op.EXP, (x,), None, (2,), x.dtype, "cpu")
    assert python(Op.EXP, (x,), None, (2,), x.dtype, "cpu") is fresh
    assert fresh.realized is None and fresh.srcs == (x,) and fresh.shape == (2,)
    leaf = make_node(Op.BUFFER, (), x.arg, (2,), x.dtype, "cpu")
    assert leaf is not x and leaf.arg is x.arg          # every leaf is distinct


@needs_native
def test_the_leaf_is_the_python_leaf():
    fast = creation._native_leaf([2, 2], [1, 2.5, -3, 1e39], False)
    slow = creation._float32_leaf_from_list([1, 2.5, -3, 1e39], 4, (2, 2), "cpu", False)
    for tensor in (fast, slow):
        assert tensor.shape == (2, 2) and tensor.dtype == cg.float32 and tensor.device == "cpu"
        assert tensor._is_leaf and tensor.requires_grad is False and tensor._grad is None
        assert tensor._node.arg.owner() is tensor and tensor._node.op is Op.BUFFER
    assert fast.data == slow.data == [1.0, 2.5, -3.0, math.inf]
    assert fast._node.arg.buffer.nbytes == 16
    for shape, data in (([2], [True, 1.0]), ([1], [2**53 + 2]), ([2], [1.0]), ([2.0], [1.0, 2.0]),
                        ([-1], [1.0]), ([1], ["x"]), ([1], [None]), ([0], []), (3, [1.0])):
        assert creation._native_leaf(shape, data, True) is None, (shape, data)


@needs_native
def test_data_falls_back_where_the_c_side_does_not_apply():
    values = [1.0, 2.0, 3.0]
    for dtype in (cg.float64, cg.int32, cg.float16, cg.bfloat16, cg.bool):
        t = cg.tensor([3], values, dtype=dtype, device="cpu")
        assert (t * 2).data == native.python_function("data")(t * 2)
    big = cg.tensor([2000], [0.5] * 2000, device="cpu")      # a numpy buffer: Python reads it
    assert (big + 1).data == [1.5] * 2000


@needs_native
def test_nothing_leaks_or_cycles_through_the_c_paths():
    a = cg.tensor([2, 2], [1.0, 2.0, 3.0, 4.0], device="cpu")
    b = cg.tensor([2, 2], [5.0, 6.0, 7.0, 8.0], device="cpu")
    c = a @ b
    c.data
    refs = [weakref.ref(obj) for obj in (a, a._node, a._node.arg, a._node.arg.buffer, c, c._node,
                                         c._node.realized)]
    counts = [sys.getrefcount(obj) for obj in (a._node.arg.buffer.raw, c._node.realized.raw)]
    for _ in range(1000):
        (a @ b).data
    assert [sys.getrefcount(obj) for obj in (a._node.arg.buffer.raw, c._node.realized.raw)] == counts
    gc.disable()
    try:
        del a, b, c
        assert all(ref() is None for ref in refs), "freed by reference counting alone"
    finally:
        gc.enable()


@needs_native
def test_backward_recorded_in_c_as_in_python():
    """The C defer_backward records what the Python one records; gradients read through
    the C GradientPlan replay equal the ones read through Python's."""
    from cudagrad import backward_cache

    def step():
        a = cg.tensor([2, 3], [1.0, -2.0, 3.0, 0.5, 5.0, 6.0], device="cpu")
        b = cg.tensor([3, 2], [0.25, 2.0, 3.0, 4.0, -5.0, 6.0], device="cpu")
        frozen = cg.tensor([2, 2], [1.0, 1.0, 1.0, 1.0], device="cpu", requires_grad=False)
        return a, b, ((a @ b) * frozen).sum()

    a, b, loss = step()
    assert backward_cache._native_defer(loss._node, tensor_module._LEAF_OWNERS, 48) is True
    fast = a._pending_backward
    a2, b2, loss2 = step()
    saved = backward_cache._native_defer
    backward_cache._native_defer = None
    try:
        assert backward_cache.defer_backward(loss2._node, tensor_module._LEAF_OWNERS) is True
    finally:
        backward_cache._native_defer = saved
    slow = a2._pending_backward
    assert fast is b._pending_backward and slow is b2._pending_backward
    assert fast.key == slow.key and fast.leaf_numbers == slow.leaf_numbers
    assert [ref() for ref in fast.leaves] == [a, b] and fast.output is loss._node
    assert tensor_module._LEAF_OWNERS[id(a)]() is a
    grads = [a.grad, b.grad]          # the C replay (the plan is known after the first step)
    saved = backward_cache._native_gradients
    backward_cache._native_gradients = None
    try:
        assert [a2.grad, b2.grad] == grads
    finally:
        backward_cache._native_gradients = saved
    assert a.grad_tensor is not None and not a.grad_tensor.requires_grad and a.grad_tensor.is_leaf


@needs_native
def test_backward_edge_cases_agree():
    """A leaf freed before its gradient is read, one whose gradient is dropped, and a
    second backward() accumulating: as in Python."""
    for _ in range(3):        # the first learns the GradientPlan, the next ones replay it
        a = cg.tensor([2], [1.0, 2.0], device="cpu")
        b = cg.tensor([2], [3.0, 4.0], device="cpu")
        loss = (a * b).sum()
        loss.backward()
        del b
        assert a.grad == [3.0, 4.0]
        c = cg.tensor([2], [1.0, 2.0], device="cpu")
        (c * c).sum().backward()
        (c * 3).sum().backward()          # accumulates: the gradient graph path
        assert c.grad == [5.0, 7.0]
        d = cg.tensor([2], [1.0, 2.0], device="cpu")
        (d * 2).sum().backward()
        d.zero_grad()
        assert d.grad is None
