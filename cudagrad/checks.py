"""Build-time input checks: each error names the op and the shapes involved."""
from __future__ import annotations


class AxisError(IndexError, ValueError):
    """An axis out of range (both an IndexError, as PyTorch, and a ValueError, as numpy)."""


class GradientError(RuntimeError, ValueError):
    """backward() that cannot run: a non-scalar without a gradient, or no graph."""


def shape_text(shape) -> str:
    return str(list(shape))


def normalize_axis(op: str, axis, ndim: int, shape=None) -> int:
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"{op}: axis must be an int, got {type(axis).__name__}")
    low, high = (-ndim, ndim - 1) if ndim else (-1, 0)
    if not low <= axis <= high:
        where = f" for shape {shape_text(shape)}" if shape is not None else f" for a {ndim}-d tensor"
        raise AxisError(f"{op}: axis {axis} is out of range{where} (expected {low} to {high})")
    return axis % ndim if ndim else 0


def normalize_axes(op: str, axis, ndim: int, shape=None) -> tuple[int, ...]:
    """None means every axis; an int or a tuple of ints otherwise (no repeats)."""
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    result = tuple(normalize_axis(op, a, ndim, shape) for a in axes)
    if len(set(result)) != len(result):
        raise ValueError(f"{op}: axis {axis} repeats a dimension of shape {shape_text(shape)}")
    if ndim == 0:
        return ()        # a 0-d tensor accepts axis 0 or -1, as numpy: nothing to reduce
    return result


_BROADCASTS: dict = {}       # (shapes) -> their broadcast shape: the same pairs recur every step


def broadcast_shapes(op: str, *shapes) -> tuple[int, ...]:
    try:
        known = _BROADCASTS.get(shapes)
    except TypeError:          # a list among the shapes: unhashable, computed below
        known = None
    if known is not None:
        return known
    rank = max(len(s) for s in shapes)
    result = []
    for position in range(rank):
        sizes = {s[position - rank + len(s)] for s in shapes if position - rank + len(s) >= 0}
        sizes.discard(1)
        if len(sizes) > 1:
            listed = " and ".join(shape_text(s) for s in shapes)
            raise ValueError(f"{op}: shapes {listed} do not broadcast")
        result.append(sizes.pop() if sizes else 1)
    if len(_BROADCASTS) > 4096:      # bounded: shapes are user data
        _BROADCASTS.clear()
    known = _BROADCASTS[tuple(tuple(s) for s in shapes)] = tuple(result)
    return known


def check_shape(op: str, shape) -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (list, tuple)):
        raise TypeError(f"{op}: shape must be a list or tuple of ints, got {type(shape).__name__}")
    for size in shape:
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"{op}: shape {list(shape)} must hold ints, got {size!r}")
        if size < 0:
            raise ValueError(f"{op}: shape {list(shape)} has a negative dimension {size}")
    return tuple(shape)
