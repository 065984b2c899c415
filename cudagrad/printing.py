"""How tensors print: like PyTorch's, and never realized behind the user's back.

`repr(t)` realizes t and shows its values (summarised with `...` beyond 1000
elements), then dtype and device where they are not the defaults (float32,
cpu) and `requires_grad=True`. Floats print PyTorch's way: `1.` when every
value is whole, 4 decimals otherwise, scientific notation when the magnitudes
span too much.

Under a debugger (`sys.gettrace()` or a sys.monitoring debugger is active), or
with CUDAGRAD_LAZY_REPR=1, a tensor that still has to be computed prints as
`tensor(<unrealized>, shape=[...], ...)`: a debugger's hover or a log line
must never launch kernels. CUDAGRAD_LAZY_REPR=0 realizes even under a debugger.
"""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from cudagrad.tensor import Tensor

THRESHOLD = 1000      # more elements than this are summarised
EDGE_ITEMS = 3
PRECISION = 4
LINE_WIDTH = 80


def debugger_active() -> bool:
    if sys.gettrace() is not None:
        return True
    monitoring = getattr(sys, "monitoring", None)     # Python 3.12+: pdb, debugpy
    if monitoring is not None:
        try:
            return monitoring.get_tool(monitoring.DEBUGGER_ID) is not None
        except (AttributeError, ValueError):
            return False
    return False


def lazy_repr_wanted() -> bool:
    setting = os.environ.get("CUDAGRAD_LAZY_REPR", "").strip().lower()
    if setting in ("1", "true", "yes", "on"):
        return True
    if setting in ("0", "false", "no", "off"):
        return False
    return debugger_active()


def is_computed(t: Tensor) -> bool:
    """Whether t's values can be read without running a kernel."""
    node = t.node
    return t._pending is None and (node.realized is not None or node.op.name == "BUFFER")


def _suffix(t: Tensor, show_shape: bool) -> list[str]:
    extras = []
    if show_shape:
        extras.append(f"shape={list(t.shape)}")
    if t.device != "cpu":
        extras.append(f"device='{t.device}'")
    if t.dtype.name not in ("float32", "bool"):
        extras.append(f"dtype=cudagrad.{t.dtype.name}")
    if t.requires_grad:
        extras.append("requires_grad=True")
    return extras


def _float_formatter(values: np.ndarray) -> Callable[[float], str]:
    """PyTorch's choice: whole numbers as `1.`, else fixed 4 decimals, or scientific
    when the finite magnitudes span more than 1000x or leave [1e-4, 1e8)."""
    finite = np.abs(values[np.isfinite(values)]).astype(np.float64)
    nonzero = finite[finite != 0]
    whole = finite.size == 0 or bool(np.all(finite == np.round(finite)))
    scientific = False
    if nonzero.size:
        largest, smallest = float(nonzero.max()), float(nonzero.min())
        if whole:
            scientific = largest > 1e8
        else:
            scientific = largest / smallest > 1000 or largest > 1e8 or smallest < 1e-4

    def format_one(value: float) -> str:
        if not np.isfinite(value):
            return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")
        if scientific:
            return f"{value:.{PRECISION}e}"
        if whole:
            return f"{value:.0f}."
        return f"{value:.{PRECISION}f}"
    return format_one


def _values_text(array: np.ndarray, prefix: str) -> str:
    summarise = array.size > THRESHOLD
    options = {"separator": ", ", "prefix": prefix, "max_line_width": LINE_WIDTH,
               "threshold": THRESHOLD if summarise else array.size + 1, "edgeitems": EDGE_ITEMS}
    if array.dtype.kind != "f":
        return np.array2string(array, **options)   # type: ignore[arg-type]
    sample = _displayed(array) if summarise else array.reshape(-1)
    format_one = _float_formatter(sample)
    # as PyTorch: nan and inf take no part in the column width
    width = max((len(format_one(float(v))) for v in sample if np.isfinite(v)), default=0)

    def padded(value: float) -> str:
        return format_one(float(value)).rjust(width)
    return np.array2string(array, formatter={"float_kind": padded}, **options)  # type: ignore[arg-type]


def _displayed(array: np.ndarray) -> np.ndarray:
    """The elements a summarised print shows: the first and last EDGE_ITEMS of each axis."""
    for axis, length in enumerate(array.shape):
        if length > 2 * EDGE_ITEMS:
            keep = list(range(EDGE_ITEMS)) + list(range(length - EDGE_ITEMS, length))
            array = np.take(array, keep, axis=axis)
    return array.reshape(-1)


def tensor_repr(t: Tensor) -> str:
    if not is_computed(t) and lazy_repr_wanted():
        return f"tensor({', '.join(['<unrealized>', *_suffix(t, show_shape=True)])})"
    array = t.numpy()
    extras = _suffix(t, show_shape=array.size == 0 and array.ndim != 1)
    values = "[]" if array.size == 0 else _values_text(array, "tensor(")
    values = values.replace(", ...,", ",  ...,")     # PyTorch pads the ellipsis in a row
    text = f"tensor({values}"
    if extras:
        last_line = text.rsplit("\n", 1)[-1]
        joined = ", ".join(extras)
        if len(last_line) + 2 + len(joined) + 1 > LINE_WIDTH:    # PyTorch moves them to a new line
            text += ",\n" + " " * len("tensor(") + joined
        else:
            text += ", " + joined
    return text + ")"
