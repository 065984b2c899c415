"""Every op of API.md against numpy (float64 reference) on fresh random inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest

import cudagrad as cg
from helpers import as_array, assert_close, dtype_of, grad_of, launched, make, np_dtype_of

# ---------------------------------------------------------------- shapes

BINARY_SHAPES = [
    ((3, 4), (3, 4)),
    ((3, 4), (4,)),
    ((4,), (3, 4)),
    ((3, 1), (1, 4)),
    ((2, 3, 4), (3, 1)),
    ((2, 1, 4), (3, 1)),
    ((1,), (5,)),
    ((1, 1), (2, 3)),
    ((), (2, 3)),
    ((2, 3), ()),
    ((7,), (7,)),
    ((2, 1, 3, 1), (4, 1, 5)),
]
UNARY_SHAPES = [(), (1,), (7,), (3, 4), (2, 1, 5), (2, 3, 4)]


def rand(rng, shape, kind="any"):
    x = rng.standard_normal(shape)
    if kind == "pos":
        x = np.abs(x) + 0.1
    elif kind == "away0":
        x = np.sign(x) * (np.abs(x) + 0.1)
    return np.asarray(x, dtype=np.float64)


def rounded(x, dtype):
    """The float64 value of x after a round trip through dtype (what the tensor really holds)."""
    return np.asarray(x, dtype=np_dtype_of(dtype)).astype(np.float64)


# ---------------------------------------------------------------- binary arithmetic

BINARY_OPS = {
    "add": (lambda x, y: x + y, lambda x, y: x + y, "any"),
    "sub": (lambda x, y: x - y, lambda x, y: x - y, "any"),
    "mul": (lambda x, y: x * y, lambda x, y: x * y, "any"),
    "div": (lambda x, y: x / y, lambda x, y: x / y, "away0"),
    "pow": (lambda x, y: x ** y, lambda x, y: x ** y, "pos"),
    "maximum": (lambda x, y: x.maximum(y), np.maximum, "any"),
    "minimum": (lambda x, y: x.minimum(y), np.minimum, "any"),
}


@pytest.mark.parametrize("op", sorted(BINARY_OPS))
@pytest.mark.parametrize("shapes", BINARY_SHAPES, ids=str)
def test_binary(device, dtype, rng, seed, op, shapes):
    cg_fn, np_fn, kind = BINARY_OPS[op]
    x = rounded(rand(rng, shapes[0], "pos" if op == "pow" else "any"), dtype)
    y = rounded(rand(rng, shapes[1], kind if op != "pow" else "any"), dtype)
    out = cg_fn(make(x, device, dtype), make(y, device, dtype))
    assert out.dtype == dtype_of(dtype)
    assert out.shape == np.broadcast_shapes(shapes[0], shapes[1])
    assert_close(out, np_fn(x, y), dtype, f"{op} {shapes} seed={seed}")


SCALAR_CASES = {
    "t+s": (lambda t: t + 2.5, lambda x: x + 2.5, "any"),
    "s+t": (lambda t: 2.5 + t, lambda x: 2.5 + x, "any"),
    "t+int": (lambda t: t + 2, lambda x: x + 2, "any"),
    "t-s": (lambda t: t - 1.5, lambda x: x - 1.5, "any"),
    "s-t": (lambda t: 1.5 - t, lambda x: 1.5 - x, "any"),
    "t*s": (lambda t: t * 3.0, lambda x: x * 3.0, "any"),
    "s*t": (lambda t: 3.0 * t, lambda x: 3.0 * x, "any"),
    "int*t": (lambda t: 3 * t, lambda x: 3 * x, "any"),
    "t/s": (lambda t: t / 4.0, lambda x: x / 4.0, "any"),
    "s/t": (lambda t: 2.0 / t, lambda x: 2.0 / x, "away0"),
    "t**2": (lambda t: t ** 2, lambda x: x ** 2, "any"),
    "t**3": (lambda t: t ** 3, lambda x: x ** 3, "any"),
    "t**0.5": (lambda t: t ** 0.5, lambda x: x ** 0.5, "pos"),
    "t**-1": (lambda t: t ** -1.0, lambda x: x ** -1.0, "away0"),
    "s**t": (lambda t: 2.0 ** t, lambda x: 2.0 ** x, "any"),
    "neg": (lambda t: -t, lambda x: -x, "any"),
}


@pytest.mark.parametrize("case", sorted(SCALAR_CASES))
@pytest.mark.parametrize("shape", [(), (5,), (3, 4)], ids=str)
def test_scalar_operands(device, dtype, rng, seed, case, shape):
    cg_fn, np_fn, kind = SCALAR_CASES[case]
    x = rounded(rand(rng, shape, kind), dtype)
    out = cg_fn(make(x, device, dtype))
    assert out.dtype == dtype_of(dtype), "a Python scalar must not change the tensor's dtype"
    assert out.shape == shape
    assert_close(out, np_fn(x), dtype, f"{case} seed={seed}")


def test_float32_float64_promotes(device, rng):
    x, y = rand(rng, (3,)), rand(rng, (3,))
    out = make(x, device, "float32") + make(y, device, "float64")
    assert out.dtype == cg.float64
    assert_close(out, rounded(x, "float32") + y, "float64")


# ---------------------------------------------------------------- matmul

MATMUL_SHAPES = [
    ((3, 4), (4, 5)),
    ((1, 1), (1, 1)),
    ((1, 7), (7, 1)),
    ((5, 1), (1, 3)),
    ((2, 3, 4), (4, 5)),
    ((3, 4), (2, 4, 5)),
    ((2, 3, 4), (2, 4, 5)),
    ((2, 1, 3, 4), (5, 4, 2)),
    ((1, 3, 4), (6, 4, 2)),
    ((17, 33), (33, 9)),
]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul(device, dtype, rng, seed, shapes):
    x = rounded(rand(rng, shapes[0]), dtype)
    y = rounded(rand(rng, shapes[1]), dtype)
    out = make(x, device, dtype) @ make(y, device, dtype)
    expected = x @ y
    assert out.shape == expected.shape
    assert_close(out, expected, dtype, f"matmul {shapes} seed={seed}")


# ---------------------------------------------------------------- comparisons

COMPARISONS = {
    "==": (lambda a, b: a == b, np.equal),
    "!=": (lambda a, b: a != b, np.not_equal),
    "<": (lambda a, b: a < b, np.less),
    "<=": (lambda a, b: a <= b, np.less_equal),
    ">": (lambda a, b: a > b, np.greater),
    ">=": (lambda a, b: a >= b, np.greater_equal),
}


@pytest.mark.parametrize("op", sorted(COMPARISONS))
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (4,)), ((3, 1), (1, 4)), ((), (5,))], ids=str)
def test_comparison(device, dtype, rng, seed, op, shapes):
    cg_fn, np_fn = COMPARISONS[op]
    # small integers so that equality actually happens
    x = rng.integers(0, 3, shapes[0]).astype(np.float64)
    y = rng.integers(0, 3, shapes[1]).astype(np.float64)
    out = cg_fn(make(x, device, dtype), make(y, device, dtype))
    assert out.dtype == cg.float32
    assert out.requires_grad is False
    assert out.shape == np.broadcast_shapes(shapes[0], shapes[1])
    assert_close(out, np_fn(x, y).astype(np.float64), "float64", f"{op} seed={seed}")


@pytest.mark.parametrize("op", sorted(COMPARISONS))
def test_comparison_with_scalar(device, rng, seed, op):
    cg_fn, np_fn = COMPARISONS[op]
    x = rng.integers(-2, 3, (4, 5)).astype(np.float64)
    out = cg_fn(make(x, device), 0.0)
    assert out.dtype == cg.float32 and out.requires_grad is False
    assert_close(out, np_fn(x, 0.0).astype(np.float64), "float64", f"{op} seed={seed}")


# ---------------------------------------------------------------- unary elementwise

UNARY_OPS = {
    "exp": (lambda t: t.exp(), np.exp, "any"),
    "log": (lambda t: t.log(), np.log, "pos"),
    "sqrt": (lambda t: t.sqrt(), np.sqrt, "pos"),
    "abs": (lambda t: t.abs(), np.abs, "any"),
    "relu": (lambda t: t.relu(), lambda x: np.maximum(x, 0.0), "any"),
    "sigmoid": (lambda t: t.sigmoid(), lambda x: 1.0 / (1.0 + np.exp(-x)), "any"),
    "tanh": (lambda t: t.tanh(), np.tanh, "any"),
    "sin": (lambda t: t.sin(), np.sin, "any"),
    "cos": (lambda t: t.cos(), np.cos, "any"),
    "clamp": (lambda t: t.clamp(-0.5, 0.7), lambda x: np.clip(x, -0.5, 0.7), "any"),
    "neg": (lambda t: -t, np.negative, "any"),
}


@pytest.mark.parametrize("op", sorted(UNARY_OPS))
@pytest.mark.parametrize("shape", UNARY_SHAPES, ids=str)
def test_unary(device, dtype, rng, seed, op, shape):
    cg_fn, np_fn, kind = UNARY_OPS[op]
    x = rounded(rand(rng, shape, kind) * 2.0, dtype)
    out = cg_fn(make(x, device, dtype))
    assert out.dtype == dtype_of(dtype)
    assert_close(out, np_fn(x), dtype, f"{op} {shape} seed={seed}")


def test_sigmoid_exp_extremes(device, dtype):
    x = np.array([-100.0, -30.0, 0.0, 30.0, 100.0])
    assert_close(make(x, device, dtype).sigmoid(), 1.0 / (1.0 + np.exp(-x)), dtype, "sigmoid extremes")
    assert_close(make(x, device, dtype).tanh(), np.tanh(x), dtype, "tanh extremes")


def test_where(device, dtype, rng, seed):
    c = rand(rng, (3, 1))
    x = rounded(rand(rng, (3, 4)), dtype)
    y = rounded(rand(rng, (4,)), dtype)
    cond = make(c, device, dtype) > 0.0
    out = cg.where(cond, make(x, device, dtype), make(y, device, dtype))
    assert out.shape == (3, 4)
    assert_close(out, np.where(c > 0, x, y), dtype, f"where seed={seed}")


def test_where_scalar_branches_and_bool_like_cond(device, rng, seed):
    x = rand(rng, (2, 5))
    t = make(x, device)
    assert_close(cg.where(t > 0.0, t, t * 0.1), np.where(x > 0, x, x * 0.1), "float32", f"seed={seed}")


# ---------------------------------------------------------------- reductions

REDUCTIONS = {
    "sum": np.sum,
    "mean": np.mean,
    "max": np.max,
    "min": np.min,
}
AXES = [None, 0, 1, 2, -1, -2, -3, (0, 2), (1, 2), (0, 1, 2), (-1, 0)]


@pytest.mark.parametrize("op", sorted(REDUCTIONS))
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("keepdim", [False, True])
def test_reduction(device, dtype, rng, seed, op, axis, keepdim):
    x = rounded(rand(rng, (3, 4, 5)), dtype)
    t = make(x, device, dtype)
    out = getattr(t, op)(axis=axis, keepdim=keepdim)
    expected = REDUCTIONS[op](x, axis=axis, keepdims=keepdim)
    if axis is None and not keepdim:
        expected = np.reshape(expected, (1,))       # full reductions have shape [1]
    assert out.shape == expected.shape, f"{op}(axis={axis}, keepdim={keepdim})"
    assert_close(out, expected, dtype, f"{op} axis={axis} keepdim={keepdim} seed={seed}")


@pytest.mark.parametrize("op", sorted(REDUCTIONS))
def test_full_reduction_shapes(device, rng, op):
    x = rand(rng, (2, 3, 4))
    t = make(x, device)
    full = getattr(t, op)()
    assert full.shape == (1,) and full.size == [1]
    kept = getattr(t, op)(keepdim=True)
    assert kept.shape == (1, 1, 1) and kept.size == [1, 1, 1]
    assert_close(full, np.reshape(REDUCTIONS[op](x), (1,)), "float32", op)
    assert_close(kept, REDUCTIONS[op](x, keepdims=True), "float32", op)


@pytest.mark.parametrize("op", sorted(REDUCTIONS))
@pytest.mark.parametrize("shape", [(1,), (7,), (1, 1), (5, 1), (1, 6)], ids=str)
def test_reduction_small_and_size1(device, rng, seed, op, shape):
    x = rand(rng, shape)
    t = make(x, device)
    assert_close(getattr(t, op)(axis=0), REDUCTIONS[op](x, axis=0), "float32", f"{op} seed={seed}")
    assert_close(getattr(t, op)(axis=-1, keepdim=True), REDUCTIONS[op](x, axis=-1, keepdims=True),
                 "float32", f"{op} seed={seed}")


def test_sum_of_many_float32_stays_accurate(device, rng, seed):
    x = rng.random(1_000_000).astype(np.float32)
    out = make(x, device).sum()
    assert_close(out, np.reshape(x.astype(np.float64).sum(), (1,)), "float32", f"seed={seed}", rtol=1e-5)


def test_reduction_of_expression(device, dtype, rng, seed):
    x, y = rand(rng, (4, 6)), rand(rng, (4, 6))
    out = (make(x, device, dtype) * make(y, device, dtype) + 1.0).exp().sum(axis=1)
    assert_close(out, np.exp(x * y + 1.0).sum(axis=1), dtype, f"seed={seed}", rtol=1e-4 if dtype == "float32" else 1e-10)


@pytest.mark.parametrize("axis", [0, 1, -1, 2])
def test_argmax(device, dtype, rng, seed, axis):
    x = rand(rng, (3, 4, 5))
    out = make(x, device, dtype).argmax(axis)
    assert out.requires_grad is False
    assert out.shape == np.argmax(x, axis=axis).shape
    np.testing.assert_array_equal(np.asarray(out.numpy()), np.argmax(x, axis=axis), err_msg=f"seed={seed}")


def test_argmax_dtype_is_int32(device, rng):
    out = make(rand(rng, (3, 4)), device).argmax(1)
    assert out.dtype == cg.int32


# ---------------------------------------------------------------- movement

def test_reshape(device, dtype, rng, seed):
    x = rounded(rand(rng, (2, 3, 4)), dtype)
    t = make(x, device, dtype)
    for shape in [(24,), (4, 6), (4, -1), (-1, 3), (2, 1, 12), (1, 24, 1), (-1,), (2, 3, 2, 2)]:
        out = t.reshape(*shape)
        expected = x.reshape(shape)
        assert out.shape == expected.shape
        assert_close(out, expected, dtype, f"reshape {shape} seed={seed}")


def test_reshape_tuple_argument(device, rng):
    x = rand(rng, (2, 6))
    out = make(x, device).reshape((3, -1))
    assert_close(out, x.reshape(3, 4), "float32", "reshape((3, -1))")


def test_reshape_after_permute(device, rng, seed):
    # a reshape of a non-contiguous view must still be right
    x = rand(rng, (2, 3, 4))
    out = make(x, device).permute(2, 0, 1).reshape(4, 6)
    assert_close(out, x.transpose(2, 0, 1).reshape(4, 6), "float32", f"seed={seed}")


@pytest.mark.parametrize("dims", [(0, 1, 2), (2, 0, 1), (1, 2, 0), (2, 1, 0), (0, 2, 1)], ids=str)
def test_permute(device, dtype, rng, seed, dims):
    x = rounded(rand(rng, (2, 3, 4)), dtype)
    assert_close(make(x, device, dtype).permute(*dims), x.transpose(dims), dtype, f"seed={seed}")


def test_transpose_and_T(device, dtype, rng, seed):
    x = rounded(rand(rng, (2, 3, 4)), dtype)
    t = make(x, device, dtype)
    assert_close(t.transpose(), np.swapaxes(x, -2, -1), dtype, f"transpose() seed={seed}")
    assert_close(t.transpose(0, 2), np.swapaxes(x, 0, 2), dtype, f"transpose(0,2) seed={seed}")
    assert_close(t.transpose(-1, 0), np.swapaxes(x, -1, 0), dtype, f"transpose(-1,0) seed={seed}")
    m = rounded(rand(rng, (3, 5)), dtype)
    assert_close(make(m, device, dtype).T, m.T, dtype, f"T seed={seed}")


def test_expand(device, dtype, rng, seed):
    x = rounded(rand(rng, (3, 1)), dtype)
    t = make(x, device, dtype)
    assert_close(t.expand(3, 4), np.broadcast_to(x, (3, 4)), dtype, f"seed={seed}")
    assert_close(t.expand(2, 3, 4), np.broadcast_to(x, (2, 3, 4)), dtype, f"seed={seed}")
    assert_close(t.expand(-1, 5), np.broadcast_to(x, (3, 5)), dtype, f"expand(-1, 5) seed={seed}")


def test_squeeze_unsqueeze_flatten(device, dtype, rng, seed):
    x = rounded(rand(rng, (2, 1, 3, 1)), dtype)
    t = make(x, device, dtype)
    assert_close(t.squeeze(1), x.squeeze(1), dtype, f"squeeze(1) seed={seed}")
    assert_close(t.squeeze(-1), x.squeeze(-1), dtype, f"squeeze(-1) seed={seed}")
    assert_close(t.unsqueeze(0), x[None], dtype, f"unsqueeze(0) seed={seed}")
    assert_close(t.unsqueeze(-1), x[..., None], dtype, f"unsqueeze(-1) seed={seed}")
    assert_close(t.unsqueeze(2), np.expand_dims(x, 2), dtype, f"unsqueeze(2) seed={seed}")
    assert_close(t.flatten(), x.reshape(-1), dtype, f"flatten() seed={seed}")
    assert_close(t.flatten(1), x.reshape(2, -1), dtype, f"flatten(1) seed={seed}")
    assert_close(t.flatten(2), x.reshape(2, 1, -1), dtype, f"flatten(2) seed={seed}")


INDICES = [
    (1,),
    (-1,),
    (slice(1, 3),),
    (slice(None, None, 2),),
    (slice(None, None, -1),),
    (slice(3, 0, -2),),
    (slice(None, None, -3),),
    (slice(-2, None),),
    (slice(None), 1),
    (slice(None), slice(None, None, -1), 2),
    (None,),
    (slice(None), None, slice(2, None)),
    (Ellipsis, 1),
    (Ellipsis, slice(None, None, -2)),
    (1, Ellipsis, slice(None, None, -1)),
    (0, 0, 0),
    (-1, -2, -3),
    (slice(1, 10),),
    (slice(10, None),),  # empty along axis 0 (numpy and PyTorch allow it)
    (None, Ellipsis, None),
    (slice(None), slice(1, 3), slice(None, None, 3)),
]


@pytest.mark.parametrize("index", INDICES, ids=str)
def test_indexing(device, dtype, rng, seed, index):
    x = rounded(rand(rng, (4, 3, 5)), dtype)
    out = make(x, device, dtype)[index]
    expected = x[index]
    assert out.shape == expected.shape, f"index {index}"
    assert_close(out, expected, dtype, f"index {index} seed={seed}")


def test_indexing_chain_of_views(device, rng, seed):
    x = rand(rng, (6, 8))
    t = make(x, device)
    out = t[::-1][1:5].T[::2, 1:]
    assert_close(out, x[::-1][1:5].T[::2, 1:], "float32", f"seed={seed}")


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_cat(device, dtype, rng, seed, axis):
    shapes = {0: [(2, 3), (4, 3), (1, 3)], 1: [(2, 1), (2, 3), (2, 2)], -1: [(2, 1), (2, 3), (2, 2)]}[axis]
    xs = [rounded(rand(rng, s), dtype) for s in shapes]
    out = cg.cat([make(x, device, dtype) for x in xs], axis=axis)
    assert_close(out, np.concatenate(xs, axis=axis), dtype, f"cat axis={axis} seed={seed}")
    out2 = cg.cat([make(x, device, dtype) for x in xs], axis)
    assert_close(out2, np.concatenate(xs, axis=axis), dtype, f"cat positional axis={axis} seed={seed}")


def test_cat_of_views_and_expressions(device, rng, seed):
    x = rand(rng, (3, 4))
    t = make(x, device)
    out = cg.cat([t.T, (t * 2).T[::-1]], axis=0)
    assert_close(out, np.concatenate([x.T, (x * 2).T[::-1]], axis=0), "float32", f"seed={seed}")


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_stack(device, dtype, rng, seed, axis):
    xs = [rounded(rand(rng, (2, 3)), dtype) for _ in range(3)]
    out = cg.stack([make(x, device, dtype) for x in xs], axis=axis)
    assert_close(out, np.stack(xs, axis=axis), dtype, f"stack axis={axis} seed={seed}")


def np_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_log_softmax(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("axis", [None, 0, 1, -1, -2])
@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 4), (1, 7), (4, 1)], ids=str)
def test_softmax_log_softmax(device, dtype, rng, seed, axis, shape):
    x = rounded(rand(rng, shape) * 3.0, dtype)
    t = make(x, device, dtype)
    ax = -1 if axis is None else axis
    sm = t.softmax() if axis is None else t.softmax(axis)
    lsm = t.log_softmax() if axis is None else t.log_softmax(axis=axis)
    assert_close(sm, np_softmax(x, ax), dtype, f"softmax axis={axis} seed={seed}")
    assert_close(lsm, np_log_softmax(x, ax), dtype, f"log_softmax axis={axis} seed={seed}")


def test_softmax_is_stable_for_large_inputs(device, dtype, rng, seed):
    x = rand(rng, (3, 6)) * 200.0
    t = make(x, device, dtype)
    sm = as_array(t.softmax(-1))
    lsm = as_array(t.log_softmax(-1))
    assert np.all(np.isfinite(sm)) and np.all(np.isfinite(lsm)), f"seed={seed}"
    assert_close(sm, np_softmax(rounded(x, dtype), -1), dtype, f"seed={seed}", atol=1e-6)
    assert_close(lsm, np_log_softmax(rounded(x, dtype), -1), dtype, f"seed={seed}", rtol=1e-4)


# ---------------------------------------------------------------- constructors

def test_zeros_ones_full(device, dtype):
    for shape in [(2, 3), [4], (1, 2, 1)]:
        z = cg.zeros(shape, device=device, dtype=dtype_of(dtype))
        o = cg.ones(shape, device=device, dtype=dtype_of(dtype))
        f = cg.full(shape, 2.5, device=device, dtype=dtype_of(dtype))
        for t, value in ((z, 0.0), (o, 1.0), (f, 2.5)):
            assert t.shape == tuple(shape)
            assert t.dtype == dtype_of(dtype)
            assert_close(t, np.full(tuple(shape), value), dtype)


def test_constructor_defaults():
    t = cg.zeros((2, 3))
    assert t.dtype == cg.float32
    assert t.requires_grad is True
    assert str(t.device).startswith(cg.default_device())
    assert cg.ones([2], requires_grad=False).requires_grad is False


def test_arange(device):
    t = cg.arange(7, device=device)
    np.testing.assert_array_equal(np.asarray(t.numpy()), np.arange(7))
    assert t.shape == (7,)
    t64 = cg.arange(5, device=device, dtype=cg.float64)
    assert t64.dtype == cg.float64
    assert_close(t64, np.arange(5.0), "float64")


def test_rand_randn(device, dtype):
    r = as_array(cg.rand((200, 50), device=device, dtype=dtype_of(dtype)))
    assert r.shape == (200, 50)
    assert r.min() >= 0.0 and r.max() < 1.0
    assert abs(r.mean() - 0.5) < 0.02 and abs(r.std() - math.sqrt(1 / 12)) < 0.02
    n = as_array(cg.randn([200, 50], device=device, dtype=dtype_of(dtype)))
    assert n.shape == (200, 50)
    assert abs(n.mean()) < 0.05 and abs(n.std() - 1.0) < 0.05
    assert len(np.unique(n)) > 9000, "randn values should not repeat"


def test_manual_seed_reproducible(device):
    cg.manual_seed(1234)
    a = as_array(cg.randn((4, 5), device=device))
    b = as_array(cg.rand((3,), device=device))
    cg.manual_seed(1234)
    a2 = as_array(cg.randn((4, 5), device=device))
    b2 = as_array(cg.rand((3,), device=device))
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(b, b2)
    cg.manual_seed(4321)
    a3 = as_array(cg.randn((4, 5), device=device))
    assert not np.array_equal(a, a3)
    # successive draws differ
    assert not np.array_equal(as_array(cg.randn((4, 5), device=device)), a3)


def test_from_numpy(device, rng):
    x64 = rand(rng, (3, 4))
    t = cg.from_numpy(x64)
    assert t.dtype == cg.float64 and t.shape == (3, 4)
    assert_close(t, x64, "float64")
    x32 = x64.astype(np.float32)
    t32 = cg.from_numpy(x32)
    assert t32.dtype == cg.float32
    assert_close(t32, x32, "float32")
    td = cg.from_numpy(x32, device=device)
    assert_close(td, x32, "float32")


def test_tensor_shape_data_form(device):
    t = cg.tensor([2, 3], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], device=device)
    assert t.shape == (2, 3) and t.size == [2, 3] and t.ndim == 2 and t.numel() == 6
    assert t.dtype == cg.float32
    assert t.data == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert t.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert t.requires_grad is True and t.is_leaf
    assert t.grad is None and t.grad_tensor is None
    e = cg.tensor([0], [], device=device)
    assert e.shape == (0,) and e.data == []


def test_tensor_nested_lists(device):
    t = cg.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], device=device)
    assert t.shape == (3, 2)
    assert t.data == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    t3 = cg.tensor([[[1.5]], [[2.5]]], device=device)
    assert t3.shape == (2, 1, 1)


def test_tensor_scalar_is_0d(device):
    t = cg.tensor(3.5, device=device)
    assert t.shape == () and t.size == [] and t.ndim == 0 and t.numel() == 1
    assert t.item() == 3.5
    assert float(t) == 3.5
    assert t.data == [3.5]
    assert np.asarray(t.numpy()).shape == ()
    assert_close(t * 2.0, np.float64(7.0), "float32")


def test_tensor_from_numpy_array_argument(device, rng):
    x = rand(rng, (2, 3, 1))
    t = cg.tensor(x, device=device, dtype=cg.float64)
    assert t.shape == (2, 3, 1)
    assert_close(t, x, "float64")


def test_data_types_and_float64_exactness(device):
    values = [0.1, 1.0 / 3.0, 2.0 ** -40, 123456789.123456789]
    t = cg.tensor([4], values, device=device, dtype=cg.float64)
    assert t.data == values, "float64 data must round-trip exactly"
    t32 = cg.tensor([4], values, device=device)
    assert t32.data == [float(np.float32(v)) for v in values]
    assert all(type(v) is float for v in t32.data)


# ---------------------------------------------------------------- conversion and realization

def test_numpy_tolist_item_float(device, dtype, rng):
    x = rounded(rand(rng, (2, 3)), dtype)
    t = make(x, device, dtype) * 1.0
    arr = t.numpy()
    assert isinstance(arr, np.ndarray) and arr.shape == (2, 3)
    assert arr.dtype == np_dtype_of(dtype)
    assert np.allclose(t.tolist(), x.tolist())
    assert isinstance(t.tolist(), list) and isinstance(t.tolist()[0], list)
    s = t.sum()
    assert isinstance(s.item(), float)
    assert abs(s.item() - x.sum()) < 1e-4
    assert abs(float(s) - x.sum()) < 1e-4
    assert isinstance(str(t), str) and isinstance(repr(t), str)


def test_detach(device, rng):
    x = rand(rng, (3,))
    a = make(x, device)
    d = (a * 2).detach()
    assert d.requires_grad is False
    assert_close(d, 2 * x, "float32")
    loss = (d * a).sum()
    loss.backward()
    assert_close(np.asarray(a.grad), 2 * x, "float32", "detached factor is a constant")


def test_realize_returns_self_and_realize_many(device, rng):
    x = rand(rng, (3, 4))
    t = make(x, device)
    u = (t * 2).exp()
    assert u.realize() is u
    v, w = (t + 1).sum(axis=0), (t - 1).max()
    out = cg.realize(v, w)
    assert_close(v, (x + 1).sum(axis=0), "float32")
    assert_close(w, np.reshape((x - 1).max(), (1,)), "float32")
    if out is not None:
        assert all(a is b for a, b in zip(out, (v, w)))


def test_nothing_runs_until_read(device, rng):
    x = rand(rng, (3, 4))
    before = launched()
    t = make(x, device)
    u = (t * 2 + 1).exp().sum(axis=1)
    _ = u.shape, u.size, u.ndim, u.dtype, u.requires_grad
    assert launched() == before, "building a graph must not run kernels"
    u.numpy()
    assert launched() > before


@pytest.mark.parametrize("src,dst", [("float32", "float64"), ("float64", "float32")])
def test_to_and_cast_dtype(device, rng, src, dst):
    x = rand(rng, (3, 4))
    t = make(x, device, src)
    for out in (t.to(dtype_of(dst)), t.cast(dtype_of(dst))):
        assert out.dtype == dtype_of(dst)
        assert out.shape == (3, 4)
        assert_close(out, rounded(rounded(x, src), dst), dst)


def test_to_same_device(device, rng):
    t = make(rand(rng, (2,)), device)
    moved = t.to(device)
    assert str(moved.device).startswith(device)
    assert_close(moved, as_array(t), "float32")


def test_float64_is_really_float64(device):
    # 1 + 1e-12 is 1 in float32 but not in float64
    t = cg.tensor([1], [1.0], device=device, dtype=cg.float64)
    out = (t + 1e-12) - 1.0
    assert out.item() == (1.0 + 1e-12) - 1.0
    assert ((cg.tensor([1], [1.0], device=device) + 1e-12) - 1.0).item() == 0.0


def test_argmax_ties_pick_the_first_index(device):
    m = cg.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 1.0]], device=device)
    assert m.argmax(1).tolist() == [1, 0]
    assert m.argmax(0).tolist() == [1, 0, 0]


def test_argmax_without_axis_is_flat_index(device):
    m = cg.tensor([[1.0, 5.0], [7.0, 2.0]], device=device)
    assert m.argmax().item() == 2


def test_reduction_over_axis_of_1d_gives_0d(device):
    t = cg.tensor([4], [1.0, 5.0, 2.0, 4.0], device=device)
    for out in (t.sum(axis=0), t.max(axis=0), t.argmax(0)):
        assert out.shape == ()


def test_nan_propagates_like_pytorch(device):
    n = cg.tensor([3], [float("nan"), 1.0, 2.0], device=device)
    assert np.isnan(n.max().item()) and np.isnan(n.min().item()) and np.isnan(n.sum().item())
    assert np.isnan(n.relu().data[0]) and np.isnan(n.exp().data[0])
    assert np.isnan(n.maximum(cg.zeros([3], device=device)).data[0])


def test_division_by_zero_and_log_of_zero(device):
    t = cg.tensor([3], [1.0, 0.0, -1.0], device=device)
    out = (t / 0.0).data
    assert out[0] == float("inf") and np.isnan(out[1]) and out[2] == float("-inf")
    assert cg.tensor([1], [0.0], device=device).log().data == [float("-inf")]


@pytest.mark.parametrize("case", ["sum_fused", "sum_view", "max_slice", "min_flip", "mean_expand",
                                  "sum_axis0_tall", "argmax_wide", "var_rows"])
def test_large_reductions(device, rng, seed, case):
    """Big reductions (split into partial and total kernels, or blocked) with fused producers and views."""
    X = rng.standard_normal((600, 1100)).astype(np.float32)
    Y = rng.standard_normal((1100,)).astype(np.float32)
    x, y = make(X, device), make(Y, device)
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    got, want = {
        "sum_fused": lambda: ((x * y * 0.1).exp().sum(), [np.exp(X64 * Y64 * 0.1).sum()]),
        "sum_view": lambda: (x.T[::2].sum(), [X64.T[::2].sum()]),
        "max_slice": lambda: ((x[::3, 5:] - 10.0).max(), [(X64[::3, 5:] - 10.0).max()]),
        "min_flip": lambda: (x[::-1, ::-1].min(axis=0), X64[::-1, ::-1].min(axis=0)),
        "mean_expand": lambda: (y.expand(600, 1100).mean(), [Y64.mean()]),
        "sum_axis0_tall": lambda: (x.sum(axis=0, keepdim=True), X64.sum(axis=0, keepdims=True)),
        "argmax_wide": lambda: (x.reshape(2, -1).argmax(1), X.reshape(2, -1).argmax(1)),
        "var_rows": lambda: (((x - x.mean(axis=1, keepdim=True)) ** 2).mean(axis=1), X64.var(axis=1)),
    }[case]()
    assert_close(got, want, "float32", f"{case} seed={seed}", rtol=2e-4, atol=1e-4)


def test_large_reduction_gradients(device, rng, seed):
    X = rng.standard_normal((700, 900))
    x = make(X, device, "float64")
    ((x * x).sum() + x.T.sum(axis=0).max() * 0.0 + x.max()).backward()
    want = 2 * X
    want[np.unravel_index(X.argmax(), X.shape)] += 1.0
    assert_close(grad_of(x), want, "float64", f"seed={seed}")


def test_cat_promotes_mixed_dtypes(device, rng):
    """As PyTorch: the result has the promoted dtype, and gradients flow back in each
    input's own dtype."""
    x32 = rng.standard_normal((2, 3)).astype(np.float32)
    x64 = rng.standard_normal((1, 3))
    counts = rng.integers(-5, 5, size=(2, 3)).astype(np.int32)
    a = cg.from_numpy(x32, device=device)
    b = cg.from_numpy(x64, device=device)
    c = cg.from_numpy(counts, device=device, requires_grad=False)
    out = cg.cat([a, b, c])
    assert out.dtype == cg.float64 and out.shape == (5, 3)
    np.testing.assert_array_equal(out.numpy(), np.concatenate([x32.astype(np.float64), x64, counts]))
    weights = rng.standard_normal((5, 3))
    (out * cg.from_numpy(weights, device=device, requires_grad=False)).sum().backward()
    assert a.grad_tensor.dtype == cg.float32 and b.grad_tensor.dtype == cg.float64
    np.testing.assert_allclose(np.array(a.grad).reshape(2, 3), weights[:2], rtol=1e-6)
    np.testing.assert_allclose(np.array(b.grad).reshape(1, 3), weights[2:3], rtol=1e-12)
    mixed_ints = cg.cat([c, cg.from_numpy(x32, device=device)], axis=1)
    assert mixed_ints.dtype == cg.float32
    np.testing.assert_array_equal(mixed_ints.numpy(), np.concatenate([counts.astype(np.float32), x32], 1))
