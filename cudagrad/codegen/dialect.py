"""How C and CUDA C spell the few things in which they differ.

Values inside a kernel live in a compute type: double for float64, int for
int32, float for everything else (float16 and bfloat16 are storage types: they
are widened on load and narrowed on store).
"""
from __future__ import annotations

import math

from cudagrad.dtypes import DType
from cudagrad.ir.node import Op


def compute_type(dtype: DType) -> str:
    return {"float64": "double", "int32": "int"}.get(dtype.name, "float")


_FLOAT_FUNCTIONS = {Op.EXP: "exp", Op.LOG: "log", Op.SQRT: "sqrt", Op.SIN: "sin", Op.COS: "cos",
                    Op.TANH: "tanh", Op.ABS: "fabs", Op.POW: "pow"}


class Dialect:
    name = "c"
    restrict = "restrict"

    def storage_type(self, dtype: DType) -> str:
        return dtype.c_name

    def widen(self, value: str, dtype: DType) -> str:
        """A stored element already in a register (a pack's lane) in its compute type."""
        if dtype.name == "bfloat16":
            return f"cg_bf16_to_float({value})"
        if dtype.name in ("float16", "bool"):
            return f"({compute_type(dtype)}){value}"
        return value

    def load(self, pointer: str, index: str, dtype: DType) -> str:
        if dtype.name == "bfloat16":
            return f"cg_bf16_to_float({pointer}[{index}])"
        if dtype.name in ("float16", "bool"):
            return f"({compute_type(dtype)}){pointer}[{index}]"
        return f"{pointer}[{index}]"

    def store(self, pointer: str, index: str, value: str, dtype: DType) -> str:
        if dtype.name == "bfloat16":
            return f"{pointer}[{index}] = cg_float_to_bf16({value});"
        if dtype.name == "bool":
            return f"{pointer}[{index}] = ({value}) != 0;"
        return f"{pointer}[{index}] = ({self.storage_type(dtype)})({value});"

    def literal(self, value, ctype: str) -> str:
        if ctype == "int":
            return str(int(value))
        value = float(value)
        if math.isnan(value):
            text = "NAN"
        elif math.isinf(value):
            text = "INFINITY" if value > 0 else "(-INFINITY)"
        else:
            text = repr(value)
            if "e" not in text and "." not in text:
                text += ".0"
            if ctype == "float":
                text += "f"
            return text if value >= 0 else f"({text})"
        return text if ctype == "float" else f"(double){text}"

    def function(self, op: Op, ctype: str, args: list[str]) -> str:
        if op == Op.EXP and ctype == "float" and self.name == "c":
            return f"cg_expf({args[0]})"       # vectorizable; see templates/c/preamble.j2
        if ctype == "int" and op == Op.ABS:
            return f"abs({args[0]})"
        if ctype == "int" and op == Op.POW:
            return f"(int)pow((double){args[0]}, (double){args[1]})"
        name = _FLOAT_FUNCTIONS[op] + ("f" if ctype == "float" else "")
        return f"{name}({', '.join(args)})"


class CudaDialect(Dialect):
    name = "cuda"
    restrict = "__restrict__"

    def storage_type(self, dtype: DType) -> str:
        return dtype.cuda_name

    def widen(self, value: str, dtype: DType) -> str:
        """A stored element already in a register (a pack's lane) in its compute type."""
        if dtype.name == "bfloat16":
            return f"__bfloat162float({value})"
        if dtype.name == "float16":
            return f"__half2float({value})"
        if dtype.name == "bool":
            return f"(float){value}"
        return value

    def load(self, pointer: str, index: str, dtype: DType) -> str:
        element = f"{pointer}[{index}]"
        if dtype.name in ("bfloat16", "float16", "bool"):
            return self.widen(element, dtype)
        return f"__ldg(&{element})"       # through the read-only data cache

    def store(self, pointer: str, index: str, value: str, dtype: DType) -> str:
        if dtype.name == "bfloat16":
            return f"{pointer}[{index}] = __float2bfloat16({value});"
        if dtype.name == "float16":
            return f"{pointer}[{index}] = __float2half({value});"
        if dtype.name == "bool":
            return f"{pointer}[{index}] = ({value}) != 0;"
        return f"{pointer}[{index}] = ({self.storage_type(dtype)})({value});"


DIALECTS = {"cpu": Dialect(), "cuda": CudaDialect()}
