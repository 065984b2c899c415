"""Collectives on cudagrad tensors: all_reduce, broadcast, all_gather.

What "in place" means here. cudagrad never writes a buffer twice: a node's buffer
is shared by every graph that reads that node (nodes are hash-consed, and lazy
graphs built earlier may still read it), so overwriting it would change values
other tensors see. A collective therefore realizes its input, lets the
communicator write the result into a *fresh* buffer (from the device's caching
allocator: no cudaMalloc in a steady state; NCCL is as fast out of place as in
place), and then:
- a leaf tensor (a parameter, anything made by a constructor) is assigned the
  result, exactly as an optimizer's update is (Tensor.assign): the same Python
  object holds the reduced values from now on, graphs built before keep the
  old ones, as in PyTorch;
- any other tensor (a lazy result) is left alone: use the returned tensor.
Every collective returns the tensor holding the result.

The communicator runs on the stream cudagrad's kernels use, so nothing waits on
the host: the input's kernels, the collective and the kernels reading its output
run in that order on the GPU.
"""
from __future__ import annotations

from functools import partial

from cudagrad import dtypes
from cudagrad.capture import note_collective
from cudagrad.device import get_device
from cudagrad.distributed import state
from cudagrad.realization import input_buffer
from cudagrad.tensor import Tensor, buffer_node


def _realized_input(tensor: Tensor, op: str, communicator):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(tensor).__name__}")
    if tensor.device != communicator.device:
        raise ValueError(f"{op}: the tensor is on {tensor.device}, but the {communicator.name} "
                         f"communicator moves {communicator.device} buffers")
    if tensor.dtype is dtypes.bool_:
        raise TypeError(f"{op}: bool tensors cannot be reduced or sent; cast to int32 first")
    tensor.realize()
    return input_buffer(tensor.node)


def _run(op: str, tensor: Tensor, communicator, collective, results_per_element: int = 1) -> object:
    """collective(send, recv, count=, dtype=) from tensor's buffer into a fresh buffer, which
    it returns; a step captured by cg.jit records it to run again."""
    source = _realized_input(tensor, op, communicator)
    count = tensor.numel()
    target = get_device(tensor.device).allocate(results_per_element * count * tensor.dtype.itemsize)
    run = partial(collective, count=count, dtype=tensor.dtype)
    run(source, target)
    note_collective(run, source, tensor.node, target)
    return target


def result_tensor(buffer, shape, dtype: dtypes.DType, device: str) -> Tensor:
    """A leaf (requiring no grad) over a buffer a collective just wrote."""
    return Tensor(buffer_node(buffer, tuple(shape), dtype, device), requires_grad=False, leaf=True)


def _land(tensor: Tensor, result: Tensor) -> Tensor:
    if not tensor._is_leaf:      # a lazy result: its node may be shared, so it is not rebound
        return result
    tensor.assign(result)
    tensor.realize()             # no kernel: the pending value is already a buffer
    return tensor


def all_reduce(tensor: Tensor, op: str = "sum") -> Tensor:
    """Reduce tensor over all ranks ("sum", "mean", "max" or "min"); every rank gets the result.
    A leaf holds the result afterwards; for other tensors use the returned one."""
    if op not in ("sum", "mean", "max", "min"):
        raise ValueError(f"all_reduce: unknown op {op!r}; use 'sum', 'mean', 'max' or 'min'")
    communicator = state.communicator_or_none()
    if communicator is None:           # a single process: the reduction over one rank
        return tensor
    if op == "mean" and tensor.dtype is dtypes.int32:
        raise TypeError("all_reduce: op='mean' needs a floating-point tensor, not int32")
    target = _run("all_reduce", tensor, communicator, partial(communicator.all_reduce, op=op))
    return _land(tensor, result_tensor(target, tensor.shape, tensor.dtype, tensor.device))


def broadcast(tensor: Tensor, src: int = 0) -> Tensor:
    """Rank src's values on every rank (same shape and dtype everywhere).
    A leaf holds them afterwards; for other tensors use the returned one."""
    communicator = state.communicator_or_none()
    if communicator is None:
        if src != 0:
            raise ValueError(f"broadcast: src {src} but this is a single process (rank 0)")
        return tensor
    if not 0 <= src < communicator.world_size:
        raise ValueError(f"broadcast: src {src} outside world size {communicator.world_size}")
    target = _run("broadcast", tensor, communicator, partial(communicator.broadcast, root=src))
    return _land(tensor, result_tensor(target, tensor.shape, tensor.dtype, tensor.device))


def all_gather(tensor: Tensor) -> Tensor:
    """Every rank's tensor, stacked along a new first axis in rank order:
    shape [world_size, *tensor.shape] (a new tensor; the input is unchanged)."""
    communicator = state.communicator_or_none()
    if communicator is None:
        return result_tensor(input_buffer(tensor.realize().node), (1, *tensor.shape), tensor.dtype,
                             tensor.device)
    world = communicator.world_size
    target = _run("all_gather", tensor, communicator, communicator.all_gather, world)
    return result_tensor(target, (world, *tensor.shape), tensor.dtype, tensor.device)
