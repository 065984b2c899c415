"""Graph constructors and, beside each, its derivative rule.

Each rule takes the node, the gradient flowing into it (a node of the same
shape) and returns one gradient per source (None where no gradient flows).
The rules build nodes with the same constructors, so a gradient is a lazy
graph like any other. Inputs were checked by the Tensor layer; these functions
assume shapes that fit.
"""
from __future__ import annotations

from cudagrad.dtypes import DType, float32
from cudagrad.ir.node import Node, Op, make_node, prod
from cudagrad.precision import matmul_arg

GRAD_RULES: dict = {}
# Op.X costs 50 ns on Python 3.11 (the enum's metaclass has a __getattr__), a module name
# 10: the constructors below run for every node built.
_CONST, _NEG, _CAST, _RESHAPE, _PERMUTE, _EXPAND, _MATMUL = (
    Op.CONST, Op.NEG, Op.CAST, Op.RESHAPE, Op.PERMUTE, Op.EXPAND, Op.MATMUL)


def grad_rule(*ops: Op):
    def register(function):
        for op in ops:
            GRAD_RULES[op] = function
        return function
    return register


# ---- sources -----------------------------------------------------------------

def const(value, shape: tuple[int, ...], dtype: DType, device: str) -> Node:
    value = bool(value) if dtype.name == "bool" else int(value) if not dtype.is_float else float(value)
    return make_node(_CONST, (), value, tuple(shape), dtype, device)


def const_like(node: Node, value) -> Node:
    return const(value, node.shape, node.dtype, node.device)


def is_const(node: Node, value=None) -> bool:
    return node.op is _CONST and (value is None or node.arg == value)


# ---- elementwise ---------------------------------------------------------------

def unary(op: Op, x: Node) -> Node:
    if x.op is _CONST and op is _NEG:
        return const_like(x, -x.arg)
    return make_node(op, (x,), None, x.shape, x.dtype, x.device)


_COMPARISONS = frozenset((Op.CMPLT, Op.CMPLE, Op.CMPEQ, Op.CMPNE))


def binary(op: Op, a: Node, b: Node) -> Node:
    """a and b have one shape and dtype; constants fold where the result is exact."""
    if a.op is _CONST or b.op is _CONST:
        folded = _fold_constants(op, a, b)
        if folded is not None:
            return folded
    dtype = float32 if op in _COMPARISONS else a.dtype
    return make_node(op, (a, b), None, a.shape, dtype, a.device)


def _fold_constants(op: Op, a: Node, b: Node) -> Node | None:
    if op == Op.ADD:
        if is_const(a, 0):
            return b
        if is_const(b, 0):
            return a
    if op == Op.SUB and is_const(b, 0):
        return a
    if op == Op.MUL:
        if is_const(a, 1):
            return b
        if is_const(b, 1):
            return a
    if op == Op.DIV and is_const(b, 1):
        return a
    if a.op == Op.CONST and b.op == Op.CONST and op in (Op.ADD, Op.SUB, Op.MUL):
        value = {Op.ADD: a.arg + b.arg, Op.SUB: a.arg - b.arg, Op.MUL: a.arg * b.arg}[op]
        return const_like(a, value)
    return None


def add(a, b): return binary(Op.ADD, a, b)
def sub(a, b): return binary(Op.SUB, a, b)
def mul(a, b): return binary(Op.MUL, a, b)
def div(a, b): return binary(Op.DIV, a, b)
def neg(x): return unary(Op.NEG, x)


def where(cond: Node, x: Node, y: Node) -> Node:
    return make_node(Op.WHERE, (cond, x, y), None, x.shape, x.dtype, x.device)


def cast(x: Node, dtype: DType) -> Node:
    if x.dtype == dtype:
        return x
    if x.op is _CONST:
        return const(x.arg, x.shape, dtype, x.device)
    return make_node(_CAST, (x,), dtype, x.shape, dtype, x.device)


def detach(x: Node) -> Node:
    return make_node(Op.DETACH, (x,), None, x.shape, x.dtype, x.device)


@grad_rule(Op.NEG)
def _grad_neg(out, g, x): return (neg(g),)
@grad_rule(Op.EXP)
def _grad_exp(out, g, x): return (mul(g, out),)
@grad_rule(Op.LOG)
def _grad_log(out, g, x): return (div(g, x),)
@grad_rule(Op.SQRT)
def _grad_sqrt(out, g, x): return (div(g, mul(const_like(out, 2), out)),)
@grad_rule(Op.SIN)
def _grad_sin(out, g, x): return (mul(g, unary(Op.COS, x)),)
@grad_rule(Op.COS)
def _grad_cos(out, g, x): return (neg(mul(g, unary(Op.SIN, x))),)
@grad_rule(Op.TANH)
def _grad_tanh(out, g, x): return (mul(g, sub(const_like(out, 1), mul(out, out))),)
@grad_rule(Op.SIGMOID)
def _grad_sigmoid(out, g, x): return (mul(g, mul(out, sub(const_like(out, 1), out))),)
@grad_rule(Op.RELU)
def _grad_relu(out, g, x): return (where(binary(Op.CMPLT, const_like(x, 0), x), g, const_like(g, 0)),)
@grad_rule(Op.CAST)
def _grad_cast(out, g, x): return (cast(g, x.dtype),)
@grad_rule(Op.DETACH)
def _grad_detach(out, g, x): return (None,)


@grad_rule(Op.ABS)
def _grad_abs(out, g, x):
    # sign(x): 0 at 0, as PyTorch
    positive = binary(Op.CMPLT, const_like(x, 0), x)
    negative = binary(Op.CMPLT, x, const_like(x, 0))
    return (mul(g, cast(sub(positive, negative), g.dtype)),)


@grad_rule(Op.ADD)
def _grad_add(out, g, a, b): return g, g
@grad_rule(Op.SUB)
def _grad_sub(out, g, a, b): return g, neg(g)
@grad_rule(Op.MUL)
def _grad_mul(out, g, a, b): return mul(g, b), mul(g, a)
@grad_rule(Op.DIV)
def _grad_div(out, g, a, b): return div(g, b), neg(div(mul(g, out), b))


@grad_rule(Op.POW)
def _grad_pow(out, g, a, b):
    grad_a = mul(g, mul(b, binary(Op.POW, a, sub(b, const_like(b, 1)))))
    if b.op == Op.CONST:
        return grad_a, None
    # d/db a^b = a^b log a; where a == 0 PyTorch gives 0 for b > 0 (log(0) * 0 would be nan)
    log_a = unary(Op.LOG, where(binary(Op.CMPEQ, a, const_like(a, 0)), const_like(a, 1), a))
    return grad_a, mul(g, mul(out, log_a))


def _pick(mask_of_a: Node, g: Node) -> tuple[Node, Node]:
    zero = const_like(g, 0)
    return where(mask_of_a, g, zero), where(mask_of_a, zero, g)


@grad_rule(Op.MAXIMUM)
def _grad_maximum(out, g, a, b): return _pick(binary(Op.CMPLE, b, a), g)   # ties go to a
@grad_rule(Op.MINIMUM)
def _grad_minimum(out, g, a, b): return _pick(binary(Op.CMPLE, a, b), g)


@grad_rule(Op.CMPLT, Op.CMPLE, Op.CMPEQ, Op.CMPNE)
def _grad_compare(out, g, a, b): return None, None


@grad_rule(Op.WHERE)
def _grad_where(out, g, cond, x, y):
    zero = const_like(g, 0)
    return None, where(cond, g, zero), where(cond, zero, g)


# ---- reductions ----------------------------------------------------------------

def reduced_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if i in axes else size for i, size in enumerate(shape))


def reduce(op: Op, x: Node, axes: tuple[int, ...]) -> Node:
    axes = tuple(sorted(a for a in axes if x.shape[a] != 1 or op == Op.ARGMAX))
    if not axes:
        return x
    dtype = x.dtype
    if op == Op.ARGMAX:
        from cudagrad.dtypes import int32
        dtype = int32
    return make_node(op, (x,), axes, reduced_shape(x.shape, axes), dtype, x.device)


@grad_rule(Op.SUM)
def _grad_sum(out, g, x): return (expand(g, x.shape),)


@grad_rule(Op.MAX)
def _grad_max(out, g, x):
    # spread evenly over ties, as PyTorch's amax/amin
    hits = cast(binary(Op.CMPEQ, x, expand(out, x.shape)), x.dtype)
    count = reduce(Op.SUM, hits, out.arg)
    return (mul(hits, expand(div(g, count), x.shape)),)


@grad_rule(Op.ARGMAX)
def _grad_argmax(out, g, x): return (None,)


# ---- matmul ---------------------------------------------------------------------

def matmul(a: Node, b: Node) -> Node:
    """arg: "tf32" where cg.set_float32_matmul_precision("high") allowed TF32 when it was
    built (part of the node, so of every plan key), else None."""
    shape = a.shape[:-1] + b.shape[-1:]
    return make_node(_MATMUL, (a, b), matmul_arg(a.dtype.name), shape, a.dtype, a.device)


def swap_last(x: Node) -> Node:
    order = tuple(range(len(x.shape) - 2)) + (len(x.shape) - 1, len(x.shape) - 2)
    return permute(x, order)


@grad_rule(Op.MATMUL)
def _grad_matmul(out, g, a, b): return matmul(g, swap_last(b)), matmul(swap_last(a), g)


# ---- movement -------------------------------------------------------------------

def reshape(x: Node, shape: tuple[int, ...]) -> Node:
    shape = tuple(shape)
    if shape == x.shape:
        return x
    if x.op is _CONST:
        return const(x.arg, shape, x.dtype, x.device)
    if x.op is _RESHAPE:
        x = x.srcs[0]
        if shape == x.shape:
            return x
    return make_node(_RESHAPE, (x,), shape, shape, x.dtype, x.device)


def permute(x: Node, order: tuple[int, ...]) -> Node:
    order = tuple(order)
    if order == tuple(range(len(order))):
        return x
    shape = tuple(x.shape[i] for i in order)
    if x.op is _CONST:
        return const(x.arg, shape, x.dtype, x.device)
    if x.op is _PERMUTE:
        inner = x.arg
        return permute(x.srcs[0], tuple(inner[i] for i in order))
    return make_node(_PERMUTE, (x,), order, shape, x.dtype, x.device)


def expand(x: Node, shape: tuple[int, ...]) -> Node:
    shape = tuple(shape)
    if shape == x.shape:
        return x
    if x.op is _CONST:
        return const(x.arg, shape, x.dtype, x.device)
    return make_node(_EXPAND, (x,), shape, shape, x.dtype, x.device)


def shrink(x: Node, spec: tuple[tuple[int, int, int], ...]) -> Node:
    """spec: per dim (start, step, count)."""
    spec = tuple(spec)
    if all(start == 0 and step == 1 and count == size
           for (start, step, count), size in zip(spec, x.shape)):
        return x
    shape = tuple(count for _, _, count in spec)
    if x.op == Op.CONST:
        return const(x.arg, shape, x.dtype, x.device)
    return make_node(Op.SHRINK, (x,), spec, shape, x.dtype, x.device)


def pad(x: Node, spec: tuple[tuple[int, int, int, int], ...]) -> Node:
    """spec: per dim (offset, step, count, size): out[offset + i*step] = x[i]."""
    spec = tuple(spec)
    shape = tuple(size for *_, size in spec)
    if all(offset == 0 and step == 1 and count == size for offset, step, count, size in spec):
        return x
    return make_node(Op.PAD, (x,), spec, shape, x.dtype, x.device)


@grad_rule(Op.RESHAPE)
def _grad_reshape(out, g, x): return (reshape(g, x.shape),)


@grad_rule(Op.PERMUTE)
def _grad_permute(out, g, x):
    inverse = [0] * len(out.arg)
    for position, axis in enumerate(out.arg):
        inverse[axis] = position
    swaps_last = tuple(inverse) == tuple(range(len(inverse) - 2)) + (len(inverse) - 1, len(inverse) - 2)
    if swaps_last and g.op == Op.MATMUL and g.realized is None:
        # (a @ b)^T = b^T @ a^T: the weight of x @ W.T gets its gradient in W's own layout,
        # so the optimizer's update can run in that matmul's epilogue
        a, b = g.srcs
        return (matmul(swap_last(b), swap_last(a)),)
    return (permute(g, tuple(inverse)),)


@grad_rule(Op.EXPAND)
def _grad_expand(out, g, x):
    axes = tuple(i for i, (before, after) in enumerate(zip(x.shape, out.shape)) if before != after)
    return (reduce(Op.SUM, g, axes),)


@grad_rule(Op.SHRINK)
def _grad_shrink(out, g, x):
    return (pad(g, tuple((start, step, count, size)
                         for (start, step, count), size in zip(out.arg, x.shape))),)


@grad_rule(Op.PAD)
def _grad_pad(out, g, x):
    return (shrink(g, tuple((offset, step, count) for offset, step, count, _ in out.arg)),)


def numel(node: Node) -> int:
    return prod(node.shape)
