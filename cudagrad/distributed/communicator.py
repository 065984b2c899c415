"""The small interface collectives go through, and a CPU implementation of it.

A Communicator moves the bytes of device buffers between the ranks of a job. The
tensor-level collectives (collectives.py) and gradient averaging (buckets.py) only
ever talk to this interface, so they run the same over NCCL (nccl.py, the GPU) and
over the socket communicator below (the cpu device: CI, tests, debugging a script
without GPUs).

Buffers are the runtime's own (CudaBuffer, CpuBuffer): `send` is read, `recv` is
written; they may be the same buffer (in place). Counts are elements of `dtype`.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from cudagrad import dtypes
from cudagrad.distributed.rendezvous import Rendezvous

REDUCE_OPS = ("sum", "mean", "max", "min")


class Communicator(Protocol):
    rank: int
    world_size: int
    device: str          # the device whose buffers it moves: "cpu" or "cuda"
    name: str            # the backend, for messages: "nccl", "socket", ...

    def all_reduce(self, send: Any, recv: Any, count: int, dtype: dtypes.DType, op: str,
                   stream: Any = None) -> None:
        """recv = op over ranks of send, elementwise (count elements). stream: where a GPU
        backend enqueues it (None: the library's stream; a CUDA graph's capture passes its own)."""

    def broadcast(self, send: Any, recv: Any, count: int, dtype: dtypes.DType, root: int,
                  stream: Any = None) -> None:
        """recv = root's send on every rank (send is read on root only)."""

    def all_gather(self, send: Any, recv: Any, count: int, dtype: dtypes.DType, stream: Any = None) -> None:
        """recv (world_size * count elements) = every rank's send, in rank order."""

    def barrier(self) -> None:
        """Return once every rank has called barrier (and, on a GPU, its queued work is done)."""

    def destroy(self) -> None:
        """Free the communicator; it is unusable afterwards."""


def _host_values(buffer, count: int, dtype: dtypes.DType) -> np.ndarray:
    """A CpuBuffer's first count elements as numpy values (bfloat16 widened to float32)."""
    from cudagrad.tensor import storage_to_host
    return storage_to_host(dtype, buffer.array.view(dtype.numpy)[:count])


def _store_values(buffer, values: np.ndarray, dtype: dtypes.DType) -> None:
    from cudagrad.tensor import host_to_storage
    stored = host_to_storage(dtype, values)
    buffer.array.view(dtype.numpy)[:stored.size] = stored


class SocketCommunicator:
    """Collectives for cpu-device buffers over the rendezvous sockets (star through rank 0):
    slow for large data, but exact and dependency-free. Reductions add in rank order in
    the buffer's dtype, as a ring all-reduce of two ranks would."""

    name = "socket"
    device = "cpu"

    def __init__(self, rendezvous: Rendezvous):
        self.rendezvous = rendezvous
        self.rank = rendezvous.rank
        self.world_size = rendezvous.world_size

    def _gather(self, send, count: int, dtype: dtypes.DType) -> list[np.ndarray]:
        raw = send.array.view(np.uint8)[:count * dtype.itemsize].tobytes()
        parts = self.rendezvous.all_gather(raw)
        return [np.frombuffer(part, dtype=dtype.numpy) for part in parts]

    def all_reduce(self, send, recv, count: int, dtype: dtypes.DType, op: str, stream=None) -> None:
        if op not in REDUCE_OPS:
            raise ValueError(f"all_reduce: unknown op {op!r}; use one of {', '.join(REDUCE_OPS)}")
        from cudagrad.tensor import storage_to_host
        parts = [storage_to_host(dtype, part) for part in self._gather(send, count, dtype)]
        result = parts[0].copy()
        for part in parts[1:]:
            if op in ("sum", "mean"):
                result = result + part
            elif op == "max":
                result = np.maximum(result, part)
            else:
                result = np.minimum(result, part)
        if op == "mean":
            result = result / np.asarray(self.world_size, dtype=result.dtype)
        _store_values(recv, result.astype(parts[0].dtype, copy=False), dtype)

    def broadcast(self, send, recv, count: int, dtype: dtypes.DType, root: int, stream=None) -> None:
        raw = send.array.view(np.uint8)[:count * dtype.itemsize].tobytes() if self.rank == root else None
        data = self.rendezvous.broadcast(raw, root)
        recv.array.view(np.uint8)[:len(data)] = np.frombuffer(data, dtype=np.uint8)

    def all_gather(self, send, recv, count: int, dtype: dtypes.DType, stream=None) -> None:
        parts = self._gather(send, count, dtype)
        recv.array.view(dtype.numpy)[:count * self.world_size] = np.concatenate(parts)

    def barrier(self) -> None:
        self.rendezvous.barrier()

    def destroy(self) -> None:
        self.rendezvous.close()
