"""Movement ops: views that change index math, never copy."""
from __future__ import annotations

from cudagrad import dtypes
from cudagrad.checks import AxisError, normalize_axis, shape_text
from cudagrad.ir import ops as ir
from cudagrad.ir.node import Node, prod
from cudagrad.tensor import Tensor, result_tensor


def _shape_args(op: str, shape) -> tuple:
    if len(shape) == 1 and isinstance(shape[0], (list, tuple)):
        shape = tuple(shape[0])
    for size in shape:
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"{op}: sizes must be ints, got {shape!r}")
    return tuple(shape)


def reshape(x: Tensor, *shape) -> Tensor:
    shape = _shape_args("reshape", shape)
    if shape.count(-1) > 1:
        raise ValueError(f"reshape: only one -1 is allowed, got {list(shape)} for a tensor of "
                         f"shape {shape_text(x.shape)}")
    if any(size < -1 for size in shape):
        raise ValueError(f"reshape: invalid size in {list(shape)} for a tensor of shape "
                         f"{shape_text(x.shape)}")
    if -1 in shape:
        known = prod(size for size in shape if size != -1)
        if known == 0 or x.numel() % known:
            raise ValueError(f"reshape: cannot reshape {shape_text(x.shape)} ({x.numel()} elements) "
                             f"to {list(shape)}")
        shape = tuple(x.numel() // known if size == -1 else size for size in shape)
    if prod(shape) != x.numel():
        raise ValueError(f"reshape: cannot reshape {shape_text(x.shape)} ({x.numel()} elements) to "
                         f"{list(shape)} ({prod(shape)} elements)")
    return result_tensor(ir.reshape(x._node, shape), x)


def permute(x: Tensor, *dims) -> Tensor:
    dims = _shape_args("permute", dims)
    axes = tuple(normalize_axis("permute", d, x.ndim, x.shape) for d in dims)
    if sorted(axes) != list(range(x.ndim)):
        raise ValueError(f"permute: {list(dims)} is not a permutation of the dims of shape "
                         f"{shape_text(x.shape)}")
    return result_tensor(ir.permute(x._node, axes), x)


def transpose(x: Tensor, dim0: int = -2, dim1: int = -1) -> Tensor:
    if x.ndim < 2:
        return x
    order = list(range(x.ndim))
    a = normalize_axis("transpose", dim0, x.ndim, x.shape)
    b = normalize_axis("transpose", dim1, x.ndim, x.shape)
    order[a], order[b] = order[b], order[a]
    return result_tensor(ir.permute(x._node, tuple(order)), x)


def expand(x: Tensor, *shape) -> Tensor:
    shape = _shape_args("expand", shape)
    if len(shape) < x.ndim:
        raise ValueError(f"expand: cannot expand shape {shape_text(x.shape)} to fewer dims {list(shape)}")
    padded = (1,) * (len(shape) - x.ndim) + x.shape
    final = []
    for size, old in zip(shape, padded):
        if size == -1:
            size = old
        if old != 1 and size != old:
            raise ValueError(f"expand: cannot expand shape {shape_text(x.shape)} to {list(shape)}: "
                             f"size {old} is not 1 and differs from {size}")
        if size < 0:
            raise ValueError(f"expand: invalid size {size} in {list(shape)}")
        final.append(size)
    return result_tensor(ir.expand(ir.reshape(x._node, padded), tuple(final)), x)


def squeeze(x: Tensor, axis=None) -> Tensor:
    if axis is None:
        shape = tuple(size for size in x.shape if size != 1)
    else:
        given = axis if isinstance(axis, (tuple, list)) else (axis,)
        axes = {normalize_axis("squeeze", a, x.ndim, x.shape) for a in given}
        shape = tuple(size for a, size in enumerate(x.shape) if not (a in axes and size == 1))
    return result_tensor(ir.reshape(x._node, shape), x)


def unsqueeze(x: Tensor, axis: int) -> Tensor:
    axis = normalize_axis("unsqueeze", axis, x.ndim + 1, x.shape)
    shape = x.shape[:axis] + (1,) + x.shape[axis:]
    return result_tensor(ir.reshape(x._node, shape), x)


def flatten(x: Tensor, start: int = 0, end: int = -1) -> Tensor:
    if x.ndim == 0:
        return reshape(x, 1)
    start = normalize_axis("flatten", start, x.ndim, x.shape)
    end = normalize_axis("flatten", end, x.ndim, x.shape)
    if start > end:
        raise ValueError(f"flatten: start {start} is after end {end} for shape {shape_text(x.shape)}")
    shape = x.shape[:start] + (prod(x.shape[start:end + 1]),) + x.shape[end + 1:]
    return result_tensor(ir.reshape(x._node, shape), x)


def getitem(x: Tensor, index) -> Tensor:
    """Basic indexing: ints, slices (any step), None and ...; a view, no copy."""
    items = index if isinstance(index, tuple) else (index,)
    for item in items:
        if not (item is None or item is Ellipsis or isinstance(item, slice)
                or (isinstance(item, int) and not isinstance(item, bool))):
            raise TypeError(f"index: unsupported index {item!r} of type {type(item).__name__}; "
                            "use ints, slices, None and ... (tensor indexing is not supported)")
    if sum(item is Ellipsis for item in items) > 1:
        raise IndexError("index: at most one ... is allowed")
    used = sum(1 for item in items if item is not None and item is not Ellipsis)
    if used > x.ndim:
        raise IndexError(f"index: too many indices ({used}) for shape {shape_text(x.shape)}")
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items = items[:at] + (slice(None),) * (x.ndim - used) + items[at + 1:]
    else:
        items = items + (slice(None),) * (x.ndim - used)
    spec, final_shape, dim = [], [], 0
    for item in items:
        if item is None:
            final_shape.append(1)
            continue
        size = x.shape[dim]
        if isinstance(item, int):
            if not -size <= item < size:
                raise IndexError(f"index: index {item} is out of range for dimension {dim} of "
                                 f"size {size} (shape {shape_text(x.shape)})")
            spec.append((item % size, 1, 1))
        else:
            if item.step == 0:      # checked before slice.indices, whose message names no op
                raise ValueError(f"index: slice step cannot be zero (shape {shape_text(x.shape)})")
            try:
                start, stop, step = item.indices(size)
            except TypeError:
                raise TypeError(f"index: slice {item!r} must hold ints or None "
                                f"(shape {shape_text(x.shape)})") from None
            count = len(range(start, stop, step))
            spec.append((start if count else 0, step if count else 1, count))
            final_shape.append(count)
        dim += 1
    node = ir.reshape(ir.shrink(x._node, tuple(spec)), tuple(final_shape))
    return result_tensor(node, x)


def cat(tensors, axis: int = 0) -> Tensor:
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty list of tensors")
    for t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"cat: expected Tensors, got {type(t).__name__}")
    first = tensors[0]
    if first.ndim == 0:
        raise ValueError("cat: zero-dimensional tensors cannot be concatenated (use stack)")
    axis = normalize_axis("cat", axis, first.ndim, first.shape)
    for t in tensors[1:]:
        if t.ndim != first.ndim or any(a != b for d, (a, b) in enumerate(zip(t.shape, first.shape))
                                       if d != axis):
            raise ValueError(f"cat: shapes {shape_text(first.shape)} and {shape_text(t.shape)} "
                             f"differ outside axis {axis}")
        if t.device != first.device:
            raise ValueError(f"cat: tensors on different devices ({first.device}, {t.device})")
    dtype = first.dtype          # mixed dtypes promote, as PyTorch's cat does
    for t in tensors[1:]:
        dtype = dtypes.promote(dtype, t.dtype)
    total = sum(t.shape[axis] for t in tensors)
    result: Node | None = None
    offset = 0
    for t in tensors:
        spec = tuple((offset, 1, size, total) if d == axis else (0, 1, size, size)
                     for d, size in enumerate(t.shape))
        padded = ir.pad(ir.cast(t._node, dtype), spec)
        result = padded if result is None else ir.add(result, padded)
        offset += t.shape[axis]
    assert result is not None       # cat checked that tensors is not empty
    return result_tensor(result, *tensors)


def stack(tensors, axis: int = 0) -> Tensor:
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: expected a non-empty list of tensors")
    first = tensors[0]
    for t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"stack: expected Tensors, got {type(t).__name__}")
        if t.shape != first.shape:
            raise ValueError(f"stack: shapes {shape_text(first.shape)} and {shape_text(t.shape)} differ")
    axis = normalize_axis("stack", axis, first.ndim + 1, first.shape)
    return cat([unsqueeze(t, axis) for t in tensors], axis)


__all__ = ["AxisError"]
