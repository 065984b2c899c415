"""Graphs of the same structure realized one after another: whatever the implementation caches
(planned kernels, launch arguments), each graph's own leaves, constants, views, shapes, dtypes and
already realized parts must be honoured. Also: very long graphs."""
from __future__ import annotations

import numpy as np
import pytest

import cudagrad as cg
from helpers import assert_close, grad_of, make


@pytest.fixture
def arrays(rng):
    return [rng.standard_normal((3, 4)) for _ in range(4)]


def test_leaf_identity_patterns(device, arrays, seed):
    A, B, C, D = arrays
    m = lambda x: make(x, device, "float64")
    a, b = m(A), m(B)
    assert_close(a * b + a, A * B + A, "float64", f"seed={seed}")
    c, d = m(C), m(D)
    assert_close(c * d + d, C * D + D, "float64", f"seed={seed}")
    c, d = m(C), m(D)
    assert_close(c * c + d, C * C + D, "float64", f"seed={seed}")
    a, b = m(A), m(B)
    assert_close(a - b, A - B, "float64")
    assert_close(b - a, B - A, "float64")
    b = m(B[:3, :3])
    c = m(C[:3, :3])
    assert_close(b + c.T, B[:3, :3] + C[:3, :3].T, "float64")
    assert_close(b + b.T, B[:3, :3] + B[:3, :3].T, "float64")
    assert_close(c + b.T, C[:3, :3] + B[:3, :3].T, "float64")


def test_constants_are_not_shared(device, arrays):
    A = arrays[0]
    for k in (2.0, 3.0, -0.5, 1e-3):
        assert_close(make(A, device) * k + k, A * k + k, "float32", f"k={k}")
        lo, hi = -abs(k), abs(k)
        assert_close(make(A, device).clamp(lo, hi), np.clip(A, lo, hi), "float32", f"clamp k={k}")
    for k in (2.0, 3.0):
        x = make([1.0, 2.0], device, "float64")
        (x ** k).sum().backward()
        assert_close(grad_of(x), k * np.array([1.0, 2.0]) ** (k - 1), "float64", f"k={k}")


def test_view_offsets_and_shapes_are_not_shared(device):
    v = np.arange(12.0)
    for start in (0, 1, 5, 9):
        assert_close(make(v, device)[start:start + 2] * 1.0, v[start:start + 2], "float32", f"start={start}")
    for step in (1, 2, 3, -1, -2):
        assert_close(make(v, device)[::step] + 0.0, v[::step], "float32", f"step={step}")
    for shape in ((2, 6), (6, 2), (3, 4), (4, 3), (12,)):
        assert_close((make(v, device).reshape(*shape) * 3).exp(), np.exp(v.reshape(shape) * 3), "float32",
                     f"shape={shape}")
    m = v.reshape(3, 4)
    assert_close(make(m, device).T * 1.5, m.T * 1.5, "float32")
    assert_close(make(m, device).reshape(4, 3) * 1.5, m.reshape(4, 3) * 1.5, "float32")


def test_dtypes_are_not_shared(device, arrays):
    A = arrays[0]
    x32 = (make(A, device, "float32") * 1.1).numpy()
    x64 = (make(A, device, "float64") * 1.1).numpy()
    assert x32.dtype == np.float32 and x64.dtype == np.float64
    assert_close(x64, A * 1.1, "float64")


def test_realized_and_unrealized_intermediates(device, arrays):
    A, B = arrays[:2]
    a = make(A, device, "float64")
    y = a * 2
    y.realize()
    assert_close(y + 1, A * 2 + 1, "float64")
    b = make(B, device, "float64")
    y2 = b * 2
    assert_close(y2 + 1, B * 2 + 1, "float64")
    (y * y).sum().backward()
    assert_close(grad_of(a), 8 * A, "float64", "gradient through a realized intermediate")


def test_backward_after_reading_values(device, arrays):
    A = arrays[0]
    a = make(A, device, "float64")
    e = a.exp()
    e.numpy()
    loss = (e * e).sum()
    loss.numpy()
    loss.backward()
    assert_close(grad_of(a), 2 * np.exp(2 * A), "float64")


def test_training_like_loop(device, rng, seed):
    for step in range(4):
        X, W = rng.standard_normal((5, 3)), rng.standard_normal((3, 2))
        x, w = make(X, device, "float64"), make(W, device, "float64")
        ((x @ w).relu()).sum().backward()
        G = (X @ W > 0).astype(float)
        assert_close(grad_of(w), X.T @ G, "float64", f"step {step} seed={seed}")
        assert_close(grad_of(x), G @ W.T, "float64", f"step {step} seed={seed}")


def test_detach_is_not_merged_with_the_attached_expression(device, arrays):
    A, B = arrays[:2]
    a, b = make(A, device, "float64"), make(B, device, "float64")
    ((a.detach() * b).sum() + (a * b).sum()).backward()
    assert_close(grad_of(a), B, "float64")
    assert_close(grad_of(b), 2 * A, "float64")


def test_no_grad_result_is_a_constant(device, arrays):
    A = arrays[0]
    a = make(A, device, "float64")
    with cg.no_grad():
        y1 = a * 2
    y2 = a * 2
    assert y1.requires_grad is False and y2.requires_grad is True
    (y1 * y2).sum().backward()
    assert_close(grad_of(a), 4 * A, "float64")


def test_equal_leaves_are_distinct(device):
    a = cg.tensor([2], [1.0, 2.0], device=device)
    b = cg.tensor([2], [1.0, 2.0], device=device)
    (a * 3 + b).sum().backward()
    assert a.grad == [3.0, 3.0] and b.grad == [1.0, 1.0]


@pytest.mark.parametrize("length", [500, 2000])
def test_long_elementwise_chain(device, length):
    """A loop that builds a long chain (an unrolled recurrence, an accumulation) must realize."""
    x0 = np.array([0.1, 0.2, 0.3, 0.4])
    a = make(x0, device, "float64")
    t = a
    for _ in range(length):
        t = t * 1.0001 + 0.0
    assert_close(t, x0 * 1.0001 ** length, "float64", rtol=1e-9)
    t.sum().backward()
    assert_close(grad_of(a), np.full(4, 1.0001 ** length), "float64", rtol=1e-9)


def test_long_accumulation_of_leaves(device, rng):
    xs = [rng.standard_normal(3) for _ in range(600)]
    ts = [make(x, device, "float64") for x in xs]
    acc = ts[0]
    for t in ts[1:]:
        acc = acc + t
    assert_close(acc, np.sum(xs, axis=0), "float64", rtol=1e-9)
    acc.sum().backward()
    assert_close(grad_of(ts[123]), np.ones(3), "float64")


def test_many_inputs_and_long_cat(device):
    ts = [cg.tensor([3], [float(i)] * 3, device=device) for i in range(200)]
    acc = ts[0]
    for t in ts[1:]:
        acc = acc + t
    assert_close(acc, np.full(3, float(sum(range(200)))), "float32")
    assert_close(cg.cat(ts, 0), np.repeat(np.arange(200.0), 3), "float32")


def test_second_order_gradient(device):
    """Gradients are graph nodes; differentiating a gradient works where it is allowed."""
    x = cg.tensor([2], [1.0, 2.0], device=device, dtype=cg.float64)
    (g,) = cg.grad((x ** 3).sum(), [x])
    assert_close(g, 3 * np.array([1.0, 4.0]), "float64")
