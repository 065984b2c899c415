"""Reliability, part 1: hostile input.

Every call in HOSTILE must fail when the op is BUILT (no kernel runs), with the
documented exception type, with a message that names the op and the shapes or
values involved, and with the user's line as the last frame of this file in
the traceback. Zero-size tensors, 0-d tensors, NaN and inf are not errors:
they must behave as numpy's do.
"""
from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import cudagrad as cg
from cudagrad.checks import GradientError

HERE = Path(__file__).resolve()
NN = getattr(cg, "nn", None)


def _cuda_ok() -> bool:
    try:
        return bool(cg.cuda_available()[0])
    except Exception:
        return False


# ---------------------------------------------------------------- operands ---------

def operands(device: str) -> SimpleNamespace:
    """The tensors the hostile calls are built from (constructors run no kernel)."""
    rng = np.random.default_rng(0)

    def f32(shape):
        return rng.standard_normal(shape).astype(np.float32)
    return SimpleNamespace(
        x23=cg.tensor(f32((2, 3)), device=device),
        x32=cg.tensor(f32((3, 2)), device=device),
        x234=cg.tensor(f32((2, 3, 4)), device=device),
        x332=cg.tensor(f32((3, 3, 2)), device=device),
        v3=cg.tensor([1.0, 2.0, 3.0], device=device),
        v4=cg.tensor([1.0, 2.0, 3.0, 4.0], device=device),
        s0=cg.tensor(2.5, device=device),
        e03=cg.zeros((0, 3), device=device),
        d64=cg.tensor(f32((2, 3)), dtype=cg.float64, device=device),
        const23=cg.tensor(f32((2, 3)), device=device, requires_grad=False),
        device=device,
    )


def built_under_no_grad(x):
    with cg.no_grad():
        return (x * 2).sum()


# ------------------------------------------------------------ the hostile table ----
# (id, call, exception type, patterns the message must contain). Each call is a
# one-line lambda: that line must be the traceback's last frame in this file.
# Shapes may be spelled [2, 3] or (2, 3); SHAPE(...) builds the pattern.

def SHAPE(*dims):
    inner = r",\s*".join(str(d) for d in dims)
    return rf"(\[{inner}\]|\({inner},?\))"


def _nn_f():
    return NN.functional


HOSTILE = [
    # constructors: data and shapes
    ("data-too-short", lambda T: cg.tensor([2, 2], [1.0, 2.0, 3.0], device=T.device), ValueError, ["tensor", SHAPE(2, 2), "3"]),
    ("data-too-long", lambda T: cg.tensor([3], [1.0, 2.0, 3.0, 4.0], device=T.device), ValueError, ["tensor", SHAPE(3), "4"]),
    ("uneven-nested", lambda T: cg.tensor([[1.0, 2.0], [3.0]], device=T.device), ValueError, ["tensor", "uneven"]),
    ("uneven-nested-deep", lambda T: cg.tensor([[[1.0], [2.0]], [[3.0]]], device=T.device), ValueError, ["tensor"]),
    ("strings-nested", lambda T: cg.tensor(["a", "b"], device=T.device), TypeError, ["tensor"]),
    ("strings-flat", lambda T: cg.tensor([2], ["a", "b"], device=T.device), TypeError, ["tensor", "'a'"]),
    ("none-nested", lambda T: cg.tensor([1.0, None], device=T.device), TypeError, ["tensor", "None"]),
    ("none-flat", lambda T: cg.tensor([2], [1.0, None], device=T.device), TypeError, ["tensor", "None"]),
    ("none-data", lambda T: cg.tensor(None, device=T.device), TypeError, ["tensor", "NoneType"]),
    ("string-data", lambda T: cg.tensor("abc", device=T.device), TypeError, ["tensor", "str"]),
    ("complex-data", lambda T: cg.tensor([1 + 2j], device=T.device), TypeError, ["tensor", "complex"]),
    ("negative-shape", lambda T: cg.tensor([-1, 2], [], device=T.device), ValueError, ["tensor", "-1"]),
    ("zeros-negative", lambda T: cg.zeros((2, -3), device=T.device), ValueError, ["-3", SHAPE(2, -3)]),
    ("randn-float-shape", lambda T: cg.randn((2.5,), device=T.device), TypeError, ["randn", "2.5"]),
    ("ones-none-shape", lambda T: cg.ones(None, device=T.device), TypeError, ["shape", "NoneType"]),
    ("full-string-value", lambda T: cg.full((2,), "x", device=T.device), TypeError, ["full", "'x'"]),
    ("arange-negative", lambda T: cg.arange(-1, device=T.device), ValueError, ["arange", "-1"]),
    ("int32-overflow", lambda T: cg.tensor([2 ** 40], dtype=cg.int32, device=T.device), ValueError, ["tensor", "int32", str(2 ** 40)]),
    ("unknown-dtype", lambda T: cg.tensor([1.0], dtype="float8", device=T.device), TypeError, ["dtype", "float8"]),
    ("unknown-device", lambda T: cg.tensor([1.0], device="tpu"), ValueError, ["device", "tpu"]),
    # elementwise and broadcasting
    ("add-no-broadcast", lambda T: T.x23 + T.x32, ValueError, ["add", SHAPE(2, 3), SHAPE(3, 2)]),
    ("mul-no-broadcast", lambda T: T.x23 * T.v4, ValueError, ["mul", SHAPE(2, 3), SHAPE(4)]),
    ("maximum-no-broadcast", lambda T: cg.maximum(T.x23, T.x32), ValueError, ["maximum", SHAPE(2, 3), SHAPE(3, 2)]),
    ("compare-no-broadcast", lambda T: T.x23 < T.x32, ValueError, ["lt", SHAPE(2, 3), SHAPE(3, 2)]),
    ("where-no-broadcast", lambda T: cg.where(T.x23 > 0, T.x23, T.x32), ValueError, ["where", SHAPE(2, 3), SHAPE(3, 2)]),
    ("add-string", lambda T: T.x23 + "a", TypeError, ["add", "str"]),
    ("add-none", lambda T: T.x23 + None, TypeError, ["add", "NoneType"]),
    ("sub-list", lambda T: T.x23 - [1, 2, 3], TypeError, ["sub", "list"]),
    ("clamp-nothing", lambda T: T.x23.clamp(), ValueError, ["clamp"]),
    # matmul
    ("matmul-1d", lambda T: T.v3 @ T.x32, ValueError, ["matmul", SHAPE(3), SHAPE(3, 2)]),
    ("matmul-0d", lambda T: T.s0 @ T.x23, ValueError, ["matmul", r"\[\]", SHAPE(2, 3)]),
    ("matmul-inner", lambda T: T.x23 @ T.x23, ValueError, ["matmul", SHAPE(2, 3), "3 and 2"]),
    ("matmul-batch", lambda T: T.x234 @ T.x332, ValueError, ["matmul", SHAPE(2, 3, 4), SHAPE(3, 3, 2)]),
    ("matmul-scalar", lambda T: T.x23 @ 2.0, TypeError, ["matmul", "float"]),
    # axes
    ("sum-axis", lambda T: T.x23.sum(2), cg.AxisError, ["sum", "axis 2", SHAPE(2, 3)]),
    ("mean-axis-negative", lambda T: T.x23.mean(-3), cg.AxisError, ["mean", "-3", SHAPE(2, 3)]),
    ("max-axis-float", lambda T: T.x23.max(1.0), TypeError, ["max", "float"]),
    ("sum-axis-repeated", lambda T: T.x23.sum((0, 0)), ValueError, ["sum", SHAPE(2, 3)]),
    ("softmax-axis", lambda T: T.x23.softmax(5), cg.AxisError, ["softmax", "5", SHAPE(2, 3)]),
    ("argmax-axis", lambda T: T.x23.argmax(2), cg.AxisError, ["argmax", SHAPE(2, 3)]),
    ("unsqueeze-axis", lambda T: T.x23.unsqueeze(4), cg.AxisError, ["unsqueeze", "4"]),
    ("transpose-axis", lambda T: T.x23.transpose(0, 2), cg.AxisError, ["transpose", SHAPE(2, 3)]),
    ("cat-axis", lambda T: cg.cat([T.x23, T.x23], 2), cg.AxisError, ["cat", SHAPE(2, 3)]),
    ("0d-sum-axis-1", lambda T: T.s0.sum(1), cg.AxisError, ["sum", r"\[\]"]),
    # reshape and views
    ("reshape-count", lambda T: T.x23.reshape(4), ValueError, ["reshape", SHAPE(2, 3), SHAPE(4)]),
    ("reshape-two-minus-one", lambda T: T.x23.reshape(-1, -1), ValueError, ["reshape", SHAPE(2, 3)]),
    ("reshape-negative", lambda T: T.x23.reshape(-2, 3), ValueError, ["reshape", SHAPE(2, 3)]),
    ("reshape-string", lambda T: T.x23.reshape("a"), TypeError, ["reshape"]),
    ("reshape-empty-minus-one", lambda T: T.e03.reshape(0, -1), ValueError, ["reshape", SHAPE(0, 3)]),
    ("permute-repeat", lambda T: T.x23.permute(0, 0), ValueError, ["permute", SHAPE(2, 3)]),
    ("permute-short", lambda T: T.x23.permute(0), ValueError, ["permute", SHAPE(2, 3)]),
    ("expand-size", lambda T: T.x23.expand(3, 3), ValueError, ["expand", SHAPE(2, 3), SHAPE(3, 3)]),
    ("expand-fewer-dims", lambda T: T.x23.expand(3), ValueError, ["expand", SHAPE(2, 3)]),
    ("flatten-reversed", lambda T: T.x23.flatten(1, 0), ValueError, ["flatten", SHAPE(2, 3)]),
    # indexing
    ("index-high", lambda T: T.x23[2], IndexError, ["index", "2", SHAPE(2, 3)]),
    ("index-low", lambda T: T.x23[-3], IndexError, ["index", "-3", SHAPE(2, 3)]),
    ("index-second-dim", lambda T: T.x23[:, 3], IndexError, ["index", "3", SHAPE(2, 3)]),
    ("index-too-many", lambda T: T.x23[0, 0, 0], IndexError, ["index", SHAPE(2, 3)]),
    ("index-two-ellipses", lambda T: T.x23[..., ...], IndexError, ["index"]),
    ("index-0d", lambda T: T.s0[0], IndexError, ["index", r"\[\]"]),
    ("index-float", lambda T: T.x23[0.5], TypeError, ["index", "float"]),
    ("index-string", lambda T: T.x23["a"], TypeError, ["index", "str"]),
    ("slice-step-zero", lambda T: T.x23[::0], ValueError, ["index", "zero", SHAPE(2, 3)]),
    ("slice-float", lambda T: T.x23[0.5:], TypeError, ["index", SHAPE(2, 3)]),
    # cat and stack
    ("cat-shapes", lambda T: cg.cat([T.x23, T.x32]), ValueError, ["cat", SHAPE(2, 3), SHAPE(3, 2)]),
    ("cat-nothing", lambda T: cg.cat([]), ValueError, ["cat"]),
    ("cat-0d", lambda T: cg.cat([T.s0, T.s0]), ValueError, ["cat"]),
    ("cat-non-tensor", lambda T: cg.cat([T.x23, 1.0]), TypeError, ["cat", "float"]),
    ("stack-shapes", lambda T: cg.stack([T.x23, T.x32]), ValueError, ["stack", SHAPE(2, 3), SHAPE(3, 2)]),
    # autograd
    ("backward-non-scalar", lambda T: T.x23.exp().backward(), GradientError, ["backward", SHAPE(2, 3)]),
    ("backward-no-grad", lambda T: built_under_no_grad(T.x23).backward(), GradientError, ["backward", "no_grad"]),
    ("backward-no-leaf-needs-grad", lambda T: T.const23.sum().backward(), GradientError, ["backward", "require"]),
    ("backward-gradient-shape", lambda T: (T.x23 * 2).backward(T.x32), ValueError, ["backward", SHAPE(3, 2), SHAPE(2, 3)]),
    ("grad-non-scalar", lambda T: cg.grad(T.x23 * 2, [T.x23]), GradientError, ["grad", SHAPE(2, 3)]),
    ("item-many", lambda T: T.x23.item(), ValueError, ["item", SHAPE(2, 3)]),
    ("assign-non-leaf", lambda T: (T.x23 * 2).assign(T.x23), ValueError, ["assign", "leaf"]),
    ("assign-shape", lambda T: T.x23.assign(T.x32), ValueError, ["assign", SHAPE(3, 2), SHAPE(2, 3)]),
]

if NN is not None:
    HOSTILE += [
        ("xent-label-high", lambda T: _nn_f().cross_entropy(T.x23, [0, 3]), (ValueError, IndexError), ["cross_entropy", "3", SHAPE(2, 3)]),
        ("xent-label-negative", lambda T: _nn_f().cross_entropy(T.x23, [0, -1]), (ValueError, IndexError), ["cross_entropy", "-1", SHAPE(2, 3)]),
        ("xent-label-count", lambda T: _nn_f().cross_entropy(T.x23, [0]), ValueError, ["cross_entropy", SHAPE(2, 3)]),
        ("xent-label-float", lambda T: _nn_f().cross_entropy(T.x23, [0.5, 1.0]), TypeError, ["cross_entropy", "float"]),
        ("mse-shapes", lambda T: _nn_f().mse_loss(T.x23, T.x32), ValueError, ["mse_loss", SHAPE(2, 3), SHAPE(3, 2)]),
        ("linear-features", lambda T: NN.Linear(4, 2, device=T.device)(T.x23), ValueError, ["Linear", SHAPE(2, 3)]),
    ]

HOSTILE_COUNT = len(HOSTILE)


def _last_frame_here(excinfo) -> int:
    """1-based line of the last traceback frame that lies in this file."""
    lines = [entry.lineno + 1 for entry in excinfo.traceback if Path(str(entry.path)).resolve() == HERE]
    assert lines, "the traceback does not pass through the test file"
    return lines[-1]


@pytest.fixture(scope="module", params=["cpu", "cuda"])
def T(request):
    if request.param == "cuda" and not _cuda_ok():
        pytest.skip("cuda: no usable GPU")
    return operands(request.param)


def test_the_table_is_big_enough():
    assert HOSTILE_COUNT >= 40


@pytest.mark.parametrize("case", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_call_fails_at_build_time(T, case):
    name, call, error_type, patterns = case
    before = cg.stats()["kernels_launched"]
    with pytest.raises(error_type) as excinfo:
        call(T)
    assert cg.stats()["kernels_launched"] == before, f"{name}: a kernel ran before the error"
    message = str(excinfo.value)
    for pattern in patterns:
        assert re.search(pattern, message, re.IGNORECASE), \
            f"{name}: message {message!r} does not contain {pattern!r}"
    assert _last_frame_here(excinfo) == call.__code__.co_firstlineno, \
        f"{name}: the error does not point at the line that built the op"


def test_axis_error_is_both_index_and_value_error(T):
    for kind in (IndexError, ValueError):
        with pytest.raises(kind):
            T.x23.sum(7)


def test_gradient_error_is_runtime_and_value_error(T):
    for kind in (RuntimeError, ValueError):
        with pytest.raises(kind):
            T.x23.exp().backward()


# ------------------------------------------------------------ mixing devices ---------

def test_mixing_devices_fails_at_build_time():
    if not _cuda_ok():
        pytest.skip("cuda: no usable GPU")
    a = cg.ones((2, 3), device="cpu")
    b = cg.ones((2, 3), device="cuda")
    m = cg.ones((3, 2), device="cuda")
    before = cg.stats()["kernels_launched"]
    calls = [
        (lambda: a + b, ValueError, "add"),
        (lambda: a @ m, ValueError, "matmul"),
        (lambda: cg.cat([a, b]), ValueError, "cat"),
        (lambda: cg.where(a > 0, b, b), ValueError, "where"),
        (lambda: cg.maximum(a, b), ValueError, "maximum"),
        (lambda: a.assign(b), ValueError, "assign"),
    ]
    for call, kind, op in calls:
        with pytest.raises(kind) as excinfo:
            call()
        message = str(excinfo.value)
        assert op in message and "cpu" in message and "cuda" in message, message
    assert cg.stats()["kernels_launched"] == before


# ------------------------------------------------------------ zero-size tensors ------

ZERO_SIZE = [
    ("add", lambda t: t + 1, lambda a: a + 1),
    ("exp", lambda t: t.exp(), np.exp),
    ("sum-all", lambda t: t.sum(), lambda a: np.sum(a).reshape(1)),
    ("sum-empty-axis", lambda t: t.sum(0), lambda a: a.sum(0)),
    ("sum-empty-axis-keepdim", lambda t: t.sum(0, keepdim=True), lambda a: a.sum(0, keepdims=True)),
    ("sum-other-axis", lambda t: t.sum(1), lambda a: a.sum(1)),
    ("max-other-axis", lambda t: t.max(1), lambda a: a.max(1)),
    ("mean-empty-axis", lambda t: t.mean(0), lambda a: np.full(a.shape[1:], np.nan)),
    ("mean-all", lambda t: t.mean(), lambda a: np.array([np.nan])),
    ("transpose", lambda t: t.T, lambda a: a.T),
    ("reshape", lambda t: t.reshape(3, 0), lambda a: a.reshape(3, 0)),
    ("reshape-minus-one", lambda t: t.reshape(-1), lambda a: a.reshape(-1)),
    ("broadcast-row", lambda t: t * cg.ones((1, 3), device=t.device), lambda a: a * np.ones((1, 3))),
    ("broadcast-column", lambda t: t[:, :1] + cg.ones((1, 3), device=t.device), lambda a: a[:, :1] + np.ones((1, 3))),
    ("matmul-empty-rows", lambda t: t @ cg.ones((3, 2), device=t.device), lambda a: a @ np.ones((3, 2))),
    ("matmul-empty-inner", lambda t: t.T @ t, lambda a: a.T @ a),
    ("cat-with-full", lambda t: cg.cat([t, cg.ones((2, 3), device=t.device)]), lambda a: np.concatenate([a, np.ones((2, 3))])),
    ("stack", lambda t: cg.stack([t, t]), lambda a: np.stack([a, a])),
    ("slice", lambda t: t[1:], lambda a: a[1:]),
    ("softmax", lambda t: t.softmax(-1), lambda a: a),
    ("where", lambda t: cg.where(t > 0, t, 1.0), lambda a: np.where(a > 0, a, 1.0)),
    ("relu", lambda t: t.relu(), lambda a: np.maximum(a, 0)),
]


@pytest.mark.parametrize("case", ZERO_SIZE, ids=[c[0] for c in ZERO_SIZE])
def test_zero_size_works_as_numpy(T, case):
    _, ours, reference = case
    array = np.zeros((0, 3), dtype=np.float32)
    t = cg.tensor(array, device=T.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.asarray(reference(array), dtype=np.float64)
    got = ours(t).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.astype(np.float64), expected, equal_nan=True)


def test_zero_size_slice_of_a_full_tensor(T):
    x = cg.tensor(np.arange(6.0).reshape(2, 3), device=T.device)
    empty = x[:, 3:]
    assert empty.shape == (2, 0)
    np.testing.assert_array_equal(empty.sum(1).numpy(), [0.0, 0.0])      # sum of nothing is 0
    assert x[5:].shape == (0, 3) and x[1:0].numpy().shape == (0, 3)


def test_zero_size_gradients(T):
    t = cg.zeros((0, 3), device=T.device)
    w = cg.ones((3, 2), device=T.device)
    loss = ((t @ w).exp().sum() + t.sum() * 2)
    loss.backward()
    assert loss.item() == 0.0
    assert t.grad == [] and np.asarray(t.grad_tensor.numpy()).shape == (0, 3)
    np.testing.assert_array_equal(np.reshape(w.grad, (3, 2)), np.zeros((3, 2)))


def test_zero_size_reductions_without_identity_raise(T):
    for call in (lambda: T.e03.max(), lambda: T.e03.min(0), lambda: T.e03.argmax()):
        with pytest.raises(ValueError, match="(?i)(max|min|argmax).*\\[0, 3\\]|argmax"):
            call()      # numpy: "zero-size array to reduction operation maximum which has no identity"


# ------------------------------------------------------------ 0-d scalars ----------

SCALAR = [
    ("sum", lambda t: t.sum(), lambda a: np.sum(a).reshape(1)),
    ("sum-axis-0", lambda t: t.sum(0), lambda a: np.sum(a, axis=0)),
    ("sum-axis--1", lambda t: t.sum(-1), lambda a: np.sum(a, axis=-1)),
    ("sum-keepdim", lambda t: t.sum(keepdim=True), lambda a: np.sum(a, keepdims=True)),
    ("mean-axis-0", lambda t: t.mean(0), lambda a: a),      # numpy refuses this one; PyTorch: a
    ("max-axis-0", lambda t: t.max(0), lambda a: np.max(a, axis=0)),
    ("min", lambda t: t.min(), lambda a: np.min(a).reshape(1)),
    ("argmax-axis-0", lambda t: t.argmax(0), lambda a: np.argmax(a, axis=0)),
    ("softmax", lambda t: t.softmax(), lambda a: np.float64(1.0)),
    ("log_softmax", lambda t: t.log_softmax(), lambda a: np.float64(0.0)),
    ("exp", lambda t: t.exp(), np.exp),
    ("neg-pow", lambda t: (-t) ** 2, lambda a: (-a) ** 2),
    ("broadcast", lambda t: t + cg.ones((2, 3), device=t.device), lambda a: a + np.ones((2, 3))),
    ("reshape-1", lambda t: t.reshape(1), lambda a: a.reshape(1)),
    ("reshape-1-1", lambda t: t.reshape(1, 1), lambda a: a.reshape(1, 1)),
    ("none-index", lambda t: t[None], lambda a: a[None]),
    ("ellipsis-index", lambda t: t[...], lambda a: a[...]),
    ("unsqueeze", lambda t: t.unsqueeze(0), lambda a: np.expand_dims(a, 0)),
    ("squeeze", lambda t: t.squeeze(), lambda a: np.squeeze(a)),
    ("expand", lambda t: t.expand(2, 2), lambda a: np.broadcast_to(a, (2, 2))),
    ("stack", lambda t: cg.stack([t, t]), lambda a: np.stack([a, a])),
    ("where", lambda t: cg.where(t > 1, t, 0.0), lambda a: np.where(a > 1, a, 0.0)),
    ("flatten", lambda t: t.flatten(), lambda a: a.reshape(1)),
    ("transpose", lambda t: t.T, lambda a: a.T),
]


@pytest.mark.parametrize("case", SCALAR, ids=[c[0] for c in SCALAR])
def test_0d_scalars_work_as_numpy(T, case):
    _, ours, reference = case
    array = np.array(2.5, dtype=np.float32)
    got = ours(cg.tensor(2.5, device=T.device)).numpy()
    expected = np.asarray(reference(array))
    assert got.shape == expected.shape, (got.shape, expected.shape)
    np.testing.assert_allclose(got.astype(np.float64), expected.astype(np.float64), rtol=1e-6)


def test_0d_scalar_conversions_and_gradient(T):
    s = cg.tensor(3.0, device=T.device)
    assert s.shape == () and s.size == [] and s.ndim == 0 and s.numel() == 1
    assert s.item() == 3.0 and float(s) == 3.0 and s.tolist() == 3.0 and s.data == [3.0]
    with pytest.raises(TypeError):
        len(s)
    (s * s).backward()
    assert s.grad == [6.0]
    assert cg.grad(s * s * s, [s])[0].item() == pytest.approx(27.0)


# ------------------------------------------------------------ NaN and inf ----------

NAN, INF = float("nan"), float("inf")
SPECIAL_ROWS = [
    [NAN, 1.0, 2.0], [1.0, NAN, 2.0], [1.0, 2.0, NAN], [INF, 1.0, -INF], [-INF, -INF, -INF],
    [INF, NAN, 1.0], [INF, INF, 1.0], [0.0, -0.0, 1e-30], [-1.0, 0.0, 3.0],
]

SPECIAL_OPS = [
    ("exp", lambda t: t.exp(), np.exp),
    ("log", lambda t: t.log(), np.log),
    ("sqrt", lambda t: t.sqrt(), np.sqrt),
    ("relu", lambda t: t.relu(), lambda a: np.where(np.isnan(a), a, np.maximum(a, 0))),
    ("max", lambda t: t.max(), lambda a: np.max(a).reshape(1)),
    ("min", lambda t: t.min(), lambda a: np.min(a).reshape(1)),
    ("max-axis", lambda t: t.reshape(1, 3).max(1), lambda a: np.max(a.reshape(1, 3), axis=1)),
    ("sum", lambda t: t.sum(), lambda a: np.sum(a).reshape(1)),
    ("mean", lambda t: t.mean(), lambda a: np.mean(a).reshape(1)),
    ("maximum", lambda t: cg.maximum(t, t[::-1]), lambda a: np.maximum(a, a[::-1])),
    ("minimum", lambda t: cg.minimum(t, t[::-1]), lambda a: np.minimum(a, a[::-1])),
    ("maximum-scalar", lambda t: cg.maximum(t, 0.5), lambda a: np.maximum(a, 0.5)),
    ("tanh", lambda t: t.tanh(), np.tanh),
    ("abs", lambda t: t.abs(), np.abs),
    ("mul-zero", lambda t: t * 0, lambda a: a * 0),
    ("sub-self", lambda t: t - t, lambda a: a - a),
    ("div", lambda t: t / t[::-1], lambda a: a / a[::-1]),
    ("matmul", lambda t: t.reshape(1, 3) @ t.reshape(3, 1), lambda a: a.reshape(1, 3) @ a.reshape(3, 1)),
    ("where", lambda t: cg.where(t > 1, t, -t), lambda a: np.where(a > 1, a, -a)),
    ("compare", lambda t: t == t, lambda a: (a == a).astype(np.float32)),
]


@pytest.mark.parametrize("row", SPECIAL_ROWS, ids=lambda r: "_".join(map(str, r)))
@pytest.mark.parametrize("case", SPECIAL_OPS, ids=[c[0] for c in SPECIAL_OPS])
def test_nan_and_inf_propagate_as_numpy(T, case, row):
    _, ours, reference = case
    array = np.array(row, dtype=np.float32)
    with np.errstate(all="ignore"):
        expected = np.asarray(reference(array), dtype=np.float64)
    got = np.asarray(ours(cg.tensor(array, device=T.device)).numpy(), dtype=np.float64)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, equal_nan=True)
    # numpy and cudagrad agree on which entries are nan and on the sign of infinities
    assert (np.isnan(got) == np.isnan(expected)).all()
    assert (np.isposinf(got) == np.isposinf(expected)).all() and (np.isneginf(got) == np.isneginf(expected)).all()


def test_nan_in_data_is_accepted_in_every_constructor(T):
    assert math.isnan(cg.tensor([NAN], device=T.device).item())
    assert math.isnan(cg.tensor([1], [NAN], device=T.device).item())
    assert cg.full((2,), INF, device=T.device).data == [INF, INF]
    assert math.isnan(cg.from_numpy(np.array([NAN], dtype=np.float32), device=T.device).item())


def test_nan_gradient_flows_like_pytorch(T):
    x = cg.tensor([NAN, 1.0, 2.0], device=T.device)
    (x * 3).sum().backward()
    assert x.grad == [3.0, 3.0, 3.0]             # d(3x)/dx does not look at x
    y = cg.tensor([NAN, 1.0], device=T.device)
    (y * y).sum().backward()
    got = np.asarray(y.grad)
    assert math.isnan(got[0]) and got[1] == 2.0
