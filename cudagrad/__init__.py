"""cudagrad: a small tensor autograd compiler.

Tensor ops build a lazy graph; reading a result differentiates, fuses and
compiles it into C (cpu) or CUDA C (cuda) kernels, cached in memory and on disk.
"""
from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from cudagrad import methods as _methods
from cudagrad.capture import JitError
from cudagrad.checks import AxisError
from cudagrad.creation import arange, from_numpy, full, manual_seed, ones, rand, randn, tensor, zeros
from cudagrad.device import cuda_available, default_device
from cudagrad.draw import draw, draw_many
from cudagrad.dtypes import DType, bfloat16, float16, float32, float64, int32
from cudagrad.dtypes import bool_ as bool  # noqa: A001 (the API names it cg.bool)
from cudagrad.elementwise import clamp, maximum, minimum, where
from cudagrad.movement import cat, stack
from cudagrad.precision import get_float32_matmul_precision, set_float32_matmul_precision
from cudagrad.reductions import log_softmax, matmul, softmax
from cudagrad.runtime.errors import CompileError, DeviceError
from cudagrad.tensor import Tensor, no_grad, realize

_methods.bind()

from cudagrad import native as _native  # noqa: E402

_native.install()     # the C accelerator of the hot path, where it builds (cudagrad/native)

from cudagrad import nn, optim  # noqa: E402  (they build on the bound Tensor methods)
from cudagrad.jit import jit  # noqa: E402
from cudagrad.serialization import load, save  # noqa: E402

__version__ = "0.2.0"


def __getattr__(name: str):
    """cg.distributed, imported on first use (it is not needed by most programs)."""
    if name == "distributed":
        import importlib
        return importlib.import_module("cudagrad.distributed")
    raise AttributeError(f"module 'cudagrad' has no attribute {name!r}")


def from_dlpack(source: Any, requires_grad: builtins.bool = False) -> Tensor:
    """A tensor sharing source's memory: numpy arrays, PyTorch and CuPy tensors."""
    from cudagrad.interop import from_dlpack as share
    return share(source, requires_grad)


def grad(output: Tensor, inputs: Tensor | Sequence[Tensor],
         grad_output: Tensor | None = None) -> Tensor | list[Tensor]:
    """d output / d input for each input, as lazy tensors (nothing runs until read)."""
    from cudagrad.ir import ops as ir
    from cudagrad.ir.autograd import gradients
    single = isinstance(inputs, Tensor)
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    if grad_output is None:
        if output.numel() != 1:
            from cudagrad.checks import GradientError
            raise GradientError(f"grad: output has shape {list(output.shape)}; pass grad_output "
                                "for an output of more than one element")
        seed = ir.const(1, output.shape, output.dtype, output.device)
    else:
        seed = grad_output.node
    results = []
    for input_tensor, node in zip(inputs, gradients(output.node, [t.node for t in inputs], seed)):
        if node is None:
            node = ir.const(0, input_tensor.shape, input_tensor.dtype, input_tensor.device)
        results.append(Tensor(node))
    return results[0] if single else results


def explain(t: Tensor, file=None) -> str:
    """The lazy graph under t, its kernels and their sources; printed and returned."""
    from cudagrad.report import explain_nodes
    text = explain_nodes([t.node if t._pending is None else t._pending])
    if file is not False:
        print(text, file=file)
    return text


def stats() -> dict:
    from cudagrad.runtime.stats import STATS
    return dict(STATS)


def reset_stats() -> None:
    from cudagrad.runtime.stats import reset
    reset()


def clear_cache() -> None:
    """Empty the on-disk compile cache (the in-memory one lives as long as the process)."""
    from cudagrad.runtime.cache import clear
    clear()


__all__ = ["Tensor", "tensor", "zeros", "ones", "full", "arange", "rand", "randn", "from_numpy",
           "manual_seed", "float32", "float64", "float16", "bfloat16", "int32", "bool", "DType",
           "where", "maximum", "minimum", "clamp", "cat", "stack", "matmul", "softmax",
           "log_softmax", "no_grad", "realize", "grad", "explain", "stats", "reset_stats",
           "clear_cache", "default_device", "cuda_available", "CompileError", "DeviceError",
           "AxisError", "from_dlpack", "draw", "draw_many", "nn", "optim", "save", "load", "distributed",
           "set_float32_matmul_precision", "get_float32_matmul_precision", "jit", "JitError"]
