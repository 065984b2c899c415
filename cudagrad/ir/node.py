"""The lazy graph: hash-consed nodes.

A Node is an immutable description of a value: an op, its sources, a static
argument, and the result's shape, dtype and device. Building the same op on
the same sources twice gives the same Node, so shared subexpressions are found
for free and computed once. A node that has been computed keeps its buffer in
`realized`; later graphs read that buffer instead of recomputing it.
"""
from __future__ import annotations

import weakref
from enum import IntEnum, auto
from typing import Any

from cudagrad.dtypes import DType


class Op(IntEnum):       # int hashing: node keys are hashed on every op built
    # sources
    BUFFER = auto()      # arg: Storage (a leaf's data, swappable by assign)
    CONST = auto()       # arg: a Python number, broadcast to the node's shape
    # elementwise, one source
    NEG = auto(); EXP = auto(); LOG = auto(); SQRT = auto(); ABS = auto()           # noqa: E702
    RELU = auto(); SIGMOID = auto(); TANH = auto(); SIN = auto(); COS = auto()      # noqa: E702
    CAST = auto()        # arg: the target DType (the node's dtype)
    DETACH = auto()      # identity in kernels; gradients stop here
    # elementwise, two sources (same shape: broadcasting is explicit EXPANDs)
    ADD = auto(); SUB = auto(); MUL = auto(); DIV = auto(); POW = auto()             # noqa: E702
    MAXIMUM = auto(); MINIMUM = auto()                                                # noqa: E702
    CMPLT = auto(); CMPLE = auto(); CMPEQ = auto(); CMPNE = auto()                   # noqa: E702
    # elementwise, three sources
    WHERE = auto()
    # reductions; arg: the reduced axes; reduced dims stay as size 1
    SUM = auto(); MAX = auto()                                                       # noqa: E702
    ARGMAX = auto()      # arg: (axis,); int32 result
    # contraction of [..., M, K] with [..., K, N] (same batch shape)
    MATMUL = auto()
    # movement: index math, never a copy
    RESHAPE = auto()     # arg: new shape
    PERMUTE = auto()     # arg: the order of source dims
    EXPAND = auto()      # arg: new shape (size-1 dims grow)
    SHRINK = auto()      # arg: per dim (start, step, count); step may be negative
    PAD = auto()         # arg: per dim (offset, step, count, size): inverse of SHRINK, zeros elsewhere


UNARY = {Op.NEG, Op.EXP, Op.LOG, Op.SQRT, Op.ABS, Op.RELU, Op.SIGMOID, Op.TANH, Op.SIN, Op.COS,
         Op.CAST, Op.DETACH}
BINARY = {Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.POW, Op.MAXIMUM, Op.MINIMUM,
          Op.CMPLT, Op.CMPLE, Op.CMPEQ, Op.CMPNE}
ELEMENTWISE = UNARY | BINARY | {Op.WHERE}
REDUCE = {Op.SUM, Op.MAX, Op.ARGMAX}
MOVEMENT = {Op.RESHAPE, Op.PERMUTE, Op.EXPAND, Op.SHRINK, Op.PAD}


class Storage:
    """A leaf's data: a device buffer that `assign` may replace between steps."""

    __slots__ = ("buffer", "device", "__weakref__")

    def __init__(self, buffer, device: str):
        self.buffer = buffer
        self.device = device


class Node:
    __slots__ = ("op", "srcs", "arg", "shape", "dtype", "device", "realized", "__weakref__")

    def __init__(self, op: Op, srcs: tuple[Node, ...], arg, shape: tuple[int, ...],
                 dtype: DType, device: str):
        self.op = op
        self.srcs = srcs
        self.arg = arg
        self.shape = shape
        self.dtype = dtype
        self.device = device
        self.realized: Any = None     # a device buffer once computed

    @property
    def numel(self) -> int:
        return prod(self.shape)

    def __repr__(self) -> str:
        arg = "" if self.arg is None or self.op == Op.BUFFER else f" {self.arg}"
        return f"<{self.op.name}{arg} {list(self.shape)} {self.dtype.name} {self.device}>"


def prod(values) -> int:
    result = 1
    for value in values:
        result *= value
    return result


# Hash-consing table: (op, arg, source ids, shape, dtype, device) -> Node.
# Weak values, so a graph nobody holds is freed; a live node keeps its sources
# alive, so the ids in a live key cannot be reused.
_NODES: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def make_node(op: Op, srcs: tuple[Node, ...], arg, shape: tuple[int, ...], dtype: DType,
              device: str) -> Node:
    if op == Op.BUFFER:
        return Node(op, srcs, arg, shape, dtype, device)   # every leaf is distinct
    key = (op, arg, tuple(id(s) for s in srcs), shape, dtype, device)
    node = _NODES.get(key)
    if node is None:
        node = Node(op, srcs, arg, shape, dtype, device)
        _NODES[key] = node
    return node
