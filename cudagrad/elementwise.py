"""Arithmetic, elementwise functions, comparisons and where, with numpy broadcasting."""
from __future__ import annotations

import numbers

from cudagrad import dtypes
from cudagrad.checks import broadcast_shapes
from cudagrad.ir import ops as ir
from cudagrad.ir.node import Op
from cudagrad.tensor import Tensor, result_tensor


def _is_scalar(value) -> bool:
    return isinstance(value, numbers.Number) and not isinstance(value, complex)


def _scalar_dtype(value, other: dtypes.DType) -> dtypes.DType:
    """A Python scalar takes the tensor's dtype, but a float makes an integer tensor float32."""
    if isinstance(value, bool):
        return other
    if isinstance(value, numbers.Integral):
        return dtypes.int32 if other == dtypes.bool_ else other
    return other if other.is_float else dtypes.float32


def _check_operand(op: str, value) -> None:
    if not isinstance(value, Tensor) and not _is_scalar(value):
        raise TypeError(f"{op}: unsupported operand of type {type(value).__name__}; "
                        "expected a Tensor or a Python number")


def expand_to(tensor_node, shape):
    """Broadcast a node to shape: prepend size-1 dims, then expand."""
    if tensor_node.shape == tuple(shape):
        return tensor_node
    padded = (1,) * (len(shape) - len(tensor_node.shape)) + tensor_node.shape
    return ir.expand(ir.reshape(tensor_node, padded), shape)


def operands(op: str, *values, dtype: dtypes.DType | None = None):
    """Check, promote and broadcast operands (Tensors or scalars) to one shape and dtype.
    Returns (nodes, tensors among the values, shape, dtype, device)."""
    tensors = []
    for value in values:
        if isinstance(value, Tensor):
            tensors.append(value)
        elif type(value) not in _PLAIN_SCALARS:
            _check_operand(op, value)
    device = tensors[0].device
    for t in tensors[1:]:
        if t.device != device:
            devices = {t.device for t in tensors}
            raise ValueError(f"{op}: tensors are on different devices ({', '.join(sorted(devices))}); "
                             "move them with .to(device) first")
    shape = tensors[0].shape if len(tensors) == 1 else broadcast_shapes(op, *[t.shape for t in tensors])
    if dtype is None:
        dtype = tensors[0].dtype
        for t in tensors[1:]:
            dtype = dtypes.promote(dtype, t.dtype)
        for value in values:
            if not isinstance(value, Tensor):
                dtype = dtypes.promote(dtype, _scalar_dtype(value, dtype))
    nodes = []
    for value in values:
        if isinstance(value, Tensor):
            nodes.append(expand_to(ir.cast(value._node, dtype), shape))
        else:
            nodes.append(ir.const(value, shape, dtype, device))
    return nodes, tensors, shape, dtype, device


_PLAIN_SCALARS = (float, int, bool)


def binary(op: Op, name: str, a, b, float_result: bool = False) -> Tensor:
    """a op b. float_result: an integer result is float32 instead (true division)."""
    # The common cases first, short (an optimizer's update is dozens of them a parameter):
    # two tensors of one shape, dtype and device, or a float tensor and a Python number.
    # They build exactly the nodes operands() builds below.
    if isinstance(a, Tensor):
        a_node = a._node
        if isinstance(b, Tensor):
            b_node = b._node
            if a_node.dtype is b_node.dtype and a_node.device == b_node.device \
                    and (a_node.dtype.is_float or not float_result):
                if a_node.shape != b_node.shape:      # broadcast (its errors name the op)
                    shape = broadcast_shapes(name, a_node.shape, b_node.shape)
                    a_node, b_node = expand_to(a_node, shape), expand_to(b_node, shape)
                return result_tensor(ir.binary(op, a_node, b_node), a, b)
        elif (type(b) is float or type(b) is int) and a_node.dtype.is_float:
            constant = ir.const(b, a_node.shape, a_node.dtype, a_node.device)
            return result_tensor(ir.binary(op, a_node, constant), a)
    elif isinstance(b, Tensor) and (type(a) is float or type(a) is int) and b._node.dtype.is_float:
        b_node = b._node
        constant = ir.const(a, b_node.shape, b_node.dtype, b_node.device)
        return result_tensor(ir.binary(op, constant, b_node), b)
    dtype = _float_dtype(a, b) if float_result and (isinstance(a, Tensor) or isinstance(b, Tensor)) else None
    nodes, tensors, _, _, _ = operands(name, a, b, dtype=dtype)
    return result_tensor(ir.binary(op, nodes[0], nodes[1]), *tensors)


def _float_dtype(*values) -> dtypes.DType:
    tensors = [v for v in values if isinstance(v, Tensor)]
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = dtypes.promote(dtype, t.dtype)
    return dtype if dtype.is_float else dtypes.float32


# module names, not Op.X: enum attributes cost 50 ns on Python 3.11 (see ir/ops.py)
_ADD, _SUB, _MUL, _DIV = Op.ADD, Op.SUB, Op.MUL, Op.DIV


def add(a, b): return binary(_ADD, "add", a, b)
def sub(a, b): return binary(_SUB, "sub", a, b)
def mul(a, b): return binary(_MUL, "mul", a, b)
def div(a, b): return binary(_DIV, "div", a, b, float_result=True)
def maximum(a, b): return binary(Op.MAXIMUM, "maximum", a, b)
def minimum(a, b): return binary(Op.MINIMUM, "minimum", a, b)


def power(a, b) -> Tensor:
    nodes, tensors, shape, dtype, device = operands("pow", a, b)
    base, exponent = nodes
    if exponent.op == Op.CONST and exponent.arg == 2:
        return result_tensor(ir.mul(base, base), *tensors)          # exact and cheap
    return result_tensor(ir.binary(Op.POW, base, exponent), *tensors)


def compare(op: Op, name: str, a, b, swap: bool = False) -> Tensor:
    nodes, _, _, _, _ = operands(name, a, b)
    left, right = (nodes[1], nodes[0]) if swap else (nodes[0], nodes[1])
    return Tensor(ir.binary(op, left, right), False)    # no gradient through a comparison


def unary(op: Op, name: str, x: Tensor, float_only: bool = True) -> Tensor:
    _check_operand(name, x)
    node = x._node
    if float_only and not node.dtype.is_float:
        node = ir.cast(node, dtypes.float32)
    return result_tensor(ir.unary(op, node), x)


def where(condition, x, y) -> Tensor:
    _check_operand("where", condition)
    if not isinstance(condition, Tensor):
        raise TypeError("where: the condition must be a Tensor")
    if not isinstance(x, Tensor) and not isinstance(y, Tensor):
        raise TypeError("where: at least one of x and y must be a Tensor")
    value_nodes, tensors, shape, dtype, device = operands("where", x, y)
    if condition.device != device:
        raise ValueError(f"where: condition is on {condition.device}, values on {device}")
    shape = broadcast_shapes("where", condition.shape, shape)
    cond = expand_to(condition._node, shape)
    x_node, y_node = (expand_to(n, shape) for n in value_nodes)
    return result_tensor(ir.where(cond, x_node, y_node), *tensors)


def clamp(x: Tensor, low=None, high=None) -> Tensor:
    if low is None and high is None:
        raise ValueError("clamp: give at least one of low and high")
    result = x
    if low is not None:
        result = maximum(result, low)
    if high is not None:
        result = minimum(result, high)
    return result
