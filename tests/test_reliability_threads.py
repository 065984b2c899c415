"""Reliability, part 4: threads.

4 threads build and realize different graphs at the same time, for several
rounds; each round's graphs are new (a per-round constant is baked into the
kernel source, and shapes differ per thread), so first-time scheduling,
compiling and caching race with each other and with launches. Every result
must match numpy. A last round has all threads realize one shared graph.
"""
from __future__ import annotations

import threading

import numpy as np

import cudagrad as cg

THREADS = 4
ROUNDS = 5




def graph(kind: int, salt: float, rng, device):
    """One of four graph families; returns (cudagrad results, numpy references)."""
    n = 3 + kind
    a_np = rng.standard_normal((n, n + 1))
    b_np = rng.standard_normal((n + 1, 2))
    a = cg.tensor(a_np, dtype=cg.float64, device=device)
    b = cg.tensor(b_np, dtype=cg.float64, device=device)
    if kind == 0:       # elementwise chain and a full reduction, with its gradient
        out = ((a * salt).sin() + a.exp() * 0.5).sum()
        out.backward()
        got = [out, a.grad_tensor]
        want = [np.array([(np.sin(a_np * salt) + np.exp(a_np) * 0.5).sum()]),
                salt * np.cos(a_np * salt) + np.exp(a_np) * 0.5]
    elif kind == 1:     # matmul with an epilogue, and both gradients
        out = ((a @ b) * salt).tanh().sum()
        out.backward()
        t = np.tanh((a_np @ b_np) * salt)
        g = (1 - t * t) * salt
        got = [out, a.grad_tensor, b.grad_tensor]
        want = [np.array([t.sum()]), g @ b_np.T, a_np.T @ g]
    elif kind == 2:     # softmax rows, views and a max
        s = (a * salt).softmax(-1)
        out = s.T[1:, ::-1].max(0)
        e = np.exp(a_np * salt - (a_np * salt).max(-1, keepdims=True))
        sm = e / e.sum(-1, keepdims=True)
        got = [s, out]
        want = [sm, sm.T[1:, ::-1].max(0)]
    else:               # broadcasting, where, cat and a mean
        row = cg.tensor(b_np[:, 0], dtype=cg.float64, device=device)
        mixed = cg.where(a > 0, a * salt, row[None, :n + 1] * 2.0)
        out = cg.cat([mixed, a], 0).mean(1)
        m = np.where(a_np > 0, a_np * salt, b_np[None, :, 0] * 2.0)
        got = [mixed, out]
        want = [m, np.concatenate([m, a_np], 0).mean(1)]
    return got, want


def test_four_threads_realize_different_graphs(device):
    errors: list = []
    checked = [0]
    lock = threading.Lock()
    compiled_before = cg.stats()["kernels_compiled"]

    def worker(kind: int, barrier: threading.Barrier, round_: int):
        try:
            rng = np.random.default_rng(1000 * round_ + kind)
            salt = 1.0 + round_ * 0.001 + kind * 1e-5 + np.random.default_rng().random() * 1e-7
            got, want = graph(kind, salt, rng, device)
            barrier.wait(timeout=60)        # build first, then all realize together
            cg.realize(*got)
            for g, w in zip(got, want):
                np.testing.assert_allclose(np.asarray(g.numpy(), dtype=np.float64).reshape(np.shape(w)),
                                           w, rtol=1e-9, atol=1e-12)
                with lock:
                    checked[0] += 1
        except BaseException as error:     # reported from the main thread
            errors.append((kind, round_, error))

    for round_ in range(ROUNDS):
        barrier = threading.Barrier(THREADS)
        threads = [threading.Thread(target=worker, args=(kind, barrier, round_)) for kind in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert not any(thread.is_alive() for thread in threads), "a thread hung"
        assert not errors, errors
    assert checked[0] == ROUNDS * 9
    if device == "cpu":
        assert cg.stats()["kernels_compiled"] > compiled_before, "first-time compiles were exercised"


def _run_in_threads(worker) -> None:
    """worker(0) .. worker(THREADS - 1), each in a thread of its own, all joined."""
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)


def test_four_threads_realize_one_shared_graph_and_its_copies(device):
    rng = np.random.default_rng(7)
    x_np = rng.standard_normal((6, 5))
    salt = 2.0 + np.random.default_rng().random() * 1e-6
    results, errors = [None] * THREADS, []
    barrier = threading.Barrier(THREADS)

    def worker(index: int):
        try:
            x = cg.tensor(x_np, dtype=cg.float64, device=device)       # each its own leaf
            y = ((x * salt).relu() @ x.T).sum(1)
            barrier.wait(timeout=60)
            results[index] = y.numpy()
        except BaseException as error:
            errors.append(error)

    _run_in_threads(worker)
    assert not errors, errors
    expected = (np.maximum(x_np * salt, 0) @ x_np.T).sum(1)
    for result in results:
        np.testing.assert_allclose(result, expected, rtol=1e-10)


def test_four_threads_read_one_lazy_tensor(device):
    """Several threads realizing the very same node: each gets the same, right value."""
    x_np = np.linspace(-2, 2, 24).reshape(4, 6)
    x = cg.tensor(x_np, dtype=cg.float64, device=device)
    salt = 3.0 + np.random.default_rng().random() * 1e-6
    y = (x * salt).sigmoid().sum(0)
    results, errors = [None] * THREADS, []
    barrier = threading.Barrier(THREADS)

    def worker(index: int):
        try:
            barrier.wait(timeout=60)
            results[index] = y.numpy()
        except BaseException as error:
            errors.append(error)

    _run_in_threads(worker)
    assert not errors, errors
    expected = (1 / (1 + np.exp(-x_np * salt))).sum(0)
    for result in results:
        np.testing.assert_allclose(result, expected, rtol=1e-12)
