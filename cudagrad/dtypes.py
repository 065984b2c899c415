"""Element types. Plain data, imported by every layer (ir, codegen, runtime)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)   # dtypes are singletons: identity equality and hashing
class DType:
    name: str
    itemsize: int
    numpy: np.dtype          # host storage type (bfloat16 travels as uint16 bits)
    c_name: str              # storage type in generated C
    cuda_name: str           # storage type in generated CUDA C
    is_float: bool

    def __repr__(self) -> str:
        return f"cudagrad.{self.name}"


float32 = DType("float32", 4, np.dtype(np.float32), "float", "float", True)
float64 = DType("float64", 8, np.dtype(np.float64), "double", "double", True)
float16 = DType("float16", 2, np.dtype(np.float16), "_Float16", "__half", True)
bfloat16 = DType("bfloat16", 2, np.dtype(np.uint16), "unsigned short", "__nv_bfloat16", True)
int32 = DType("int32", 4, np.dtype(np.int32), "int", "int", False)
bool_ = DType("bool", 1, np.dtype(np.bool_), "unsigned char", "bool", False)

ALL_DTYPES = (float32, float64, float16, bfloat16, int32, bool_)
_BY_NAME = {d.name: d for d in ALL_DTYPES}
DTYPE_NAMES = frozenset(_BY_NAME)


def to_dtype(value) -> DType:
    """Accept a DType, its name, or a numpy dtype."""
    if isinstance(value, DType):
        return value
    if isinstance(value, str) and value in _BY_NAME:
        return _BY_NAME[value]
    try:
        np_dtype = np.dtype(value)
    except TypeError:
        raise TypeError(f"dtype: {value!r} is not a cudagrad dtype; use one of "
                        f"{', '.join(_BY_NAME)}") from None
    for dtype in (float32, float64, float16, int32, bool_):
        if dtype.numpy == np_dtype:
            return dtype
    raise TypeError(f"dtype: numpy dtype {np_dtype} has no cudagrad equivalent")


def promote(a: DType, b: DType) -> DType:
    """Result type of a binary op, following PyTorch's promotion of tensors."""
    if a == b:
        return a
    order = [bool_, int32, bfloat16, float16, float32, float64]
    if {a, b} == {float16, bfloat16}:
        return float32
    return max(a, b, key=order.index)
