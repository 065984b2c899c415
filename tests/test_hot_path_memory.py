"""The tiny-op hot path leaks nothing: many realizations keep memory and the
internal tables flat (issue 5 asks it of 100,000; a smaller count runs here)."""
from __future__ import annotations

import gc
import importlib
import os
import tracemalloc

import cudagrad as cg
from cudagrad import backward_cache, interop, realization
from cudagrad.ir import node as ir_node

tensor_module = importlib.import_module("cudagrad.tensor")   # cg.tensor is the constructor

ITERATIONS = int(os.environ.get("CUDAGRAD_HOT_PATH_ITERATIONS", "20000"))
WARMUP = ITERATIONS // 4                       # growth is measured over the rest
# a leaked node or tensor a step is 100+ bytes: 1.5 MB over the measured steps. The margins
# leave room for a table's one-off resize and for malloc keeping freed pages.
TRACED_MARGIN = 256 * 1024     # bytes Python (and numpy) allocated and still hold
RSS_MARGIN = 16 * 2**20


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def tables() -> dict:
    gc.collect()
    return {"nodes": len(ir_node._NODES), "plans": len(realization._PLANS),
            "gradient_plans": len(backward_cache._GRADIENT_PLANS),
            "exported": len(interop._EXPORTED), "leaf_owners": len(tensor_module._LEAF_OWNERS)}


def one_step(i: int) -> None:
    a = cg.tensor([2, 2], [2.0, 3.0, 4.0, float(i % 7)], device="cpu")
    b = cg.tensor([2, 2], [6.0, 7.0, 8.0, 9.0], device="cpu")
    c = a @ b
    assert c.data[0] == 36.0
    if i % 4 == 0:                  # a quarter of the steps go backward and read both grads
        (c * 2).sum().backward()
        assert a.grad is not None and b.grad is not None
    if i % 16 == 0:                 # and a DLPack round trip through numpy
        import numpy as np
        np.from_dlpack(c)


def test_tiny_realizations_keep_memory_flat():
    for i in range(200):            # plan and compile everything first
        one_step(i)
    tracemalloc.start()
    try:
        samples = {}
        for i in range(ITERATIONS):
            one_step(i)
            if i == WARMUP or i == ITERATIONS - 1:
                found = tables()
                traced, _ = tracemalloc.get_traced_memory()
                samples[i] = dict(found, traced=traced, rss=rss_bytes())
    finally:
        tracemalloc.stop()
    first, last = samples[WARMUP], samples[ITERATIONS - 1]
    detail = f"after {WARMUP} steps: {first}; after {ITERATIONS}: {last}"
    assert last["traced"] - first["traced"] < TRACED_MARGIN, "Python allocations grow: " + detail
    assert last["rss"] - first["rss"] < RSS_MARGIN, "resident memory grows: " + detail
    assert last["plans"] == first["plans"], "the same graphs planned again: " + detail
    assert last["gradient_plans"] == first["gradient_plans"], "gradients planned again: " + detail
    assert last["nodes"] <= first["nodes"] + 50, "the hash-consing table grows: " + detail
    assert last["exported"] <= first["exported"], "DLPack exports are never released: " + detail
    assert last["leaf_owners"] <= first["leaf_owners"] + 50, "the leaf table grows: " + detail


def test_tiny_steps_make_no_reference_cycles():
    """A cycle outlives its step until the collector runs, and each collection costs
    the hot path time (a self-referring closure in the key walk once doubled it)."""
    for i in range(50):
        one_step(i)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for i in range(200):
            one_step(i)
        gc.collect()
        cycles = [type(obj).__name__ for obj in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert not cycles, f"the hot path left {len(cycles)} objects in cycles: {sorted(set(cycles))}"


def test_a_gradient_accumulated_over_many_steps_keeps_memory_flat_and_sums_right(device):
    """An input that requires grad (cg.tensor's default), reused every step and never read:
    its gradient sums every step's. It must neither hold every step's graph alive nor be
    wrong when read at the end (hand-derived: loss = mean((x @ w)^2) gives
    dloss/dx = 2 (x @ w) @ w.T / size, summed over the steps' w)."""
    import numpy as np
    rng = np.random.default_rng()
    x_np = rng.normal(size=(6, 5))
    w_np = rng.normal(size=(5, 4))
    x = cg.tensor(x_np, dtype=cg.float64, device=device)            # requires grad
    w = cg.tensor(w_np, dtype=cg.float64, device=device)
    opt = cg.optim.SGD([w], lr=0.05)
    expected_x_grad = np.zeros_like(x_np)
    live = []
    for step in range(60):
        opt.zero_grad()
        out = x @ w
        loss = (out * out).mean()
        loss.backward()
        opt.step()
        expected_x_grad += 2 * (x_np @ w_np) @ w_np.T / out.numel()
        w_np = w_np - 0.05 * x_np.T @ (2 * (x_np @ w_np) / out.numel())
        if step in (20, 59):
            gc.collect()
            ir_node.sweep_nodes()
            live.append(sum(1 for ref in ir_node._NODES.values() if ref() is not None))
    assert live[1] <= live[0] + 20, f"live graph nodes grew from {live[0]} to {live[1]} over 39 steps"
    np.testing.assert_allclose(x.grad_tensor.numpy(), expected_x_grad, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(w.numpy(), w_np, rtol=1e-10, atol=1e-12)
