"""Constructors: every one takes dtype=, device= and requires_grad=."""
from __future__ import annotations

import numbers
import weakref
from array import array as typed_array

import numpy as np

from cudagrad import dtypes
from cudagrad.capture import ACTIVE as _CAPTURING
from cudagrad.capture import note_host_buffer
from cudagrad.checks import check_shape
from cudagrad.device import canonical_device, get_device
from cudagrad.ir.node import Node, Op, Storage, prod
from cudagrad.runtime.cpu import CpuBuffer
from cudagrad.tensor import Tensor

_generator = np.random.default_rng()


def manual_seed(seed: int) -> None:
    global _generator
    _generator = np.random.default_rng(seed)


def _check_values(op: str, array: np.ndarray) -> None:
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{op}: data must be numbers (int, float or bool), got values of "
                        f"numpy kind {array.dtype} (strings, None or objects are not allowed)")


def _to_array(op: str, data) -> np.ndarray:
    if isinstance(data, Tensor):
        return data.numpy()
    if isinstance(data, (str, bytes)) or data is None:
        raise TypeError(f"{op}: data must be numbers, got {type(data).__name__}")
    try:
        array = np.array(data)
    except ValueError as error:
        raise ValueError(f"{op}: nested lists have uneven lengths ({error})") from None
    if array.dtype == object:      # numpy already refused ragged lists: these are non-numbers
        raise TypeError(f"{op}: data holds non-numbers (None, tensors or other objects); "
                        "nested lists must hold only numbers")
    _check_values(op, array)
    return array


def _make(array: np.ndarray, dtype, device, requires_grad: bool) -> Tensor:
    dtype = dtypes.float32 if dtype is None else dtypes.to_dtype(dtype)
    if dtype == dtypes.int32 and array.size and array.dtype.kind in "iuf":
        info = np.iinfo(np.int32)
        outside = ~((array >= info.min) & (array <= info.max))     # nan is outside too
        if outside.any():
            raise ValueError(f"tensor: value {array[outside].reshape(-1)[0].item()!r} does not fit in "
                             f"int32 (shape {list(array.shape)}); it would wrap silently")
    return Tensor.from_numpy_array(array, dtype, device, requires_grad)


_EXACT_INT = 2**53      # ints up to here convert to float32 the same way with or without float64


def _plain_numbers(values) -> bool:
    """Only floats and ints (not bools or other number types): the common case, which
    numpy converts straight to float32 exactly as through the general path."""
    for value in values:
        kind = type(value)
        if kind is not float and (kind is not int or not -_EXACT_INT <= value <= _EXACT_INT):
            return False
    return True


def _float32_leaf_from_list(data, count: int, shape: tuple[int, ...], device,
                            requires_grad: bool) -> Tensor:
    """A float32 leaf filled straight from a list (or tuple) of plain numbers: on the cpu
    an array.array is the buffer (no numpy), which costs a fraction of the general path."""
    device = "cpu" if device == "cpu" else canonical_device(device)
    if device == "cpu":
        values = typed_array("f", data)
        buffer = CpuBuffer(values, 4 * count, values.buffer_info()[0])
    else:
        buffer = get_device(device).from_numpy(np.array(data, dtype=np.float32))
    if _CAPTURING[0] is not None:
        note_host_buffer(buffer)
    storage = Storage(buffer, device)
    leaf = Tensor(Node(_BUFFER, (), storage, shape, _FLOAT32, device), requires_grad)
    leaf._is_leaf = True
    storage.owner = weakref.ref(leaf)
    return leaf


_BUFFER, _FLOAT32 = Op.BUFFER, dtypes.float32
# the C accelerator's float32_leaf (cudagrad/native), set by native.install(); None: Python only
_native_leaf = None


def tensor(shape_or_data, data=None, *, dtype=None, device=None, requires_grad: bool = True) -> Tensor:
    """tensor(shape, flat_data) as in the seed, or tensor(data) inferring the shape."""
    if _native_leaf is not None and device == "cpu" and (dtype is None or dtype is _FLOAT32) \
            and _CAPTURING[0] is None:
        # the short form below, in C (None: not the short form); a capture notes host buffers
        leaf = _native_leaf(shape_or_data, data, requires_grad)
        if leaf is not None:
            return leaf
    if (type(data) is list or type(data) is tuple) and data and (dtype is None or dtype is _FLOAT32):
        # the seed's form, on the tiny-op hot path: plain ints for the shape and plain
        # numbers for the data skip the general checks below (which explain any error)
        shape = shape_or_data
        if type(shape) is list or type(shape) is tuple:
            count = 1
            for size in shape:
                if type(size) is not int or size < 0:
                    count = -1
                    break
                count *= size
            if count == len(data) and _plain_numbers(data):
                return _float32_leaf_from_list(data, count, tuple(shape), device, requires_grad)
    if data is None:
        array = _to_array("tensor", shape_or_data)
        if dtype is None and array.dtype == np.float64 and isinstance(shape_or_data, np.ndarray):
            dtype = dtypes.float64
        return _make(array, dtype, device, requires_grad)
    shape = check_shape("tensor", shape_or_data)
    if isinstance(data, np.ndarray):
        flat = data.reshape(-1)
    elif isinstance(data, numbers.Number):
        raise TypeError(f"tensor: data must be a flat list of numbers, got a single "
                        f"{type(data).__name__}")
    else:
        if not isinstance(data, (list, tuple)):
            raise TypeError(f"tensor: data must be a flat list of numbers, got {type(data).__name__}")
        for value in data:
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                if not isinstance(value, bool):
                    raise TypeError(f"tensor: data must hold numbers, got {value!r} "
                                    f"({type(value).__name__})")
        flat = np.array(data)
    _check_values("tensor", flat)
    if flat.size != prod(shape):
        raise ValueError(f"tensor: data has {flat.size} elements but shape {list(shape)} needs "
                         f"{prod(shape)}")
    return _make(flat.reshape(shape), dtype, device, requires_grad)


def from_numpy(array: np.ndarray, *, dtype=None, device=None, requires_grad: bool = True) -> Tensor:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy array, got {type(array).__name__}")
    _check_values("from_numpy", array)
    if dtype is None:
        kind = array.dtype
        dtype = (dtypes.float64 if kind == np.float64 else dtypes.float16 if kind == np.float16
                 else dtypes.bool_ if kind == np.bool_ else dtypes.int32 if kind.kind in "iu"
                 else dtypes.float32)
    return _make(array, dtype, device, requires_grad)


def full(shape, value, *, dtype=None, device=None, requires_grad: bool = True) -> Tensor:
    shape = check_shape("full", shape)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"full: value must be a number, got {value!r}")
    return _make(np.full(shape, value), dtype, device, requires_grad)


def zeros(shape, *, dtype=None, device=None, requires_grad: bool = True) -> Tensor:
    return full(shape, 0, dtype=dtype, device=device, requires_grad=requires_grad)


def ones(shape, *, dtype=None, device=None, requires_grad: bool = True) -> Tensor:
    return full(shape, 1, dtype=dtype, device=device, requires_grad=requires_grad)


def arange(n, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    if isinstance(n, bool) or not isinstance(n, numbers.Real):
        raise TypeError(f"arange: n must be a number, got {n!r}")
    if n < 0:
        raise ValueError(f"arange: n must be non-negative, got {n}")
    return _make(np.arange(n), dtype, device, requires_grad)  # type: ignore[call-overload]


def rand(shape, *, dtype=None, device=None, requires_grad: bool = True) -> Tensor:
    shape = check_shape("rand", shape)
    return _make(_generator.random(shape), dtype, device, requires_grad)


def randn(shape, *, dtype=None, device=None, requires_grad: bool = True) -> Tensor:
    shape = check_shape("randn", shape)
    return _make(_generator.standard_normal(shape), dtype, device, requires_grad)
