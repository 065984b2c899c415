"""The float32 matmul precision switch, as PyTorch's torch.set_float32_matmul_precision.

"highest" (the default): float32 matmuls compute in float32 (fused multiply-adds).
"high": CUDA float32 matmuls may use TF32 tensor cores (10-bit mantissa products,
float32 accumulation; about 1e-3 relative error). "medium" is accepted and means
"high" here. The CPU computes in full precision either way.

The choice is read when a matmul is built (recorded in its graph node), so it is part
of the graph: a plan cached under one precision is never reused under the other.
"""
from __future__ import annotations

PRECISIONS = ("highest", "high", "medium")
_state = {"float32_matmul": "highest"}


def set_float32_matmul_precision(precision: str) -> None:
    """"highest" (float32, the default) or "high" (allows TF32 tensor cores on CUDA)."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"set_float32_matmul_precision: precision must be one of "
                         f"{', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    _state["float32_matmul"] = precision


def get_float32_matmul_precision() -> str:
    return _state["float32_matmul"]


def matmul_arg(dtype_name: str) -> str | None:
    """The MATMUL node's arg: "tf32" where a float32 matmul may use TF32, else None."""
    if dtype_name == "float32" and _state["float32_matmul"] != "highest":
        return "tf32"
    return None
