"""Reliability, part 3: long runs.

10,000 training steps of a small MLP built from raw tensors (W1, b1, W2, b2
leaves; loss.backward(); p.assign(p - lr * p.grad_tensor); cg.realize(*params))
must
- compute the same weights as a float64 numpy reference of the same steps,
- keep host memory flat: resident set size, live Python objects, the graph's
  hash-consing table and the plan cache do not grow over the last 8,000 steps,
- on cuda, keep device memory flat and reuse freed buffers: after warm-up no
  step asks the driver for new memory (every buffer comes from the free lists).

The 10,000-step run takes a few seconds on the CPU, so it runs by default;
CUDAGRAD_LONG_STEPS overrides the count.
"""
from __future__ import annotations

import gc
import os
import time
import weakref

import numpy as np
import pytest

import cudagrad as cg

STEPS = int(os.environ.get("CUDAGRAD_LONG_STEPS", "10000"))
WARMUP = STEPS // 5                      # measured growth: over the last 80% of the steps
HOST_MARGIN_BYTES = 20 * 2**20           # 20 MB
OBJECT_MARGIN = 300                      # live Python objects
LR = 0.05




def rss_bytes() -> int:
    """Resident set size now (not the peak), from /proc; psutil where /proc is missing."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        psutil = pytest.importorskip("psutil")
        return psutil.Process().memory_info().rss


def data(rng):
    x = rng.standard_normal((64, 8))
    y = np.sin(x[:, :1] * 1.5) + 0.3 * x[:, 1:2]
    return x, y


def initial_weights(rng):
    return [rng.standard_normal((8, 16)) * 0.4, np.zeros(16),
            rng.standard_normal((16, 1)) * 0.4, np.zeros(1)]


def numpy_reference(x, y, weights, steps):
    w1, b1, w2, b2 = [w.copy() for w in weights]
    losses = []
    for _ in range(steps):
        pre = x @ w1 + b1
        h = np.maximum(pre, 0)
        r = h @ w2 + b2 - y
        losses.append((r * r).mean())
        g = 2 * r / r.size
        gw2, gb2 = h.T @ g, g.sum(0)
        gh = (g @ w2.T) * (pre > 0)
        gw1, gb1 = x.T @ gh, gh.sum(0)
        w1, b1, w2, b2 = w1 - LR * gw1, b1 - LR * gb1, w2 - LR * gw2, b2 - LR * gb2
    return [w1, b1, w2, b2], losses


def node_table_size() -> int:
    from cudagrad.ir.node import _NODES
    return len(_NODES)


def leaf_owner_count() -> int:
    """Entries of the leaf-owner table, bounded: live ones plus those a sweep may still drop."""
    from cudagrad import tensor
    table = getattr(tensor, "_LEAF_OWNERS", {})
    live = 0
    for value in list(table.values()):
        target = value() if isinstance(value, weakref.ref) else value
        live += target is not None
    return live


def plan_count() -> int:
    from cudagrad import realization
    return len(getattr(realization, "_PLANS", {}))


def test_ten_thousand_training_steps_stay_flat_and_correct(device):
    rng = np.random.default_rng(42)
    x_np, y_np = data(rng)
    start = initial_weights(rng)
    x = cg.tensor(x_np, dtype=cg.float64, device=device, requires_grad=False)
    y = cg.tensor(y_np, dtype=cg.float64, device=device, requires_grad=False)
    params = [cg.tensor(w, dtype=cg.float64, device=device) for w in start]
    w1, b1, w2, b2 = params

    gpu = None
    new_allocations = [0]
    if device == "cuda":
        from cudagrad.device import get_device
        gpu = get_device("cuda")
        original = gpu._allocate_new

        def counting_allocate_new(nbytes, size):
            new_allocations[0] += 1
            return original(nbytes, size)
        gpu._allocate_new = counting_allocate_new

    samples = {}
    losses = []
    began = time.perf_counter()
    try:
        for step in range(STEPS):
            h = (x @ w1 + b1).relu()
            loss = ((h @ w2 + b2 - y) ** 2).mean()
            loss.backward()
            for p in params:
                p.assign(p - LR * p.grad_tensor)
            cg.realize(loss, *params)
            for p in params:
                p.zero_grad()
            if step % 1000 == 0 or step == STEPS - 1:
                losses.append((step, loss.item()))
            if step == WARMUP or step == STEPS - 1:
                gc.collect()
                samples[step] = {
                    "rss": rss_bytes(), "objects": len(gc.get_objects()), "nodes": node_table_size(),
                    "leaf_owners": leaf_owner_count(),
                    "plans": plan_count(), "allocations": new_allocations[0],
                    "in_use": gpu.bytes_in_use if gpu else 0,
                    "cached": gpu.bytes_cached if gpu else 0,
                }
    finally:
        if gpu is not None:
            del gpu._allocate_new
    elapsed = time.perf_counter() - began

    first, last = samples[WARMUP], samples[STEPS - 1]
    growth = last["rss"] - first["rss"]
    print(f"\n{device}: {STEPS} steps in {elapsed:.1f} s ({1e3 * elapsed / STEPS:.2f} ms/step); "
          f"host RSS {first['rss'] / 2**20:.1f} -> {last['rss'] / 2**20:.1f} MiB "
          f"(growth {growth / 2**20:+.2f} MiB over the last {STEPS - 1 - WARMUP} steps); "
          f"objects {first['objects']} -> {last['objects']}; nodes {first['nodes']} -> {last['nodes']}; "
          f"plans {first['plans']} -> {last['plans']}; loss {losses[0][1]:.4f} -> {losses[-1][1]:.6f}")
    if gpu is not None:
        print(f"cuda: bytes_in_use {first['in_use']} -> {last['in_use']}, bytes_cached "
              f"{first['cached']} -> {last['cached']}, new driver allocations after warm-up: "
              f"{last['allocations'] - first['allocations']}")

    # host memory and the graph machinery stay flat
    assert growth < HOST_MARGIN_BYTES, f"host memory grew by {growth / 2**20:.1f} MiB"
    assert last["objects"] - first["objects"] < OBJECT_MARGIN, "live Python objects keep growing"
    assert last["nodes"] <= first["nodes"] + 50, "the hash-consing table keeps growing"
    assert last["plans"] == first["plans"], "a step re-planned its graph"
    # regression: each assign left an entry for the parameter's old node in the leaf table
    assert last["leaf_owners"] <= first["leaf_owners"], "the leaf-owner table keeps growing"
    # device memory flat; freed buffers reused instead of new driver allocations
    if gpu is not None:
        assert last["allocations"] == first["allocations"], "steps keep allocating new device memory"
        assert last["in_use"] + last["cached"] <= first["in_use"] + first["cached"]
        assert last["cached"] > 0, "no freed buffer went back to the free lists"

    # and the numbers are right: the same 10,000 steps in numpy float64
    expected, expected_losses = numpy_reference(x_np, y_np, start, STEPS)
    assert losses[-1][1] < 0.5 * losses[0][1], "training did not make progress"
    np.testing.assert_allclose(losses[-1][1], expected_losses[-1], rtol=1e-6)
    for got, want in zip(params, expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-9)


def test_lazy_graphs_that_are_never_realized_are_freed(device):
    """Building (and dropping) graphs without realizing them must not leak either."""
    x = cg.tensor(np.ones((16, 16)), dtype=cg.float64, device=device)
    for _ in range(200):
        ((x @ x).relu().sum() * 2).backward()
        x.zero_grad()
    gc.collect()
    before = (rss_bytes(), len(gc.get_objects()), node_table_size())
    for _ in range(3000):
        ((x @ x).relu().sum() * 2).backward()
        x.zero_grad()
    gc.collect()
    after = (rss_bytes(), len(gc.get_objects()), node_table_size())
    assert after[0] - before[0] < HOST_MARGIN_BYTES
    assert after[1] - before[1] < OBJECT_MARGIN
    assert after[2] <= before[2] + 50


# ----------------------------------------------------------------- regressions ----

def test_a_graph_rebuilt_after_assign_reads_the_new_value(device):
    """Found by the long run: hash-consing handed the next step the nodes (and
    realized buffers) of the previous step, since the leaf node was the same
    after assign: every step after the first reused step one's forward values."""
    w = cg.tensor([1.0], device=device)
    y = w * 2
    assert y.item() == 2.0
    w.assign(w + 1)
    cg.realize(w)
    assert (w * 2).item() == 4.0, "a graph built after assign computed from the old value"
    assert y.item() == 2.0, "a result computed before assign keeps its value"


def test_reading_the_loss_after_an_optimizer_step_gives_the_pre_step_loss(device):
    """The loss of a step, read after the update, is that step's loss (not a mix of
    old activations and new weights)."""
    rng = np.random.default_rng(3)
    x_np, y_np = rng.standard_normal((16, 4)), rng.standard_normal((16, 1))
    w_np = rng.standard_normal((4, 1))
    x = cg.tensor(x_np, dtype=cg.float64, device=device, requires_grad=False)
    y = cg.tensor(y_np, dtype=cg.float64, device=device, requires_grad=False)
    w = cg.tensor(w_np.copy(), dtype=cg.float64, device=device)
    for _ in range(3):
        loss = ((x @ w).relu() - y).abs().mean()
        loss.backward()
        w.assign(w - 0.1 * w.grad_tensor)
        cg.realize(w)
        w.zero_grad()
        expected = np.abs(np.maximum(x_np @ w_np, 0) - y_np).mean()
        assert loss.item() == pytest.approx(expected, rel=1e-12)
        r = np.maximum(x_np @ w_np, 0) - y_np
        grad = x_np.T @ (np.sign(r) * (x_np @ w_np > 0)) / r.size
        w_np = w_np - 0.1 * grad
    np.testing.assert_allclose(w.numpy(), w_np, rtol=1e-12)
