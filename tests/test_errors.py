"""API.md's Errors section: bad input fails when the op is BUILT, with the right exception type
and a message naming the op and the shapes or values involved."""
from __future__ import annotations

import re

import numpy as np
import pytest

import cudagrad as cg
from helpers import launched, make


def shape_re(shape):
    """A shape as a message may spell it: (2, 3), [2, 3], 2x3, (4,)."""
    inner = r",\s*".join(str(d) for d in shape)
    alts = [rf"\({inner},?\)", rf"\[{inner}\]"]
    if len(shape) > 1:
        alts.append("x".join(str(d) for d in shape))
    return "(" + "|".join(alts) + ")"


def check_message(excinfo, op, *shapes):
    message = str(excinfo.value)
    assert re.search(op, message, re.IGNORECASE), f"message does not name the op ({op}): {message!r}"
    for shape in shapes:
        pattern = shape_re(shape) if isinstance(shape, tuple) else re.escape(str(shape))
        assert re.search(pattern, message), f"message does not show {shape}: {message!r}"


@pytest.fixture
def no_launch():
    """Errors are raised at build time: nothing runs."""
    before = launched()
    yield
    assert launched() == before, "an error must be raised before anything is realized"


def t(shape, device="cpu"):
    return make(np.ones(shape), device)


# ---------------------------------------------------------------- constructors

def test_data_length_mismatch(device, no_launch):
    with pytest.raises(ValueError) as e:
        cg.tensor([2, 2], [1.0, 2.0, 3.0], device=device)
    check_message(e, "tensor", (2, 2), 3)


def test_data_length_mismatch_too_long(device, no_launch):
    with pytest.raises(ValueError) as e:
        cg.tensor([3], [1.0, 2.0, 3.0, 4.0], device=device)
    check_message(e, "tensor", (3,), 4)


@pytest.mark.parametrize("data", [["a", "b"], [None, 1.0], [1.0, [2.0]], [object(), 1.0]],
                         ids=["strings", "none", "nested-list", "object"])  # fixed ids: pytest-xdist
def test_non_numeric_data(device, data, no_launch):
    with pytest.raises(TypeError, match="(?i)tensor"):
        cg.tensor([2], data, device=device)


def test_non_numeric_nested(device, no_launch):
    with pytest.raises(TypeError, match="(?i)tensor"):
        cg.tensor([[1.0, "x"], [2.0, 3.0]], device=device)


def test_ragged_nested_list(device, no_launch):
    with pytest.raises(ValueError, match="(?i)tensor"):
        cg.tensor([[1.0, 2.0], [3.0]], device=device)


@pytest.mark.parametrize("shape", [[-1, 2], [2, -3], [-4]], ids=str)
def test_negative_shape(device, shape, no_launch):
    with pytest.raises(ValueError) as e:
        cg.tensor(shape, [], device=device)
    check_message(e, "tensor", str(min(shape)))
    with pytest.raises(ValueError, match="(?i)zeros|shape"):
        cg.zeros(shape, device=device)


def test_non_int_shape(device, no_launch):
    with pytest.raises(TypeError):
        cg.tensor([2.5, 2], [1.0] * 5, device=device)


def test_bad_dtype(device):
    with pytest.raises(TypeError):
        cg.zeros([2], dtype="complex-ish", device=device)


# ---------------------------------------------------------------- broadcasting

BINARY = {
    "add": (lambda a, b: a + b, r"add|\+"),
    "sub": (lambda a, b: a - b, r"sub|-"),
    "mul": (lambda a, b: a * b, r"mul|\*"),
    "div": (lambda a, b: a / b, r"div|/"),
    "pow": (lambda a, b: a ** b, r"pow|\*\*"),
    "maximum": (lambda a, b: a.maximum(b), r"maximum"),
    "minimum": (lambda a, b: a.minimum(b), r"minimum"),
    "lt": (lambda a, b: a < b, r"lt|less|<|compar"),
    "eq": (lambda a, b: a == b, r"eq|==|compar"),
}


@pytest.mark.parametrize("op", sorted(BINARY))
@pytest.mark.parametrize("shapes", [((2, 3), (4,)), ((3, 1), (2, 2)), ((2, 3, 4), (3, 3))], ids=str)
def test_shapes_do_not_broadcast(device, op, shapes, no_launch):
    fn, name = BINARY[op]
    a, b = t(shapes[0], device), t(shapes[1], device)
    with pytest.raises(ValueError) as e:
        fn(a, b)
    check_message(e, name, shapes[0], shapes[1])


def test_where_shapes_do_not_broadcast(device, no_launch):
    c, x, y = t((2, 3), device), t((2, 3), device), t((5,), device)
    with pytest.raises(ValueError) as e:
        cg.where(c > 0.0, x, y)
    check_message(e, "where", (5,))


def test_expand_incompatible(device, no_launch):
    with pytest.raises(ValueError) as e:
        t((2, 3), device).expand(4, 3)
    check_message(e, "expand", (2, 3), (4, 3))


# ---------------------------------------------------------------- matmul

@pytest.mark.parametrize("shapes", [((2, 3), (4, 5)), ((2, 3, 4), (5, 2)), ((2, 2, 3), (3, 3, 4))], ids=str)
def test_matmul_mismatch(device, shapes, no_launch):
    a, b = t(shapes[0], device), t(shapes[1], device)
    with pytest.raises(ValueError) as e:
        a @ b
    check_message(e, r"matmul|@", shapes[0], shapes[1])


# ---------------------------------------------------------------- axes

AXIS_OPS = {
    "sum": (lambda x: x.sum(axis=2), "sum"),
    "sum_tuple": (lambda x: x.sum(axis=(0, 5)), "sum"),
    "mean": (lambda x: x.mean(axis=-3), "mean"),
    "max": (lambda x: x.max(axis=7), "max"),
    "min": (lambda x: x.min(axis=2, keepdim=True), "min"),
    "argmax": (lambda x: x.argmax(2), "argmax"),
    "softmax": (lambda x: x.softmax(2), "softmax"),
    "log_softmax": (lambda x: x.log_softmax(-3), "log_softmax"),
    "squeeze": (lambda x: x.squeeze(3), "squeeze"),
    "unsqueeze": (lambda x: x.unsqueeze(4), "unsqueeze"),
    "transpose": (lambda x: x.transpose(0, 2), "transpose"),
    "flatten": (lambda x: x.flatten(3), "flatten"),
    "cat": (lambda x: cg.cat([x, x], axis=2), "cat"),
    "stack": (lambda x: cg.stack([x, x], axis=4), "stack"),
}


@pytest.mark.parametrize("op", sorted(AXIS_OPS))
def test_axis_out_of_range(device, op, no_launch):
    fn, name = AXIS_OPS[op]
    with pytest.raises((ValueError, IndexError)) as e:
        fn(t((2, 3), device))
    check_message(e, name, (2, 3))


@pytest.mark.parametrize("dims", [(0,), (0, 0), (0, 1, 2), (0, 2)], ids=str)
def test_permute_bad_dims(device, dims, no_launch):
    with pytest.raises((ValueError, IndexError)) as e:
        t((2, 3), device).permute(*dims)
    check_message(e, "permute", (2, 3))


def test_duplicate_reduction_axes(device, no_launch):
    with pytest.raises(ValueError, match="(?i)sum"):
        t((2, 3), device).sum(axis=(1, -1))


# ---------------------------------------------------------------- reshape

@pytest.mark.parametrize("shape", [(4, 2), (5, -1), (-1, -1), (7,), (2, -2)], ids=str)
def test_bad_reshape(device, shape, no_launch):
    with pytest.raises(ValueError) as e:
        t((2, 3), device).reshape(*shape)
    check_message(e, "reshape", (2, 3))


def test_cat_and_stack_shape_mismatch(device, no_launch):
    with pytest.raises(ValueError) as e:
        cg.cat([t((2, 3), device), t((3, 4), device)], axis=0)
    check_message(e, "cat", (2, 3), (3, 4))
    with pytest.raises(ValueError) as e:
        cg.stack([t((2, 3), device), t((3, 2), device)], axis=0)
    check_message(e, "stack", (2, 3), (3, 2))


def test_cat_empty_list(no_launch):
    with pytest.raises(ValueError, match="(?i)cat"):
        cg.cat([], axis=0)


# ---------------------------------------------------------------- indexing

@pytest.mark.parametrize("index", [2, -3, (0, 3), (slice(None), -4), (1, 1, 1)], ids=str)
def test_index_out_of_range(device, index, no_launch):
    x = t((2, 3), device)
    with pytest.raises(IndexError) as e:
        x[index]
    message = str(e.value)
    assert re.search(shape_re((2, 3)) + r"|\b[23]\b", message), message


def test_index_zero_step(device, no_launch):
    with pytest.raises(ValueError):
        t((4,), device)[::0]


def test_index_bad_type(device, no_launch):
    with pytest.raises((TypeError, IndexError)):
        t((4,), device)["a"]


# ---------------------------------------------------------------- autograd

def test_backward_non_scalar_without_gradient(device, no_launch):
    x = t((2, 3), device)
    y = x * 2
    with pytest.raises((ValueError, RuntimeError)) as e:
        y.backward()
    check_message(e, "backward", (2, 3))


def test_backward_gradient_shape_mismatch(device, no_launch):
    x = t((2, 3), device)
    with pytest.raises(ValueError) as e:
        (x * 2).backward(cg.ones([3, 2], requires_grad=False, device=device))
    check_message(e, "backward", (2, 3), (3, 2))


def test_item_of_many_elements(device):
    with pytest.raises((ValueError, RuntimeError)):
        t((2, 3), device).item()


# ---------------------------------------------------------------- compile errors

def test_compile_error_exists():
    assert isinstance(cg.CompileError, type) and issubclass(cg.CompileError, Exception)
