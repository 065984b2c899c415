"""The tiny-op hot path (issue 5): each shortcut gives exactly what the general path gives.

Shortcuts under test: `tensor(shape, list)` filling a small cpu buffer straight from the
list, small cpu buffers as array.array, the generated replay of a plan, the short forms
of matmul and sum, and backward() of a small graph recorded until a gradient is read
(cudagrad/backward_cache.py).
"""
from __future__ import annotations

import importlib

import numpy as np
import pytest

import cudagrad as cg
from cudagrad import backward_cache, realization
from cudagrad.runtime.cpu import SMALL_BUFFER_BYTES, CpuDevice

tensor_module = importlib.import_module("cudagrad.tensor")   # cg.tensor is the constructor


# ---- tensor(shape, list) ------------------------------------------------------------

def test_list_data_converts_as_numpy_does(rng):
    values = (rng.standard_normal(12) * 1e3).tolist() + [2**53, -(2**53), 7, 1e39, -1e39, 1e-46, 0.1]
    t = cg.tensor([len(values)], values, device="cpu")
    with np.errstate(over="ignore"):
        expected = np.array(values, dtype=np.float64).astype(np.float32)
    assert t.dtype == cg.float32
    np.testing.assert_array_equal(t.numpy(), expected)
    assert t.data == expected.tolist()


@pytest.mark.parametrize("shape", [[2, 3], (2, 3), [6], [1, 6, 1]])
def test_list_data_takes_list_or_tuple_shapes(shape, rng):
    values = rng.standard_normal(6).tolist()
    t = cg.tensor(shape, values, device="cpu")
    assert t.shape == tuple(shape)
    np.testing.assert_array_equal(t.numpy(), np.array(values, np.float32).reshape(shape))


def test_list_data_outside_the_short_form_still_checked():
    with pytest.raises(ValueError, match=r"tensor: data has 3 elements but shape \[2, 2\]"):
        cg.tensor([2, 2], [1.0, 2.0, 3.0], device="cpu")
    with pytest.raises(TypeError, match="tensor: data must hold numbers"):
        cg.tensor([2], [1.0, "x"], device="cpu")
    with pytest.raises(TypeError, match="tensor: data must hold numbers"):
        cg.tensor([2], [1.0, None], device="cpu")
    with pytest.raises(TypeError, match="shape"):
        cg.tensor([2.0, 2], [1.0, 2.0, 3.0, 4.0], device="cpu")
    with pytest.raises(ValueError):
        cg.tensor([-1, 2], [1.0, 2.0], device="cpu")
    flags = cg.tensor([3], [True, False, True], device="cpu")       # bools: the general path
    assert flags.data == [1.0, 0.0, 1.0]
    huge = cg.tensor([1], [2**60 + 1], device="cpu")                 # beyond 2^53: numpy's rounding
    assert huge.data == [float(np.float32(2**60 + 1))]


def test_list_data_keeps_options():
    t = cg.tensor([2], [1.5, 2.5], device="cpu", requires_grad=False)
    assert not t.requires_grad and t.is_leaf
    d = cg.tensor([2], [1.5, 2.5], dtype=cg.float64, device="cpu")
    assert d.dtype == cg.float64 and d.data == [1.5, 2.5]
    for data, dtype in (((0.1, 2), None), ([0.1, 2], cg.float32), ([0.1, 2], "float32")):
        f = cg.tensor([2], data, dtype=dtype, device="cpu")
        assert f.dtype == cg.float32 and f.data == [float(np.float32(0.1)), 2.0]


# ---- small cpu buffers --------------------------------------------------------------

@pytest.mark.parametrize("nbytes", [1, 4, 64, SMALL_BUFFER_BYTES, SMALL_BUFFER_BYTES + 4, 1 << 20])
def test_cpu_buffers_of_any_size_are_writable_host_memory(nbytes):
    buffer = CpuDevice().allocate(nbytes)
    assert buffer.nbytes == nbytes
    view = buffer.array
    assert view.nbytes == nbytes and view.flags.writeable
    view[:] = 7
    assert buffer.tolist("uint8", np.dtype(np.uint8), nbytes)[-1] == 7   # same memory


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "bool", "float16"])
def test_small_results_read_back_in_every_dtype(dtype, rng):
    values = rng.standard_normal(5) * 10
    x = cg.from_numpy(values.astype(np.float32), device="cpu").to(dtype)
    y = (x + x).to(dtype)                   # a computed result: a small allocated buffer
    with np.errstate(invalid="ignore"):
        as_numpy = np.asarray(values).astype(np.float32).astype(cg.dtypes.to_dtype(dtype).numpy)
    expected = (as_numpy + as_numpy).astype(as_numpy.dtype)
    np.testing.assert_array_equal(y.numpy(), expected)
    assert y.data == expected.tolist()


def test_small_buffer_shares_memory_through_dlpack(rng):
    values = rng.standard_normal(4).tolist()
    t = cg.tensor([2, 2], values, device="cpu")
    shared = np.from_dlpack(t)
    np.testing.assert_array_equal(shared, np.array(values, np.float32).reshape(2, 2))
    doubled = (t * 2).realize()
    np.testing.assert_array_equal(np.from_dlpack(doubled), 2 * shared)


# ---- replay --------------------------------------------------------------------------

def test_replay_runs_multi_kernel_plans(rng):
    a_np, b_np = rng.standard_normal((3, 4)), rng.standard_normal((4, 5))
    a = cg.from_numpy(a_np, dtype=cg.float32, device="cpu")
    b = cg.from_numpy(b_np, dtype=cg.float32, device="cpu")
    out = ((a @ b).relu() @ b.T).sum(axis=1)         # two matmuls, two kernels at least
    key, nodes = realization.canonicalize([out.node])
    expected = (np.maximum(a_np @ b_np, 0) @ b_np.T).sum(axis=1)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)
    plan = realization._PLANS[("cpu", key)]
    assert len(plan.steps) >= 2
    for step in plan.steps:
        assert step.kernel.name in plan.replay.source
    assert plan.replay.source.count("allocate(") == sum(len(s.outputs) for s in plan.steps)


def test_debug_runs_log_each_launch(monkeypatch, capsys, rng):
    monkeypatch.setenv("CUDAGRAD_DEBUG", "1")
    values = rng.standard_normal(4).tolist()
    x = cg.tensor([4], values, device="cpu")
    assert (x * 3).data == pytest.approx([3 * np.float32(v) for v in values], rel=1e-6)
    assert "[cudagrad] launch" in capsys.readouterr().err


# ---- short forms of matmul and sum ---------------------------------------------------

def test_short_matmul_and_sum_build_the_general_nodes(rng):
    a = cg.from_numpy(rng.standard_normal((3, 2)), dtype=cg.float32, device="cpu")
    b = cg.from_numpy(rng.standard_normal((2, 4)), dtype=cg.float32, device="cpu")
    product = a @ b
    assert product.node.op.name == "MATMUL" and product.shape == (3, 4)
    total = product.sum()
    assert total.shape == (1,)
    general = product.sum(axis=(0, 1))        # the general path: same reduction node under it
    assert total.node.srcs[0] is general.node.srcs[0] or total.node.srcs[0].srcs == general.node.srcs
    np.testing.assert_allclose(total.numpy(), [np.sum(a.numpy().astype(np.float64) @ b.numpy())],
                               rtol=1e-5)
    ones = cg.tensor([1, 1], [5.0], device="cpu")
    assert ones.sum().data == [5.0]              # nothing to reduce: only the reshape


# ---- backward() recorded until a gradient is read ------------------------------------

def _pair(rng, shape_a=(2, 3), shape_b=(3, 2)):
    a_np, b_np = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    a = cg.tensor(list(shape_a), a_np.reshape(-1).tolist(), device="cpu")
    b = cg.tensor(list(shape_b), b_np.reshape(-1).tolist(), device="cpu")
    return a, b, a.numpy().astype(np.float64), b.numpy().astype(np.float64)


def _expected_grads(a_np, b_np):
    """d sum(a @ b) / da = 1 @ b^T, / db = a^T @ 1, by hand."""
    ones = np.ones((a_np.shape[0], b_np.shape[1]))
    return ones @ b_np.T, a_np.T @ ones


def test_small_backward_is_recorded_then_replayed(rng):
    backward_cache._GRADIENT_PLANS.clear()
    for round_number in range(3):
        a, b, a_np, b_np = _pair(rng)
        (a @ b).sum().backward()
        assert a._pending_backward is not None and b._pending_backward is a._pending_backward
        compiled = cg.stats()["kernels_compiled"]
        grad_a, grad_b = _expected_grads(a_np, b_np)
        np.testing.assert_allclose(np.array(a.grad).reshape(2, 3), grad_a, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.array(b.grad).reshape(3, 2), grad_b, rtol=1e-5, atol=1e-6)
        assert a._pending_backward is None and b._pending_backward is None
        if round_number:        # learned the first time: no compile, the same one plan
            assert cg.stats()["kernels_compiled"] == compiled
        assert len(backward_cache._GRADIENT_PLANS) == 1


def test_recorded_backward_gives_lazy_gradients_to_graphs(rng):
    a, b, a_np, b_np = _pair(rng)
    (a @ b).sum().backward()
    lazy = a.grad_tensor                     # materialized: a lazy node, fusable
    assert lazy is not None and a._pending_backward is None and b._pending_backward is None
    grad_a, grad_b = _expected_grads(a_np, b_np)
    np.testing.assert_allclose((lazy * 2).numpy(), 2 * grad_a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(b.grad).reshape(3, 2), grad_b, rtol=1e-5, atol=1e-6)


def test_backward_twice_accumulates(rng):
    a, b, a_np, b_np = _pair(rng)
    (a @ b).sum().backward()
    ((a @ b) * 3).sum().backward()           # a is waiting: this one takes the usual path
    grad_a, grad_b = _expected_grads(a_np, b_np)
    np.testing.assert_allclose(np.array(a.grad).reshape(2, 3), 4 * grad_a, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.array(b.grad).reshape(3, 2), 4 * grad_b, rtol=1e-5, atol=1e-5)


def test_zero_grad_drops_a_recorded_backward(rng):
    a, b, _, b_np = _pair(rng)
    (a @ b).sum().backward()
    a.zero_grad()
    assert a.grad is None and a._pending_backward is None
    _, grad_b = _expected_grads(a.numpy(), b_np)
    np.testing.assert_allclose(np.array(b.grad).reshape(3, 2), grad_b, rtol=1e-5, atol=1e-5)


def test_recorded_backward_survives_changes_before_the_read(rng):
    backward_cache._GRADIENT_PLANS.clear()
    for _ in range(2):          # the first learns the plan, the second replays it
        a, b, a_np, b_np = _pair(rng)
        product = a @ b
        product.sum().backward()
        product.data                        # the forward value computed meanwhile
        a.assign(a * 0)                     # and a new value for a leaf: the gradient is of the old
        grad_a, grad_b = _expected_grads(a_np, b_np)
        np.testing.assert_allclose(np.array(a.grad).reshape(2, 3), grad_a, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.array(b.grad).reshape(3, 2), grad_b, rtol=1e-5, atol=1e-6)


def test_backward_with_leaves_not_requiring_grad_or_detached(rng):
    a, b, a_np, b_np = _pair(rng)
    frozen = cg.tensor([2, 3], rng.standard_normal(6).tolist(), device="cpu", requires_grad=False)
    ((a + frozen) @ b.detach()).sum().backward()
    grad_a, _ = _expected_grads(a_np, b_np)
    np.testing.assert_allclose(np.array(a.grad).reshape(2, 3), grad_a, rtol=1e-5, atol=1e-6)
    assert b.grad is None and frozen.grad is None


def test_large_graphs_build_their_gradient_graph_at_once(rng):
    x = cg.tensor([4], rng.standard_normal(4).tolist(), device="cpu")
    y = x
    for _ in range(backward_cache.SMALL_GRAPH_NODES):
        y = (y * 1.01).tanh()
    y.sum().backward()
    assert x._pending_backward is None and x.grad_tensor is not None
    value = x.numpy().astype(np.float64)
    derivative = np.ones(4)
    for _ in range(backward_cache.SMALL_GRAPH_NODES):
        value = np.tanh(value * 1.01)
        derivative *= 1.01 * (1 - value**2)
    np.testing.assert_allclose(x.grad, derivative, rtol=1e-4, atol=1e-6)


def test_optimizer_step_after_a_recorded_backward(rng):
    weights = rng.standard_normal((3, 2))
    inputs = rng.standard_normal((4, 3))

    def trained(read_gradient_first: bool) -> np.ndarray:
        w = cg.from_numpy(weights, dtype=cg.float32, device="cpu")
        x = cg.from_numpy(inputs, dtype=cg.float32, device="cpu", requires_grad=False)
        optimizer = cg.optim.SGD([w], lr=0.1)
        for _ in range(3):
            optimizer.zero_grad()
            ((x @ w).relu()).sum().backward()
            if read_gradient_first:
                w.grad
            optimizer.step()
        return w.numpy().astype(np.float64)

    expected = weights.astype(np.float32).astype(np.float64)
    x64 = inputs.astype(np.float32).astype(np.float64)
    for _ in range(3):
        mask = (x64 @ expected > 0).astype(np.float64)
        expected = expected - 0.1 * x64.T @ mask
    np.testing.assert_allclose(trained(False), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(trained(True), expected, rtol=1e-5, atol=1e-5)


def test_recorded_backward_keeps_leaves_listed_for_drawing(rng):
    a, b, _, _ = _pair(rng)
    (a @ b).sum().backward()
    listed = tensor_module.leaves_with_gradients()
    assert any(leaf is a for leaf in listed) and any(leaf is b for leaf in listed)


def test_recorded_backward_does_not_keep_leaves_alive(rng):
    import gc
    import weakref
    a, b, _, _ = _pair(rng)
    (a @ b).sum().backward()
    pending = a._pending_backward
    gone = weakref.ref(a)
    del a
    gc.collect()
    assert gone() is None
    pending.realize()                 # b still gets its gradient; the dead leaf is skipped
    assert b.grad is not None


# ---- the structural key's two walks ----------------------------------------------

def test_recursive_and_stack_walks_agree(rng):
    a = cg.tensor([2, 2], rng.standard_normal(4).tolist(), device="cpu")
    b = cg.tensor([2, 2], rng.standard_normal(4).tolist(), device="cpu")
    shared = a @ b + a
    deep = a
    for _ in range(realization._RECURSIVE_DEPTH + 50):     # past the recursive walk's depth
        deep = (deep * 1.001).tanh()
    graphs = [[shared * shared], [(a @ b).sum()], [a + a, shared, b], [deep], [deep + shared]]
    for targets in graphs:
        nodes = [t.node for t in targets]
        assert realization.canonicalize(nodes) == realization._canonicalize_deep(nodes)
    assert realization.canonicalize([deep.node], 40) is None
    assert realization._canonicalize_deep([deep.node], 40) is None
    key, found = realization.canonicalize([shared.node], 40)
    assert len(found) == 4 and key == realization._canonicalize_deep([shared.node])[0]


# ---- short forms of binary ops ---------------------------------------------------

def test_short_binary_forms_build_the_general_nodes(rng):
    """The short paths (same shape, broadcast of one dtype, tensor and Python number)
    give the nodes the general path gives: same hash-consed node, same values."""
    from cudagrad import elementwise
    x = cg.from_numpy(rng.standard_normal((3, 4)).astype(np.float32), device="cpu")
    y = cg.from_numpy(rng.standard_normal((3, 4)).astype(np.float32), device="cpu")
    row = cg.from_numpy(rng.standard_normal((1, 4)).astype(np.float32), device="cpu")
    ints = cg.from_numpy(rng.integers(1, 5, (3, 4)).astype(np.int32), device="cpu")
    cases = [(x, y), (x, row), (row, x), (x, 2.5), (3, x), (x, 1), (ints, ints), (ints, 2.5)]
    for a, b in cases:
        for op, name in ((cg.ir.node.Op.ADD, "add"), (cg.ir.node.Op.MUL, "mul")):
            short = elementwise.binary(op, name, a, b)
            nodes, tensors, _, _, _ = elementwise.operands(name, a, b)
            general = cg.ir.ops.binary(op, nodes[0], nodes[1])
            assert short.node is general, (name, a, b)
    # true division of integers goes the general way: a float32 result
    quotient = ints / ints
    assert quotient.dtype == cg.float32
    np.testing.assert_allclose(quotient.numpy(), np.ones((3, 4)))
    np.testing.assert_allclose((x / row).numpy(), x.numpy() / row.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match=r"mul: shapes \[3, 4\] and \[2, 4\] do not broadcast"):
        x * cg.from_numpy(np.ones((2, 4), np.float32), device="cpu")
