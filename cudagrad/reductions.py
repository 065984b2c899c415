"""Reductions, matmul and softmax."""
from __future__ import annotations

from cudagrad import dtypes
from cudagrad.checks import broadcast_shapes, normalize_axes, normalize_axis, shape_text
from cudagrad.elementwise import expand_to
from cudagrad.ir import ops as ir
from cudagrad.ir.node import Op, make_node, prod
from cudagrad.precision import matmul_arg
from cudagrad.tensor import Tensor, result_tensor


def _finish(node, x: Tensor, axes, keepdim: bool, axis):
    """Reduced dims stay as size 1 inside the graph; drop them unless keepdim.
    A full reduction (no axis) without keepdim has shape [1], as the seed prints."""
    if keepdim:
        return node
    shape = tuple(size for a, size in enumerate(node.shape) if a not in axes)
    if axis is None:
        shape = (1,)
    return ir.reshape(node, shape)


# A reduction with few outputs, each over very many elements, runs as two: partial
# results over chunks (many outputs: every core or SM busy), then their total.
SPLIT_MIN_REDUCED = 1 << 15
SPLIT_MAX_OUTPUTS = 256
SPLIT_CHUNK = 4096


def _reduce(op: Op, node, axes: tuple[int, ...]):
    reduced_count = prod(node.shape[a] for a in axes)
    outputs = prod(node.shape) // reduced_count if reduced_count else 0
    if reduced_count < SPLIT_MIN_REDUCED or outputs > SPLIT_MAX_OUTPUTS:
        return ir.reduce(op, node, axes)
    kept = [a for a in range(len(node.shape)) if a not in axes]
    kept_shape = tuple(node.shape[a] for a in kept)
    flat = ir.reshape(ir.permute(node, tuple(kept) + tuple(axes)), kept_shape + (reduced_count,))
    groups = -(-reduced_count // SPLIT_CHUNK)
    if groups * SPLIT_CHUNK != reduced_count:
        spec = tuple((0, 1, size, size) for size in kept_shape) + (
            (0, 1, reduced_count, groups * SPLIT_CHUNK),)
        padded = ir.pad(flat, spec)                       # zeros: the identity of a sum
        if op == Op.MAX:
            inside = ir.pad(ir.const(1, flat.shape, flat.dtype, flat.device), spec)
            lowest = float("-inf") if node.dtype.is_float else -(2**31)
            padded = ir.where(inside, padded, ir.const(lowest, padded.shape, padded.dtype,
                                                        padded.device))
        flat = padded
    chunks = ir.reshape(flat, kept_shape + (groups, SPLIT_CHUNK))
    partial = ir.reduce(op, chunks, (len(kept_shape) + 1,))
    total = ir.reduce(op, partial, (len(kept_shape),))
    return ir.reshape(total, ir.reduced_shape(node.shape, axes))


def _check_nonempty(op: str, x: Tensor, axes) -> None:
    if any(x.shape[axis] == 0 for axis in axes) or (not axes and x.numel() == 0):
        raise ValueError(f"{op}: cannot reduce a zero-size dimension of shape {shape_text(x.shape)} "
                         "(the reduction has no identity)")


_SUM, _MATMUL = Op.SUM, Op.MATMUL     # module names: Op.X costs 50 ns on Python 3.11
_FULL_REDUCTIONS: dict[tuple[int, ...], tuple[tuple[int, ...], tuple[int, ...]]] = {}


def _full_reduction(shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The axes a reduction over every element reduces (dims of size 1 need none) and
    its shape inside the graph, per shape: what sum() of a small tensor asks every time."""
    known = _FULL_REDUCTIONS.get(shape)
    if known is None:
        axes = tuple(a for a, size in enumerate(shape) if size != 1)
        known = _FULL_REDUCTIONS[shape] = (axes, (1,) * len(shape))
        if len(_FULL_REDUCTIONS) > 4096:      # bounded: shapes are user data
            _FULL_REDUCTIONS.clear()
    return known


def sum(x: Tensor, axis=None, keepdim: bool = False) -> Tensor:  # noqa: A001 (mirrors torch)
    node = x._node
    if axis is None and not keepdim and node.dtype.is_float and 0 < prod(node.shape) < SPLIT_MIN_REDUCED:
        # the common small case, short: the same nodes as the general path below
        axes, reduced_shape = _full_reduction(node.shape)
        if axes:
            node = make_node(_SUM, (node,), axes, reduced_shape, node.dtype, node.device)
        return result_tensor(ir.reshape(node, (1,)), x)
    axes = normalize_axes("sum", axis, x.ndim, x.shape)
    if not node.dtype.is_float:
        node = ir.cast(node, dtypes.int32)
    reduced = _reduce(Op.SUM, node, axes)
    return result_tensor(_finish(reduced, x, axes, keepdim, axis), x)


def mean(x: Tensor, axis=None, keepdim: bool = False) -> Tensor:
    axes = normalize_axes("mean", axis, x.ndim, x.shape)
    count = prod(x.shape[a] for a in axes)
    node = x._node if x.dtype.is_float else ir.cast(x._node, dtypes.float32)
    total = _reduce(Op.SUM, node, axes)
    # the mean of nothing is nan, as numpy's and PyTorch's
    scaled = ir.mul(total, ir.const_like(total, 1.0 / count if count else float("nan")))
    return result_tensor(_finish(scaled, x, axes, keepdim, axis), x)


def max(x: Tensor, axis=None, keepdim: bool = False) -> Tensor:  # noqa: A001
    axes = normalize_axes("max", axis, x.ndim, x.shape)
    _check_nonempty("max", x, axes)
    return result_tensor(_finish(_reduce(Op.MAX, x._node, axes), x, axes, keepdim, axis), x)


def min(x: Tensor, axis=None, keepdim: bool = False) -> Tensor:  # noqa: A001
    axes = normalize_axes("min", axis, x.ndim, x.shape)
    _check_nonempty("min", x, axes)
    negated = ir.neg(x._node)
    return result_tensor(_finish(ir.neg(_reduce(Op.MAX, negated, axes)), x, axes, keepdim, axis), x)


def argmax(x: Tensor, axis=None, keepdim: bool = False) -> Tensor:
    """Index of the first maximum (int32, no gradient). Without an axis, of the flattened tensor."""
    if axis is None:
        flat = ir.reshape(x._node, (x.numel(),))
        if x.numel() == 0:
            raise ValueError("argmax: cannot take the argmax of an empty tensor")
        return Tensor(ir.reshape(ir.reduce(Op.ARGMAX, flat, (0,)), ()), False)
    axis = normalize_axis("argmax", axis, x.ndim, x.shape)
    if x.ndim == 0:
        return argmax(x)      # numpy: a 0-d tensor's argmax along axis 0 is 0
    _check_nonempty("argmax", x, (axis,))
    node = ir.reduce(Op.ARGMAX, x._node, (axis,))
    if not keepdim:
        node = ir.reshape(node, tuple(s for a, s in enumerate(node.shape) if a != axis))
    return Tensor(node, False)


def argmin(x: Tensor, axis=None, keepdim: bool = False) -> Tensor:
    return argmax(-x, axis, keepdim)


def matmul(a: Tensor, b) -> Tensor:
    if isinstance(b, Tensor) and isinstance(a, Tensor):
        a_node, b_node = a._node, b._node
        a_shape, b_shape = a_node.shape, b_node.shape
        if len(a_shape) == 2 and len(b_shape) == 2 and a_shape[1] == b_shape[0] \
                and a_node.dtype is b_node.dtype and a_node.dtype.is_float \
                and a_node.device == b_node.device:      # the common case, short
            node = make_node(_MATMUL, (a_node, b_node), matmul_arg(a_node.dtype.name),
                             (a_shape[0], b_shape[1]), a_node.dtype, a_node.device)
            return result_tensor(node, a, b)
    if not isinstance(b, Tensor) or not isinstance(a, Tensor):
        raise TypeError(f"matmul: both operands must be Tensors, got {type(a).__name__} and "
                        f"{type(b).__name__}")
    a_node, b_node = a._node, b._node
    a_shape, b_shape = a_node.shape, b_node.shape
    if len(a_shape) < 2 or len(b_shape) < 2:
        raise ValueError(f"matmul: both operands need at least 2 dimensions, got shapes "
                         f"{shape_text(a_shape)} and {shape_text(b_shape)} (reshape a vector "
                         "to [1, n] or [n, 1])")
    if a_shape[-1] != b_shape[-2]:
        raise ValueError(f"matmul: shapes {shape_text(a_shape)} and {shape_text(b_shape)}: inner "
                         f"dimensions {a_shape[-1]} and {b_shape[-2]} differ")
    if a_node.device != b_node.device:
        raise ValueError(f"matmul: tensors are on different devices ({a.device}, {b.device})")
    dtype = dtypes.promote(a_node.dtype, b_node.dtype)
    if not dtype.is_float:
        dtype = dtypes.float32
    a_node, b_node = ir.cast(a_node, dtype), ir.cast(b_node, dtype)
    if len(a_shape) > 2 or len(b_shape) > 2:       # batched: broadcast the batch dimensions
        try:
            batch = broadcast_shapes("matmul", a_shape[:-2], b_shape[:-2])
        except ValueError:
            raise ValueError(f"matmul: batch dimensions of shapes {shape_text(a_shape)} and "
                             f"{shape_text(b_shape)} do not broadcast") from None
        a_node = expand_to(a_node, batch + a_shape[-2:])
        b_node = expand_to(b_node, batch + b_shape[-2:])
    return result_tensor(ir.matmul(a_node, b_node), a, b)


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    axis = normalize_axis("softmax", axis, x.ndim, x.shape)
    shifted = x - max(x, axis, keepdim=True).detach()     # the shift cancels in the gradient
    exps = shifted.exp()
    return exps / sum(exps, axis, keepdim=True)


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    axis = normalize_axis("log_softmax", axis, x.ndim, x.shape)
    shifted = x - max(x, axis, keepdim=True).detach()
    return shifted - sum(shifted.exp(), axis, keepdim=True).log()
