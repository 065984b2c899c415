"""Property tests: random expression graphs over random broadcastable shapes, forward and
backward, against a float64 numpy reference (backward by central finite differences)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import cudagrad as cg
from helpers import as_array, const, make, numeric_grad

KINK = 1e-4   # inputs this close to a kink (relu at 0, a max tie, ...) are skipped
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                      HealthCheck.too_slow, HealthCheck.filter_too_much])


class Ref:
    """numpy float64 ops; records how close the inputs come to a non-differentiable point."""

    def __init__(self):
        self.margin = np.inf

    def near(self, distance):
        if np.size(distance):
            self.margin = min(self.margin, float(np.min(np.abs(distance))))


def top2_gap(x, axis):
    if x.shape[axis] < 2:
        return np.array([np.inf])
    s = np.sort(x, axis=axis)
    return np.take(s, -1, axis=axis) - np.take(s, -2, axis=axis)


# name: (min ndim of the operand, cudagrad fn, numpy fn(ref, x))
UNARY = {
    "neg": (0, lambda t: -t, lambda r, x: -x),
    "tanh": (0, lambda t: t.tanh(), lambda r, x: np.tanh(x)),
    "sigmoid": (0, lambda t: t.sigmoid(), lambda r, x: 1 / (1 + np.exp(-x))),
    "sin": (0, lambda t: t.sin(), lambda r, x: np.sin(x)),
    "cos": (0, lambda t: t.cos(), lambda r, x: np.cos(x)),
    "exp_tanh": (0, lambda t: t.tanh().exp(), lambda r, x: np.exp(np.tanh(x))),
    "log_1p_sq": (0, lambda t: (t * t + 1.0).log(), lambda r, x: np.log(x * x + 1.0)),
    "sqrt_1p_sq": (0, lambda t: (1.0 + t ** 2).sqrt(), lambda r, x: np.sqrt(1.0 + x ** 2)),
    "recip_1p_sq": (0, lambda t: 1.0 / (1.0 + t * t), lambda r, x: 1.0 / (1.0 + x * x)),
    "affine": (0, lambda t: 1.5 * t - 0.25, lambda r, x: 1.5 * x - 0.25),
    "rsub": (0, lambda t: 0.5 - t, lambda r, x: 0.5 - x),
    "relu": (0, lambda t: t.relu(), lambda r, x: (r.near(x), np.maximum(x, 0))[1]),
    "abs": (0, lambda t: t.abs(), lambda r, x: (r.near(x), np.abs(x))[1]),
    "clamp": (0, lambda t: t.clamp(-0.8, 0.6),
              lambda r, x: (r.near(x + 0.8), r.near(x - 0.6), np.clip(x, -0.8, 0.6))[2]),
    "flip_last": (1, lambda t: t[..., ::-1], lambda r, x: x[..., ::-1]),
    "sum_last_keep": (1, lambda t: t.sum(axis=-1, keepdim=True), lambda r, x: x.sum(axis=-1, keepdims=True)),
    "mean_first_keep": (1, lambda t: t.mean(axis=0, keepdim=True), lambda r, x: x.mean(axis=0, keepdims=True)),
    "max_last_keep": (1, lambda t: t.max(axis=-1, keepdim=True),
                      lambda r, x: (r.near(top2_gap(x, -1)), x.max(axis=-1, keepdims=True))[1]),
    "min_first_keep": (1, lambda t: t.min(axis=0, keepdim=True),
                       lambda r, x: (r.near(top2_gap(-x, 0)), x.min(axis=0, keepdims=True))[1]),
    "softmax_last": (1, lambda t: t.softmax(-1),
                     lambda r, x: np.exp(x - x.max(-1, keepdims=True)) / np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)),
    "log_softmax_last": (1, lambda t: t.log_softmax(-1),
                         lambda r, x: x - x.max(-1, keepdims=True) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))),
    "unsq_sq": (0, lambda t: t.unsqueeze(0).squeeze(0), lambda r, x: x),
    "gram_mm": (2, lambda t: (t @ t.transpose(-1, -2)) @ t * 0.2,
                lambda r, x: (x @ np.swapaxes(x, -1, -2)) @ x * 0.2),
    "permute_rev": (0, lambda t: t.permute(*reversed(range(t.ndim))).sin().permute(*reversed(range(t.ndim))),
                    lambda r, x: np.sin(x.transpose()).transpose()),
    "sum_first_unsq": (1, lambda t: t.sum(axis=0).unsqueeze(0), lambda r, x: x.sum(axis=0)[None]),
    "max_last_unsq": (1, lambda t: t.max(axis=-1).unsqueeze(-1),
                      lambda r, x: (r.near(top2_gap(x, -1)), x.max(axis=-1)[..., None])[1]),
    "expand_mean": (0, lambda t: t.unsqueeze(0).expand(3, *t.shape).mean(axis=0) if t.ndim else t * 1.0,
                    lambda r, x: x * 1.0),
    "cat_stride": (1, lambda t: cg.cat([t, t * 2.0], axis=-1)[..., ::2],
                   lambda r, x: np.concatenate([x, x * 2.0], axis=-1)[..., ::2]),
    "stack_mean": (0, lambda t: cg.stack([t, t.sin()], 0).mean(axis=0), lambda r, x: (x + np.sin(x)) / 2),
    "softmax_first": (1, lambda t: t.softmax(0),
                      lambda r, x: np.exp(x - x.max(0, keepdims=True)) / np.exp(x - x.max(0, keepdims=True)).sum(0, keepdims=True)),
    "center_last": (1, lambda t: t - t.mean(axis=-1, keepdim=True), lambda r, x: x - x.mean(axis=-1, keepdims=True)),
    "normalize_last": (1, lambda t: t / ((t * t).mean(axis=-1, keepdim=True) + 1.0).sqrt(),
                       lambda r, x: x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + 1.0)),

    "transpose_back": (2, lambda t: (t.transpose(-1, -2) * 1.0).transpose(-1, -2), lambda r, x: x),
}

BINARY = {
    "add": (lambda a, b: a + b, lambda r, x, y: x + y),
    "sub": (lambda a, b: a - b, lambda r, x, y: x - y),
    "mul": (lambda a, b: a * b, lambda r, x, y: x * y),
    "div_safe": (lambda a, b: a / (b * b + 0.5), lambda r, x, y: x / (y * y + 0.5)),
    "pow_safe": (lambda a, b: (a * a + 0.5) ** b.tanh(), lambda r, x, y: (x * x + 0.5) ** np.tanh(y)),
    "maximum": (lambda a, b: a.maximum(b), lambda r, x, y: (r.near(x - y), np.maximum(x, y))[1]),
    "minimum": (lambda a, b: a.minimum(b), lambda r, x, y: (r.near(x - y), np.minimum(x, y))[1]),
    "where_gt": (lambda a, b: cg.where(a > b, a * 2.0, b),
                 lambda r, x, y: (r.near(x - y), np.where(x > y, x * 2.0, y))[1]),
}


@st.composite
def programs(draw, max_dim=4, max_steps=6):
    rank = draw(st.integers(1, 3))
    base = tuple(draw(st.lists(st.integers(1, max_dim), min_size=rank, max_size=rank)))
    n_leaves = draw(st.integers(1, 3))
    leaves = []
    for _ in range(n_leaves):
        keep = draw(st.integers(0 if rank > 1 else 1, rank))
        dims = base[rank - keep:]
        dims = tuple(1 if draw(st.booleans()) and draw(st.booleans()) else d for d in dims)
        leaves.append(dims)
    steps = []
    n_nodes = n_leaves
    ndims = [len(s) for s in leaves]
    for _ in range(draw(st.integers(1, max_steps))):
        if n_nodes >= 2 and draw(st.booleans()):
            name = draw(st.sampled_from(sorted(BINARY)))
            i = draw(st.integers(0, n_nodes - 1))
            j = draw(st.integers(0, n_nodes - 1))
            steps.append(("binary", name, (i, j)))
            ndims.append(max(ndims[i], ndims[j]))
        else:
            i = draw(st.integers(0, n_nodes - 1))
            names = sorted(n for n, spec in UNARY.items() if spec[0] <= ndims[i])
            name = draw(st.sampled_from(names))
            steps.append(("unary", name, (i,)))
            ndims.append(ndims[i])
        n_nodes += 1
    seed = draw(st.integers(0, 2**32 - 1))
    return leaves, steps, seed


def evaluate(steps, leaves, unary, binary, ref=None):
    """Run the program; the output is the sum of every node that no later step used."""
    nodes = list(leaves)
    used = set()
    for kind, name, args in steps:
        used.update(args)
        if kind == "unary":
            nodes.append(unary(name, nodes[args[0]]))
        else:
            nodes.append(binary(name, nodes[args[0]], nodes[args[1]]))
    sinks = [n for i, n in enumerate(nodes) if i not in used]
    out = sinks[0]
    for s in sinks[1:]:
        out = out + s
    return out


def numpy_program(steps, ref):
    def fn(*xs):
        return evaluate(steps, xs, lambda n, x: UNARY[n][2](ref, x), lambda n, x, y: BINARY[n][1](ref, x, y))
    return fn


def cg_program(steps):
    def fn(*ts):
        return evaluate(steps, ts, lambda n, t: UNARY[n][1](t), lambda n, a, b: BINARY[n][0](a, b))
    return fn


def describe(leaves, steps, seed):
    return f"leaves={leaves} steps={steps} seed={seed}"


@settings(max_examples=50, **SETTINGS)
@given(program=programs())
def test_random_graph_forward_and_backward_float64(device, program):
    check_program_float64(device, program)


@pytest.mark.fuzz
@settings(max_examples=1500, **SETTINGS)
@given(program=programs(max_dim=9, max_steps=10))
def test_fuzz_random_graphs_float64(device, program):
    """Long run (pytest -m fuzz): bigger shapes and longer programs."""
    check_program_float64(device, program, fd_limit=300)


def check_program_float64(device, program, fd_limit=None):
    leaf_shapes, steps, seed = program
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s) for s in leaf_shapes]
    ref = Ref()
    expected = np.asarray(numpy_program(steps, ref)(*arrays), dtype=np.float64)
    assume(ref.margin > KINK)
    assume(np.all(np.isfinite(expected)) and np.max(np.abs(expected), initial=0) < 1e3)
    info = describe(leaf_shapes, steps, seed)

    leaves = [make(x, device, "float64") for x in arrays]
    out = cg_program(steps)(*leaves)
    assert out.shape == expected.shape, info
    np.testing.assert_allclose(as_array(out), expected, rtol=1e-9, atol=1e-10, err_msg=info)

    weights = rng.standard_normal(expected.shape)
    (out * const(weights, device, "float64")).sum().backward()
    loss = lambda *xs: float(np.sum(numpy_program(steps, Ref())(*xs) * weights))
    for i, (leaf, x) in enumerate(zip(leaves, arrays)):
        if fd_limit is not None and x.size > fd_limit:
            continue
        want = numeric_grad(loss, arrays, i)
        got = leaf.grad
        if got is None:
            assert np.all(want == 0), f"input {i} got no gradient: {info}"
            continue
        got = np.asarray(got, dtype=np.float64).reshape(x.shape)
        scale = max(1.0, float(np.max(np.abs(want), initial=0)))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * scale, err_msg=f"grad {i}: {info}")


@settings(max_examples=40, **SETTINGS)
@given(program=programs())
def test_random_graph_forward_float32(device, program):
    leaf_shapes, steps, seed = program
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s).astype(np.float32).astype(np.float64) for s in leaf_shapes]
    ref = Ref()
    expected = np.asarray(numpy_program(steps, ref)(*arrays), dtype=np.float64)
    assume(ref.margin > 1e-2)   # float32 rounding may move a value across a kink
    assume(np.all(np.isfinite(expected)) and np.max(np.abs(expected), initial=0) < 1e3)
    out = cg_program(steps)(*[make(x, device, "float32") for x in arrays])
    scale = max(1.0, float(np.max(np.abs(expected), initial=0)))
    np.testing.assert_allclose(as_array(out), expected, rtol=1e-4, atol=1e-5 * scale,
                               err_msg=describe(leaf_shapes, steps, seed))


@settings(max_examples=40, **SETTINGS)
@given(shapes=st.lists(st.lists(st.integers(1, 4), min_size=0, max_size=3), min_size=2, max_size=2),
       seed=st.integers(0, 2**32 - 1))
def test_broadcast_add_mul_matches_numpy_or_raises(device, shapes, seed):
    """Any pair of shapes: broadcasts exactly as numpy does, or fails at build time with ValueError."""
    a_shape, b_shape = (tuple(s) for s in shapes)
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    try:
        expected = x * y + x
    except ValueError:
        with pytest.raises(ValueError):
            make(x, device, "float64") * make(y, device, "float64")
        return
    a, b = make(x, device, "float64"), make(y, device, "float64")
    out = a * b + a
    assert out.shape == expected.shape
    np.testing.assert_allclose(as_array(out), expected, rtol=1e-12, atol=1e-12)
    out.sum().backward()
    np.testing.assert_allclose(np.asarray(a.grad).reshape(a_shape), _reduce_to(y + 1.0, a_shape, expected.shape),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(b.grad).reshape(b_shape),
                               _reduce_to(np.broadcast_to(x, expected.shape), b_shape, expected.shape),
                               rtol=1e-12, atol=1e-12)


def _reduce_to(g, shape, out_shape):
    """Sum a broadcast gradient back to `shape` (what autograd must do)."""
    g = np.broadcast_to(g, out_shape)
    lead = len(out_shape) - len(shape)
    g = g.sum(axis=tuple(range(lead))) if lead else g
    axes = tuple(i for i, d in enumerate(shape) if d == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else np.array(g)


@settings(max_examples=40, **SETTINGS)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
       data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_random_slicing_matches_numpy(device, shape, data, seed):
    shape = tuple(shape)
    index = []
    for d in shape:
        kind = data.draw(st.sampled_from(["int", "slice", "full"]))
        if kind == "int":
            index.append(data.draw(st.integers(-d, d - 1)))
        elif kind == "slice":
            start = data.draw(st.none() | st.integers(-d - 1, d + 1))
            stop = data.draw(st.none() | st.integers(-d - 1, d + 1))
            step = data.draw(st.none() | st.sampled_from([1, 2, 3, -1, -2]))
            index.append(slice(start, stop, step))
        else:
            index.append(slice(None))
    index = tuple(index)
    x = np.random.default_rng(seed).standard_normal(shape)
    expected = x[index]
    assume(expected.size > 0)
    t = make(x, device, "float64")
    out = t[index]
    assert out.shape == expected.shape, f"{shape}[{index}]"
    np.testing.assert_array_equal(as_array(out), expected, err_msg=f"{shape}[{index}]")
    w = np.random.default_rng(seed + 1).standard_normal(expected.shape)
    (out * const(w, device, "float64")).sum().backward()
    want = np.zeros_like(x)
    want[index] += w            # basic indexing picks each element at most once
    np.testing.assert_allclose(np.asarray(t.grad).reshape(shape), want, rtol=1e-12, atol=0,
                               err_msg=f"grad of {shape}[{index}]")


@settings(max_examples=30, **SETTINGS)
@given(program=programs())
def test_random_graph_backward_float32(device, program):
    """float32 gradients against float64 finite differences, at float32 tolerance."""
    leaf_shapes, steps, seed = program
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s).astype(np.float32).astype(np.float64) for s in leaf_shapes]
    ref = Ref()
    expected = np.asarray(numpy_program(steps, ref)(*arrays), dtype=np.float64)
    assume(ref.margin > 1e-2)
    assume(np.all(np.isfinite(expected)) and np.max(np.abs(expected), initial=0) < 1e2)
    info = describe(leaf_shapes, steps, seed)
    leaves = [make(x, device, "float32") for x in arrays]
    out = cg_program(steps)(*leaves)
    weights = rng.standard_normal(expected.shape)
    (out * const(weights, device, "float32")).sum().backward()
    loss = lambda *xs: float(np.sum(numpy_program(steps, Ref())(*xs) * weights))
    for i, (leaf, x) in enumerate(zip(leaves, arrays)):
        want = numeric_grad(loss, arrays, i)
        got = leaf.grad
        if got is None:
            assert np.all(want == 0), f"input {i} got no gradient: {info}"
            continue
        got = np.asarray(got, dtype=np.float64).reshape(x.shape)
        scale = max(1.0, float(np.max(np.abs(want), initial=0)))
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3 * scale, err_msg=f"grad {i}: {info}")
