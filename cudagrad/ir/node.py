"""The lazy graph: hash-consed nodes.

A Node is an immutable description of a value: an op, its sources, a static
argument, and the result's shape, dtype and device. Building the same op on
the same sources twice gives the same Node, so shared subexpressions are found
for free and computed once. A node that has been computed keeps its buffer in
`realized`; later graphs read that buffer instead of recomputing it.
"""
from __future__ import annotations

import gc
import weakref
from enum import IntEnum, auto
from typing import Any

from cudagrad.dtypes import DType


class Op(IntEnum):       # int hashing: node keys are hashed on every op built
    # sources
    BUFFER = auto()      # arg: Storage (a leaf's data and its owner)
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
    """A leaf's data: a device buffer (never written again once filled; `assign` gives
    the Tensor a new leaf instead), and a weak reference to the Tensor that owns the
    leaf (where backward accumulates)."""

    __slots__ = ("buffer", "device", "owner", "__weakref__")

    def __init__(self, buffer, device: str):
        self.buffer = buffer
        self.device = device
        self.owner: Any = None       # weakref.ref to the owning Tensor, set by the Tensor layer


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


# Hash-consing table: (op, arg, shape, dtype, device, *source ids) -> a weak reference
# to the Node. Plain weak references without callbacks cost a fraction of a
# WeakValueDictionary's entries (no Python call when a node is built or dies); the
# entries of dead nodes are swept when the table has doubled since the last sweep
# and at every full garbage collection, so it stays within twice the live nodes.
# A live node keeps its sources alive, so the ids in a live node's key are never reused.
_NODES: dict = {}
_BUFFER = Op.BUFFER
_SWEEP_MIN = 4096
_sweep_at = _SWEEP_MIN


def make_node(op: Op, srcs: tuple[Node, ...], arg, shape: tuple[int, ...], dtype: DType,
              device: str) -> Node:
    if op is _BUFFER:
        return Node(op, srcs, arg, shape, dtype, device)   # every leaf is distinct
    count = len(srcs)         # the key spelled out for one and two sources: the common cases
    key: tuple
    if count == 1:
        key = (op, arg, shape, dtype, device, id(srcs[0]))
    elif count == 2:
        key = (op, arg, shape, dtype, device, id(srcs[0]), id(srcs[1]))
    else:
        key = (op, arg, shape, dtype, device, *map(id, srcs))
    ref = _NODES.get(key)
    if ref is not None:
        node = ref()
        if node is not None:
            return node
    node = Node(op, srcs, arg, shape, dtype, device)
    _NODES[key] = weakref.ref(node)
    if len(_NODES) >= _sweep_at:
        sweep_nodes()
    return node


def drop_dead_entries(table: dict) -> None:
    """Drop the entries of a table of weak references whose object has died."""
    for _ in range(8):
        try:
            entries = list(table.items())
            break
        except RuntimeError:   # changed meanwhile: by a sweep a collection ran, or another thread
            continue
    else:
        return
    for key, ref in entries:
        if ref() is None and table.get(key) is ref:
            table.pop(key, None)


def sweep_nodes() -> None:
    global _sweep_at
    drop_dead_entries(_NODES)
    _sweep_at = max(_SWEEP_MIN, 2 * len(_NODES))


def _sweep_after_full_collection(phase: str, info: dict) -> None:
    if phase == "stop" and info.get("generation") == 2:
        sweep_nodes()


gc.callbacks.append(_sweep_after_full_collection)
