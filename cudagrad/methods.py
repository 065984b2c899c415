"""Tensor's operators and methods, bound to the functions that build the ops."""
from __future__ import annotations

from cudagrad import elementwise as ew
from cudagrad import movement, reductions
from cudagrad.ir.node import Op
from cudagrad.tensor import Tensor


def _swap(function):
    return lambda self, other: function(other, self)


_OPERATORS = {
    "__add__": ew.add, "__radd__": _swap(ew.add),
    "__sub__": ew.sub, "__rsub__": _swap(ew.sub),
    "__mul__": ew.mul, "__rmul__": _swap(ew.mul),
    "__truediv__": ew.div, "__rtruediv__": _swap(ew.div),
    "__pow__": ew.power, "__rpow__": _swap(ew.power),
    "__matmul__": reductions.matmul, "__rmatmul__": _swap(reductions.matmul),
    "__lt__": lambda a, b: ew.compare(Op.CMPLT, "lt", a, b),
    "__le__": lambda a, b: ew.compare(Op.CMPLE, "le", a, b),
    "__gt__": lambda a, b: ew.compare(Op.CMPLT, "gt", a, b, swap=True),
    "__ge__": lambda a, b: ew.compare(Op.CMPLE, "ge", a, b, swap=True),
    "__eq__": lambda a, b: ew.compare(Op.CMPEQ, "eq", a, b),
    "__ne__": lambda a, b: ew.compare(Op.CMPNE, "ne", a, b),
    "__neg__": lambda x: ew.unary(Op.NEG, "neg", x, float_only=False),
    "__pos__": lambda x: x,
    "__abs__": lambda x: ew.unary(Op.ABS, "abs", x, float_only=False),
    "__getitem__": movement.getitem,
}

_METHODS = {
    "add": ew.add, "sub": ew.sub, "mul": ew.mul, "div": ew.div, "pow": ew.power,
    "matmul": reductions.matmul,
    "exp": lambda x: ew.unary(Op.EXP, "exp", x),
    "log": lambda x: ew.unary(Op.LOG, "log", x),
    "sqrt": lambda x: ew.unary(Op.SQRT, "sqrt", x),
    "sin": lambda x: ew.unary(Op.SIN, "sin", x),
    "cos": lambda x: ew.unary(Op.COS, "cos", x),
    "tanh": lambda x: ew.unary(Op.TANH, "tanh", x),
    "sigmoid": lambda x: ew.unary(Op.SIGMOID, "sigmoid", x),
    "abs": lambda x: ew.unary(Op.ABS, "abs", x, float_only=False),
    "relu": lambda x: ew.unary(Op.RELU, "relu", x, float_only=False),
    "neg": lambda x: ew.unary(Op.NEG, "neg", x, float_only=False),
    "maximum": ew.maximum, "minimum": ew.minimum, "clamp": ew.clamp,
    "sum": reductions.sum, "mean": reductions.mean, "max": reductions.max, "min": reductions.min,
    "argmax": reductions.argmax, "argmin": reductions.argmin,
    "softmax": reductions.softmax, "log_softmax": reductions.log_softmax,
    "reshape": movement.reshape, "view": movement.reshape, "permute": movement.permute,
    "transpose": movement.transpose, "expand": movement.expand, "squeeze": movement.squeeze,
    "unsqueeze": movement.unsqueeze, "flatten": movement.flatten,
}


def bind() -> None:
    for name, function in {**_OPERATORS, **_METHODS}.items():
        setattr(Tensor, name, function)
    Tensor.__hash__ = object.__hash__  # type: ignore[method-assign]  # __eq__ builds a comparison; identity hashing stays
    Tensor.T = property(lambda x: movement.permute(x, *reversed(range(x.ndim))))  # type: ignore
