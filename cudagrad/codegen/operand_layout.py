"""Which matmul operands a tiled CUDA kernel may read 16 bytes at a time.

An operand that is a view of one stored buffer (movement ops only: reshape,
permute, expand, shrink) has, per dim, a stride and one constant offset into that
buffer. Where the K axis (or the M/N axis) has stride 1 and every other stride,
the offset and that axis' extent are multiples of the vector width, a tile's rows
are runs of whole 16-byte vectors. The kernel still checks the buffer's own
address at run time (a buffer imported through DLPack may start anywhere).
Anything else (pads, computed prologues, casts, odd sizes) takes the generic,
one-element-at-a-time path through the operand's index math.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from cudagrad.ir.node import Node, Op, prod

VECTOR_BYTES = 16


@dataclass(frozen=True)
class OperandLayout:
    """operand[batch, outer, inner] at param[base(batch) + outer * stride + inner]:
    `contiguous` says which matrix axis is `inner`: "k" (a row-major A, or B = W^T)
    or "mn" (a row-major B, or A = X^T)."""
    param: str
    contiguous: str              # "k" | "mn"
    stride: int                  # elements between consecutive outer indices
    base: str                    # C expression of the batch's start, in elements
    vector: int                  # elements per 16-byte vector


def _contiguous_strides(shape: tuple[int, ...]) -> list[int]:
    strides, running = [], 1
    for size in reversed(shape):
        strides.append(running)
        running *= size
    return strides[::-1]


def _reshape_strides(old_shape, old_strides, new_shape) -> list[int] | None:
    """Strides of a reshape that is a view (as torch's view): runs of old dims that are
    contiguous with each other may be split or merged; None where a copy would be needed."""
    old = [(size, stride) for size, stride in zip(old_shape, old_strides) if size != 1]
    new_strides = [0] * len(new_shape)
    position = 0
    new_index = 0
    new_dims = [i for i, size in enumerate(new_shape) if size != 1]
    while position < len(old) or new_index < len(new_dims):
        if position >= len(old) or new_index >= len(new_dims):
            return None
        # one chunk: old dims [position, end) that match new dims [new_index, new_end) in size
        old_count, new_count = old[position][0], new_shape[new_dims[new_index]]
        end, new_end = position + 1, new_index + 1
        while old_count != new_count:
            if old_count < new_count:
                if end >= len(old):
                    return None
                old_count *= old[end][0]
                end += 1
            else:
                if new_end >= len(new_dims):
                    return None
                new_count *= new_shape[new_dims[new_end]]
                new_end += 1
        for i in range(position, end - 1):      # the chunk must be one strided run
            if old[i][1] != old[i + 1][1] * old[i + 1][0]:
                return None
        stride = old[end - 1][1]
        for i in reversed(range(new_index, new_end)):
            new_strides[new_dims[i]] = stride
            stride *= new_shape[new_dims[i]]
        position, new_index = end, new_end
    return new_strides


def strided_view(node: Node, stored: Callable[[Node], bool]) -> tuple[Node, int, list[int]] | None:
    """(buffer node, element offset, strides) where node is a view of a stored node."""
    if stored(node):
        return node, 0, _contiguous_strides(node.shape)
    if node.op == Op.DETACH:
        return strided_view(node.srcs[0], stored)
    if node.op not in (Op.RESHAPE, Op.PERMUTE, Op.EXPAND, Op.SHRINK):
        return None
    src = node.srcs[0]
    inner = strided_view(src, stored)
    if inner is None:
        return None
    base, offset, strides = inner
    if node.op == Op.RESHAPE:
        if prod(node.shape) == 0:
            return None
        reshaped = _reshape_strides(src.shape, strides, node.shape)
        return None if reshaped is None else (base, offset, reshaped)
    if node.op == Op.PERMUTE:
        return base, offset, [strides[axis] for axis in node.arg]
    if node.op == Op.EXPAND:
        return base, offset, [0 if before == 1 and after != 1 else stride
                              for before, after, stride in zip(src.shape, node.shape, strides)]
    shrunk = []
    for (start, step, _), stride in zip(node.arg, strides):
        offset += start * stride
        shrunk.append(stride * step)
    return base, offset, shrunk


def operand_layout(operand: Node, mn_axis: int, stored: Callable[[Node], bool],
                   param: Callable[[Node], str | None], index_type: str) -> OperandLayout | None:
    """The layout of a [..., M, K] (mn_axis -2) or [..., K, N] (mn_axis -1) operand, where
    16-byte vectors fit; None for the generic path."""
    if operand.dtype.name not in ("float32", "bfloat16") or operand.numel == 0:
        return None
    view = strided_view(operand, stored)
    if view is None:
        return None
    buffer, offset, strides = view
    name = param(buffer)
    if name is None:
        return None
    vector = VECTOR_BYTES // operand.dtype.itemsize
    k_axis = -1 if mn_axis == -2 else -2
    shape = operand.shape
    # a size-1 axis is never stepped along: its stride does not matter
    stride_of = [0 if size == 1 else stride for size, stride in zip(shape, strides)]
    for inner_axis, outer_axis, contiguous in ((k_axis, mn_axis, "k"), (mn_axis, k_axis, "mn")):
        inner_ok = stride_of[inner_axis] == 1 or shape[inner_axis] == 1
        if not inner_ok or shape[inner_axis] % vector:
            continue
        others = [offset, stride_of[outer_axis]] + stride_of[:-2]
        if any(value % vector for value in others):
            continue
        return OperandLayout(name, contiguous, stride_of[outer_axis],
                             _batch_base(shape[:-2], stride_of[:-2], offset, index_type), vector)
    return None


def _batch_base(batch_shape, batch_strides, offset: int, index_type: str) -> str:
    """C expression: the element offset of batch number `batch` (a flat index)."""
    terms = [str(offset)] if offset else []
    inner = 1
    for size, stride in reversed(list(zip(batch_shape, batch_strides))):
        if size != 1 and stride != 0:
            coord = "batch" if inner == 1 else f"(batch / {inner})"
            if inner * size != prod(batch_shape):
                coord = f"({coord} % {size})"
            terms.append(f"({index_type}){coord} * {stride}")
        inner *= size
    return " + ".join(terms) if terms else "0"
