"""Gradients: every differentiable op against central finite differences (float64),
the seed project's known-wrong cases by hand-derived formulas, and autograd semantics."""
from __future__ import annotations

import numpy as np
import pytest

import cudagrad as cg
from helpers import assert_close, const, grad_of, launched, make, numeric_grad

F64 = "float64"


def rand(rng, shape, kind="any"):
    x = rng.standard_normal(shape)
    if kind == "pos":
        x = np.abs(x) + 0.2
    elif kind == "away0":
        x = np.sign(x) * (np.abs(x) + 0.2)
    return np.asarray(x, dtype=np.float64)


def np_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_log_softmax(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def distinct(rng, shape, gap=0.05):
    """Values at least `gap` apart (so max/min have no ties, and kinks are far away)."""
    n = int(np.prod(shape))
    # multiples of 4*gap, shifted by gap: never within gap/2 of 0, +-0.5 or of each other
    values = (rng.permutation(n) - n // 2) * gap * 4 + gap + rng.uniform(-gap / 4, gap / 4, n)
    return values.reshape(shape).astype(np.float64)


# name: (input shapes, cg function, numpy function, input kinds)
CASES = {
    "add": ([(3, 4), (3, 4)], lambda a, b: a + b, lambda a, b: a + b, None),
    "add_bcast": ([(2, 3, 4), (3, 1)], lambda a, b: a + b, lambda a, b: a + b, None),
    "sub_bcast": ([(4,), (3, 4)], lambda a, b: a - b, lambda a, b: a - b, None),
    "mul_bcast": ([(3, 1), (1, 4)], lambda a, b: a * b, lambda a, b: a * b, None),
    "mul_0d": ([(), (2, 3)], lambda a, b: a * b, lambda a, b: a * b, None),
    "div": ([(3, 4), (3, 4)], lambda a, b: a / b, lambda a, b: a / b, ["any", "away0"]),
    "div_bcast": ([(2, 3), (3,)], lambda a, b: a / b, lambda a, b: a / b, ["any", "away0"]),
    "pow_tt": ([(3, 4), (3, 4)], lambda a, b: a ** b, lambda a, b: a ** b, ["pos", "any"]),
    "pow_bcast": ([(3, 4), (1, 4)], lambda a, b: a ** b, lambda a, b: a ** b, ["pos", "any"]),
    "pow_scalar": ([(3, 4)], lambda a: a ** 3, lambda a: a ** 3, None),
    "pow_half": ([(3, 4)], lambda a: a ** 0.5, lambda a: a ** 0.5, ["pos"]),
    "rpow_scalar": ([(3, 4)], lambda a: 2.0 ** a, lambda a: 2.0 ** a, None),
    "rsub_scalar": ([(5,)], lambda a: 1.5 - a, lambda a: 1.5 - a, None),
    "rdiv_scalar": ([(5,)], lambda a: 2.0 / a, lambda a: 2.0 / a, ["away0"]),
    "radd_rmul": ([(5,)], lambda a: 3.0 * a + 2.0, lambda a: 3.0 * a + 2.0, None),
    "neg": ([(3, 4)], lambda a: -a, lambda a: -a, None),
    "matmul": ([(3, 4), (4, 5)], lambda a, b: a @ b, lambda a, b: a @ b, None),
    "matmul_batched": ([(2, 3, 4), (2, 4, 5)], lambda a, b: a @ b, lambda a, b: a @ b, None),
    "matmul_bcast_batch": ([(2, 1, 3, 4), (5, 4, 2)], lambda a, b: a @ b, lambda a, b: a @ b, None),
    "matmul_3d_2d": ([(2, 3, 4), (4, 5)], lambda a, b: a @ b, lambda a, b: a @ b, None),
    "exp": ([(3, 4)], lambda a: a.exp(), np.exp, None),
    "log": ([(3, 4)], lambda a: a.log(), np.log, ["pos"]),
    "sqrt": ([(3, 4)], lambda a: a.sqrt(), np.sqrt, ["pos"]),
    "abs": ([(3, 4)], lambda a: a.abs(), np.abs, ["away0"]),
    "relu": ([(3, 4)], lambda a: a.relu(), lambda a: np.maximum(a, 0), ["away0"]),
    "sigmoid": ([(3, 4)], lambda a: a.sigmoid(), lambda a: 1 / (1 + np.exp(-a)), None),
    "tanh": ([(3, 4)], lambda a: a.tanh(), np.tanh, None),
    "sin": ([(3, 4)], lambda a: a.sin(), np.sin, None),
    "cos": ([(3, 4)], lambda a: a.cos(), np.cos, None),
    "maximum": ([(3, 4), (3, 4)], lambda a, b: a.maximum(b), np.maximum, ["distinct", "distinct2"]),
    "minimum_bcast": ([(3, 4), (4,)], lambda a, b: a.minimum(b), np.minimum, ["distinct", "distinct2"]),
    "clamp": ([(4, 5)], lambda a: a.clamp(-0.5, 0.5), lambda a: np.clip(a, -0.5, 0.5), ["distinct"]),
    "where": ([(3, 4), (3, 4), (4,)],
              lambda c, a, b: cg.where(c > 0.0, a, b), lambda c, a, b: np.where(c > 0, a, b), None),
    "sum_all": ([(3, 4)], lambda a: a.sum(), lambda a: np.sum(a).reshape(1), None),
    "sum_axis": ([(2, 3, 4)], lambda a: a.sum(axis=1), lambda a: a.sum(axis=1), None),
    "sum_axes_keep": ([(2, 3, 4)], lambda a: a.sum(axis=(0, 2), keepdim=True),
                      lambda a: a.sum(axis=(0, 2), keepdims=True), None),
    "mean_all": ([(3, 4)], lambda a: a.mean(), lambda a: np.mean(a).reshape(1), None),
    "mean_neg_axis": ([(2, 3, 4)], lambda a: a.mean(axis=-1), lambda a: a.mean(axis=-1), None),
    "max_all": ([(3, 4)], lambda a: a.max(), lambda a: np.max(a).reshape(1), ["distinct"]),
    "max_axis": ([(3, 4)], lambda a: a.max(axis=1), lambda a: a.max(axis=1), ["distinct"]),
    "max_axes_keep": ([(2, 3, 4)], lambda a: a.max(axis=(0, 2), keepdim=True),
                      lambda a: a.max(axis=(0, 2), keepdims=True), ["distinct"]),
    "min_axis": ([(3, 4)], lambda a: a.min(axis=0), lambda a: a.min(axis=0), ["distinct"]),
    "min_all_keep": ([(2, 3)], lambda a: a.min(keepdim=True), lambda a: a.min(keepdims=True), ["distinct"]),
    "reshape": ([(2, 6)], lambda a: a.reshape(3, -1) * a.reshape(3, 4)[::-1], lambda a: a.reshape(3, 4) * a.reshape(3, 4)[::-1], None),
    "permute": ([(2, 3, 4)], lambda a: a.permute(2, 0, 1), lambda a: a.transpose(2, 0, 1), None),
    "transpose": ([(2, 3, 4)], lambda a: a.transpose(), lambda a: np.swapaxes(a, -1, -2), None),
    "T": ([(3, 4)], lambda a: a.T, lambda a: a.T, None),
    "expand": ([(3, 1)], lambda a: a.expand(2, 3, 4), lambda a: np.broadcast_to(a, (2, 3, 4)), None),
    "squeeze_unsqueeze": ([(3, 1, 4)], lambda a: a.squeeze(1).unsqueeze(0), lambda a: a.squeeze(1)[None], None),
    "flatten": ([(2, 3, 4)], lambda a: a.flatten(1), lambda a: a.reshape(2, 12), None),
    "index_int": ([(4, 5)], lambda a: a[2], lambda a: a[2], None),
    "index_slices": ([(6, 5)], lambda a: a[1:5:2, ::-1], lambda a: a[1:5:2, ::-1], None),
    "index_neg_step": ([(7,)], lambda a: a[5:0:-2], lambda a: a[5:0:-2], None),
    "index_none_ellipsis": ([(3, 4, 2)], lambda a: a[None, ..., 1], lambda a: a[None, ..., 1], None),
    "index_overlapping": ([(6,)], lambda a: a[1:4] * a[2:5] + a[::-1][:3],
                          lambda a: a[1:4] * a[2:5] + a[::-1][:3], None),
    "cat": ([(2, 3), (4, 3)], lambda a, b: cg.cat([a, b, a], axis=0), lambda a, b: np.concatenate([a, b, a], 0), None),
    "cat_axis1": ([(2, 3), (2, 1)], lambda a, b: cg.cat([a, b], axis=1), lambda a, b: np.concatenate([a, b], 1), None),
    "stack": ([(2, 3), (2, 3)], lambda a, b: cg.stack([a, b], axis=1), lambda a, b: np.stack([a, b], 1), None),
    "softmax": ([(3, 5)], lambda a: a.softmax(-1), lambda a: np_softmax(a, -1), None),
    "softmax_axis0": ([(3, 5)], lambda a: a.softmax(0), lambda a: np_softmax(a, 0), None),
    "log_softmax": ([(3, 5)], lambda a: a.log_softmax(-1), lambda a: np_log_softmax(a, -1), None),
    "log_softmax_3d": ([(2, 3, 4)], lambda a: a.log_softmax(1), lambda a: np_log_softmax(a, 1), None),
    "cast_roundtrip": ([(3,)], lambda a: a.to(cg.float64) * 2, lambda a: a * 2, None),
    "diamond": ([(3, 4)], lambda a: (a.exp() * 2) * a.exp().sin() + a,
                lambda a: (np.exp(a) * 2) * np.sin(np.exp(a)) + a, None),
    "node_used_twice": ([(3, 4)], lambda a: a * a, lambda a: a * a, None),
    "chain_bcast": ([(3, 4), (4,)], lambda x, r: ((x * r + r).tanh() @ (x.T * 0.5)).sigmoid(),
                    lambda x, r: 1 / (1 + np.exp(-(np.tanh(x * r + r) @ (x.T * 0.5)))), None),
}


def make_inputs(rng, shapes, kinds):
    arrays = []
    for i, shape in enumerate(shapes):
        kind = kinds[i] if kinds else "any"
        if kind == "distinct":
            arrays.append(distinct(rng, shape))
        elif kind == "distinct2":
            # offset from the first input so that elementwise max/min never ties
            arrays.append(distinct(rng, shape) + 0.1)
        else:
            arrays.append(rand(rng, shape, kind))
    return arrays


@pytest.mark.parametrize("name", sorted(CASES))
def test_grad_matches_finite_differences(device, rng, seed, name):
    shapes, cg_fn, np_fn, kinds = CASES[name]
    arrays = make_inputs(rng, shapes, kinds)
    out_shape = np.shape(np_fn(*arrays))
    weights = rng.standard_normal(out_shape)

    def loss_np(*xs):
        return float(np.sum(np_fn(*xs) * weights))

    leaves = [make(x, device, F64) for x in arrays]
    out = cg_fn(*leaves)
    assert out.shape == out_shape, f"{name}: forward shape"
    assert_close(out, np_fn(*arrays), F64, f"{name} forward seed={seed}", rtol=1e-9)
    loss = (out * const(weights, device, F64)).sum()
    loss.backward()
    for i, (leaf, x) in enumerate(zip(leaves, arrays)):
        if name == "where" and i == 0:
            # no gradient flows through the comparison
            g = leaf.grad
            assert g is None or np.allclose(g, 0.0), "where: the condition gets no gradient"
            continue
        expected = numeric_grad(loss_np, arrays, i)
        actual = grad_of(leaf)
        assert actual is not None, f"{name}: input {i} has no gradient"
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6,
                                   err_msg=f"{name}: grad of input {i}, seed={seed}")


@pytest.mark.parametrize("name", ["mul_bcast", "matmul", "softmax", "max_axis", "index_slices", "sum_axes_keep"])
def test_grad_float32(device, rng, seed, name):
    """The same gradients in float32 against the float64 finite differences, float32 tolerance."""
    shapes, cg_fn, np_fn, kinds = CASES[name]
    arrays = [np.asarray(a, np.float32).astype(np.float64) for a in make_inputs(rng, shapes, kinds)]
    weights = rng.standard_normal(np.shape(np_fn(*arrays)))
    leaves = [make(x, device, "float32") for x in arrays]
    loss = (cg_fn(*leaves) * const(weights, device, "float32")).sum()
    loss.backward()
    for i, (leaf, x) in enumerate(zip(leaves, arrays)):
        expected = numeric_grad(lambda *xs: float(np.sum(np_fn(*xs) * weights)), arrays, i)
        np.testing.assert_allclose(grad_of(leaf), expected, rtol=1e-4, atol=1e-4,
                                   err_msg=f"{name}: grad of input {i}, seed={seed}")


# ---------------------------------------------------------------- the seed's known-wrong cases

def test_seed_case_mul_chain(device, rng, seed):
    x, y, z = rand(rng, (3, 4)), rand(rng, (3, 4)), rand(rng, (3, 4))
    a, b, c = make(x, device, F64), make(y, device, F64), make(z, device, F64)
    ((a * b) * c).sum().backward()
    assert_close(grad_of(a), y * z, F64, f"d/da seed={seed}")
    assert_close(grad_of(b), x * z, F64, f"d/db seed={seed}")
    assert_close(grad_of(c), x * y, F64, f"d/dc seed={seed}")


def test_seed_case_mul_relu(device, rng, seed):
    x, y = rand(rng, (3, 4), "away0"), rand(rng, (3, 4), "away0")
    a, b = make(x, device, F64), make(y, device, F64)
    (a * b).relu().sum().backward()
    mask = (x * y > 0).astype(np.float64)
    assert_close(grad_of(a), y * mask, F64, f"d/da seed={seed}")
    assert_close(grad_of(b), x * mask, F64, f"d/db seed={seed}")


def test_seed_case_reused_intermediate(device, rng, seed):
    x = rand(rng, (3, 4))
    a = make(x, device, F64)
    y = a * 2
    (y + y).sum().backward()
    assert_close(grad_of(a), np.full((3, 4), 4.0), F64, f"seed={seed}")


@pytest.mark.parametrize("row_shape", [(4,), (1, 4)], ids=str)
def test_seed_case_broadcast_row(device, rng, seed, row_shape):
    x, r = rand(rng, (3, 4)), rand(rng, row_shape)
    a, row = make(x, device, F64), make(r, device, F64)
    out = (a + row).sum()
    assert_close(out, np.reshape((x + r).sum(), (1,)), F64)
    out.backward()
    assert_close(grad_of(a), np.ones((3, 4)), F64, f"seed={seed}")
    assert_close(grad_of(row), np.full(row_shape, 3.0), F64, f"seed={seed}")
    assert np.asarray(row.grad).size == int(np.prod(row_shape)), "grad must be reduced to the input's shape"


def test_seed_case_column_broadcast_mul(device, rng, seed):
    x, col = rand(rng, (3, 4)), rand(rng, (3, 1))
    a, c = make(x, device, F64), make(col, device, F64)
    (a * c).sum().backward()
    assert_close(grad_of(a), np.broadcast_to(col, (3, 4)), F64, f"seed={seed}")
    assert_close(grad_of(c), x.sum(axis=1, keepdims=True), F64, f"seed={seed}")


def test_seed_case_matmul_exp_mean(device, rng, seed):
    x, y = rand(rng, (3, 4)) * 0.5, rand(rng, (4, 2)) * 0.5
    a, b = make(x, device, F64), make(y, device, F64)
    out = (a @ b).exp().mean()
    assert_close(out, np.reshape(np.exp(x @ y).mean(), (1,)), F64)
    out.backward()
    g = np.exp(x @ y) / (3 * 2)
    assert_close(grad_of(a), g @ y.T, F64, f"d/da seed={seed}")
    assert_close(grad_of(b), x.T @ g, F64, f"d/db seed={seed}")


def test_seed_example_all_grads(device):
    a = cg.tensor([2, 2], [2.0, 3.0, 4.0, 5.0], device=device)
    b = cg.tensor([2, 2], [6.0, 7.0, 8.0, 9.0], device=device)
    c = cg.tensor([2, 2], [10.0, 10.0, 10.0, 10.0], device=device)
    d = cg.tensor([2, 2], [11.0, 11.0, 11.0, 11.0], device=device)
    f = (((a @ b) + c) * d).sum()
    f.backward()
    assert a.grad == [143.0, 187.0, 143.0, 187.0]
    assert b.grad == [66.0, 66.0, 88.0, 88.0]
    assert c.grad == [11.0] * 4
    assert d.grad == [46.0, 51.0, 74.0, 83.0]


# ---------------------------------------------------------------- autograd semantics

def test_grads_accumulate_across_backward_calls(device, rng, seed):
    x, y = rand(rng, (2, 3)), rand(rng, (2, 3))
    a, b = make(x, device, F64), make(y, device, F64)
    (a * b).sum().backward()
    assert_close(grad_of(a), y, F64, f"first backward seed={seed}")   # realized in between
    (a * b).sum().backward()
    assert_close(grad_of(a), 2 * y, F64, f"accumulated seed={seed}")
    (a * 3.0).sum().backward()
    assert_close(grad_of(a), 2 * y + 3.0, F64, f"accumulated seed={seed}")
    assert_close(grad_of(b), 2 * x, F64, f"accumulated seed={seed}")


def test_grads_accumulate_without_reading_in_between(device, rng, seed):
    x = rand(rng, (4,))
    a = make(x, device, F64)
    for _ in range(3):
        (a * a).sum().backward()
    assert_close(grad_of(a), 3 * 2 * x, F64, f"seed={seed}")


def test_backward_twice_on_same_graph_accumulates_or_raises(device, rng):
    """PyTorch raises on a second backward through a freed graph; a lazy symbolic graph may allow it.
    Either is fine, but if it is allowed it must accumulate."""
    x = rand(rng, (3,))
    a = make(x, device, F64)
    loss = (a.exp()).sum()
    loss.backward()
    try:
        loss.backward()
    except Exception:
        assert_close(grad_of(a), np.exp(x), F64)
    else:
        assert_close(grad_of(a), 2 * np.exp(x), F64)


def test_zero_grad(device, rng):
    x = rand(rng, (3,))
    a = make(x, device, F64)
    (a * 2).sum().backward()
    assert_close(grad_of(a), np.full(3, 2.0), F64)
    a.zero_grad()
    g = a.grad
    assert g is None or np.allclose(g, 0.0)
    (a * 5).sum().backward()
    assert_close(grad_of(a), np.full(3, 5.0), F64)


def test_cg_grad_is_lazy_and_leaves_grad_alone(device, rng, seed):
    x, y = rand(rng, (3, 4)), rand(rng, (4, 2))
    a, b = make(x, device, F64), make(y, device, F64)
    out = (a @ b).tanh().sum()
    before = launched()
    ga, gb = cg.grad(out, [a, b])
    assert launched() == before, "cg.grad must not run anything"
    assert ga.shape == (3, 4) and gb.shape == (4, 2)
    g = 1 - np.tanh(x @ y) ** 2
    assert_close(ga, g @ y.T, F64, f"seed={seed}")
    assert_close(gb, x.T @ g, F64, f"seed={seed}")
    assert a.grad is None and b.grad is None, "cg.grad must not touch .grad"


def test_cg_grad_of_broadcast_input(device, rng, seed):
    x, r = rand(rng, (3, 4)), rand(rng, (4,))
    a, row = make(x, device, F64), make(r, device, F64)
    (grow,) = cg.grad((a * row).sum(), [row])
    assert grow.shape == (4,)
    assert_close(grow, x.sum(axis=0), F64, f"seed={seed}")


def test_grad_tensor_is_lazy_tensor(device, rng):
    x = rand(rng, (2, 2))
    a = make(x, device, F64)
    assert a.grad_tensor is None
    (a * a).sum().backward()
    gt = a.grad_tensor
    assert gt is not None and gt.shape == (2, 2)
    assert_close(gt, 2 * x, F64)


def test_no_grad(device, rng):
    x = rand(rng, (3,))
    a = make(x, device, F64)
    with cg.no_grad():
        y = a * 2 + 1
        z = (y * a).sum()
    assert y.requires_grad is False and z.requires_grad is False
    assert_close(y, 2 * x + 1, F64)
    w = a * 2
    assert w.requires_grad is True, "grad mode is restored after no_grad"


def test_requires_grad_false_leaf_gets_no_grad(device, rng):
    x, y = rand(rng, (3,)), rand(rng, (3,))
    a = make(x, device, F64)
    b = make(y, device, F64, requires_grad=False)
    out = (a * b).sum()
    assert out.requires_grad is True
    out.backward()
    assert b.grad is None
    assert_close(grad_of(a), y, F64)
    c = const(x, device, F64)
    assert (c * 2).requires_grad is False


def test_backward_non_scalar_without_gradient_raises(device, rng):
    a = make(rand(rng, (2, 3)), device, F64)
    with pytest.raises((ValueError, RuntimeError)):
        (a * 2).backward()


def test_backward_with_gradient(device, rng, seed):
    x, gy = rand(rng, (2, 3)), rand(rng, (2, 3))
    a = make(x, device, F64)
    y = a.exp() * 3
    y.backward(const(gy, device, F64))
    assert_close(grad_of(a), gy * 3 * np.exp(x), F64, f"seed={seed}")


def test_backward_on_one_element_non_full_reduction(device, rng):
    x = rand(rng, (1, 1))
    a = make(x, device, F64)
    (a * 4).backward()      # one element: seeded with 1
    assert_close(grad_of(a), np.full((1, 1), 4.0), F64)


def test_backward_on_0d(device):
    a = cg.tensor(3.0, device=device, dtype=cg.float64)
    (a * a).backward()
    assert a.grad == [6.0]


def test_grad_through_views_into_shared_leaf(device, rng, seed):
    # the same leaf reached through several different views, then combined
    x = rand(rng, (4, 4))
    a = make(x, device, F64)
    w = rng.standard_normal((4, 4))
    out = a.T + a[::-1] + a.permute(1, 0)[:, ::-1] * a
    ref = lambda v: float(np.sum((v.T + v[::-1] + v.T[:, ::-1] * v) * w))
    (out * const(w, device, F64)).sum().backward()
    assert_close(grad_of(a), numeric_grad(ref, [x], 0), F64, f"seed={seed}", rtol=1e-6, atol=1e-7)


def test_grad_of_deep_chain(device, rng, seed):
    x = rand(rng, (5,)) * 0.1
    a = make(x, device, F64)
    t, v = a, x.copy()
    for i in range(30):
        t = (t * 0.9 + 0.01).tanh() + a * 0.01
        v = np.tanh(v * 0.9 + 0.01) + x * 0.01
    t.sum().backward()
    ref = lambda z: float(np.sum(_deep(z)))
    assert_close(t, v, F64)
    assert_close(grad_of(a), numeric_grad(ref, [x], 0), F64, f"seed={seed}", rtol=1e-6, atol=1e-8)


def _deep(x):
    v = x.copy()
    for i in range(30):
        v = np.tanh(v * 0.9 + 0.01) + x * 0.01
    return v


def test_leaf_used_in_two_losses_and_cg_realize(device, rng, seed):
    x, y = rand(rng, (3, 3)), rand(rng, (3, 3))
    a, b = make(x, device, F64), make(y, device, F64)
    f = ((a @ b) * a).sum()
    f.backward()
    cg.realize(f, a.grad_tensor, b.grad_tensor)
    assert_close(f, np.reshape(((x @ y) * x).sum(), (1,)), F64)
    ga = numeric_grad(lambda p, q: float(((p @ q) * p).sum()), [x, y], 0)
    gb = numeric_grad(lambda p, q: float(((p @ q) * p).sum()), [x, y], 1)
    assert_close(grad_of(a), ga, F64, f"seed={seed}", rtol=1e-6, atol=1e-7)
    assert_close(grad_of(b), gb, F64, f"seed={seed}", rtol=1e-6, atol=1e-7)
