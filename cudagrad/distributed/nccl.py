"""The NCCL communicator: collectives between GPUs, on cudagrad's own stream.

Two ways to reach libnccl, behind one class:
- nccl4py (`pip install cudagrad[distributed]`), NVIDIA's Python bindings: its
  low-level layer (nccl.bindings.nccl) takes raw device addresses and a stream
  handle, which is exactly what cudagrad's buffers hold;
- ctypes over libnccl.so.2 (found through cuda-pathfinder, which knows where the
  nvidia-nccl-cu13 wheel puts it), where nccl4py is not installed:
  CUDAGRAD_NCCL=ctypes picks it on purpose.
Both are imported only by init(): `import cudagrad` never loads NCCL.

Every operation is enqueued on the stream cudagrad's kernels run on, so it is
ordered after the kernels that produced its input and before those that read its
output, with no synchronization from the host.
"""
from __future__ import annotations

import ctypes
import os

from cudagrad import dtypes

# ncclDataType_t and ncclRedOp_t, from nccl.h (stable since NCCL 2.10)
_NCCL_DTYPES = {"float16": 6, "float32": 7, "float64": 8, "bfloat16": 9, "int32": 2}
_NCCL_OPS = {"sum": 0, "max": 2, "min": 3, "mean": 4}       # mean: ncclAvg
_UNIQUE_ID_BYTES = 128


def nccl_dtype(dtype: dtypes.DType) -> int:
    code = _NCCL_DTYPES.get(dtype.name)
    if code is None:
        raise TypeError(f"nccl: collectives take float16, bfloat16, float32, float64 or int32 "
                        f"tensors, not {dtype.name}")
    return code


class _Nccl4py:
    """nccl4py's low-level bindings: functions of raw addresses and handles."""

    name = "nccl4py"

    def __init__(self):
        import nccl.bindings.nccl as bindings
        import nccl.core as core
        # nccl4py looks for libnccl through cuda-pathfinder, which finds an already loaded
        # copy first: load ours (found on sys.path too) so that --target installs work.
        self._library = _load_libnccl()
        bindings.get_version()        # fails here, not mid-init, where libnccl is unusable
        self._bindings = bindings
        self._core = core

    def version(self) -> int:
        return int(self._bindings.get_version())

    def unique_id(self) -> bytes:
        return bytes(self._core.get_unique_id())

    def init_rank(self, world_size: int, rank: int, unique_id: bytes):
        uid = self._core.UniqueId.from_bytes(unique_id)
        communicator = self._core.Communicator.init(world_size, rank, uid)
        return communicator

    def handle(self, communicator):
        return communicator._comm      # what nccl4py's own collectives hand the bindings

    def all_reduce(self, comm, send: int, recv: int, count: int, dtype: int, op: int, stream: int):
        self._bindings.all_reduce(send, recv, count, dtype, op, self.handle(comm), stream)

    def broadcast(self, comm, send: int, recv: int, count: int, dtype: int, root: int, stream: int):
        self._bindings.broadcast(send, recv, count, dtype, root, self.handle(comm), stream)

    def all_gather(self, comm, send: int, recv: int, count: int, dtype: int, stream: int):
        self._bindings.all_gather(send, recv, count, dtype, self.handle(comm), stream)

    def destroy(self, comm) -> None:
        comm.destroy()


class _UniqueId(ctypes.Structure):
    _fields_ = [("internal", ctypes.c_char * _UNIQUE_ID_BYTES)]


def _wheel_libnccl() -> str | None:
    """libnccl.so.2 of an nvidia-nccl wheel anywhere on sys.path (PYTHONPATH or --target
    installs too, which cuda-pathfinder's site-packages search can miss)."""
    import sys
    from pathlib import Path
    for entry in sys.path:
        candidate = Path(entry or ".") / "nvidia" / "nccl" / "lib" / "libnccl.so.2"
        if candidate.is_file():
            return str(candidate)
    return None


def _load_libnccl() -> ctypes.CDLL:
    """libnccl.so.2, loaded with its symbols global (nccl4py then finds it loaded)."""
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib
        return ctypes.CDLL(load_nvidia_dynamic_lib("nccl").abs_path, mode=ctypes.RTLD_GLOBAL)
    except Exception as pathfinder_error:
        for name in (_wheel_libnccl(), "libnccl.so.2"):
            if name is None:
                continue
            try:
                return ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                pass
        raise RuntimeError(f"nccl: libnccl.so.2 not found (pip install nvidia-nccl-cu13; "
                           f"cuda-pathfinder said: {pathfinder_error})") from None


class _NcclCtypes:
    """The same few calls, straight from libnccl.so.2 with ctypes."""

    name = "ctypes"

    def __init__(self):
        lib = _load_libnccl()
        self._lib = lib
        vp, size_t, c_int = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
        lib.ncclGetErrorString.restype = ctypes.c_char_p
        lib.ncclGetErrorString.argtypes = [c_int]
        lib.ncclGetVersion.argtypes = [ctypes.POINTER(c_int)]
        lib.ncclGetUniqueId.argtypes = [ctypes.POINTER(_UniqueId)]
        lib.ncclCommInitRank.argtypes = [ctypes.POINTER(vp), c_int, _UniqueId, c_int]
        lib.ncclAllReduce.argtypes = [vp, vp, size_t, c_int, c_int, vp, vp]
        lib.ncclBroadcast.argtypes = [vp, vp, size_t, c_int, c_int, vp, vp]
        lib.ncclAllGather.argtypes = [vp, vp, size_t, c_int, vp, vp]
        lib.ncclCommDestroy.argtypes = [vp]

    def _check(self, status: int, what: str) -> None:
        if status:
            message = self._lib.ncclGetErrorString(status).decode()
            raise RuntimeError(f"nccl: {what} failed: {message} (error {status}; NCCL_DEBUG=INFO says more)")

    def version(self) -> int:
        value = ctypes.c_int()
        self._check(self._lib.ncclGetVersion(ctypes.byref(value)), "ncclGetVersion")
        return value.value

    def unique_id(self) -> bytes:
        uid = _UniqueId()
        self._check(self._lib.ncclGetUniqueId(ctypes.byref(uid)), "ncclGetUniqueId")
        return ctypes.string_at(ctypes.addressof(uid), _UNIQUE_ID_BYTES)

    def init_rank(self, world_size: int, rank: int, unique_id: bytes):
        uid = _UniqueId()
        ctypes.memmove(ctypes.addressof(uid), unique_id, _UNIQUE_ID_BYTES)
        comm = ctypes.c_void_p()
        self._check(self._lib.ncclCommInitRank(ctypes.byref(comm), world_size, uid, rank),
                    "ncclCommInitRank")
        return comm

    def all_reduce(self, comm, send: int, recv: int, count: int, dtype: int, op: int, stream: int):
        self._check(self._lib.ncclAllReduce(send, recv, count, dtype, op, comm, stream), "ncclAllReduce")

    def broadcast(self, comm, send: int, recv: int, count: int, dtype: int, root: int, stream: int):
        self._check(self._lib.ncclBroadcast(send, recv, count, dtype, root, comm, stream), "ncclBroadcast")

    def all_gather(self, comm, send: int, recv: int, count: int, dtype: int, stream: int):
        self._check(self._lib.ncclAllGather(send, recv, count, dtype, comm, stream), "ncclAllGather")

    def destroy(self, comm) -> None:
        self._check(self._lib.ncclCommDestroy(comm), "ncclCommDestroy")


def load_library(choice: str | None = None):
    """nccl4py where installed, else ctypes; CUDAGRAD_NCCL=nccl4py|ctypes forces one."""
    choice = (choice or os.environ.get("CUDAGRAD_NCCL", "")).strip().lower()
    if choice == "ctypes":
        return _NcclCtypes()
    try:
        return _Nccl4py()
    except Exception as error:      # not installed, or unable to load its libraries
        if choice == "nccl4py":
            raise RuntimeError(f"nccl: CUDAGRAD_NCCL=nccl4py but nccl4py cannot be imported ({error}); "
                               "pip install cudagrad[distributed]") from None
        return _NcclCtypes()


class NcclCommunicator:
    """One rank's NCCL communicator, bound to cudagrad's cuda device (this process's GPU)."""

    device = "cuda"

    def __init__(self, rank: int, world_size: int, unique_id: bytes, cuda_device, library):
        self.rank = rank
        self.world_size = world_size
        self.cuda = cuda_device
        self.library = library
        self.name = f"nccl ({library.name})"
        cuda_device._ensure_current()      # NCCL binds to the GPU of the current context
        self._comm = library.init_rank(world_size, rank, unique_id)
        self._stream = cuda_device.stream_handle
        self._scratch = cuda_device.allocate(4)    # barrier's one-element all-reduce

    def _stream_of(self, stream) -> int:
        """The handle to enqueue on: ours, or a CUDA graph capture's (cg.jit)."""
        return self._stream if stream is None else int(stream)

    def all_reduce(self, send, recv, count: int, dtype: dtypes.DType, op: str, stream=None) -> None:
        if op not in _NCCL_OPS:
            raise ValueError(f"all_reduce: unknown op {op!r}; use one of {', '.join(_NCCL_OPS)}")
        self.cuda._ensure_current()
        self.library.all_reduce(self._comm, send.ptr, recv.ptr, count, nccl_dtype(dtype), _NCCL_OPS[op],
                                self._stream_of(stream))

    def broadcast(self, send, recv, count: int, dtype: dtypes.DType, root: int, stream=None) -> None:
        self.cuda._ensure_current()
        self.library.broadcast(self._comm, send.ptr, recv.ptr, count, nccl_dtype(dtype), root,
                               self._stream_of(stream))

    def all_gather(self, send, recv, count: int, dtype: dtypes.DType, stream=None) -> None:
        self.cuda._ensure_current()
        self.library.all_gather(self._comm, send.ptr, recv.ptr, count, nccl_dtype(dtype),
                                self._stream_of(stream))

    def barrier(self) -> None:
        """A one-element all-reduce, then wait for the stream: every rank's queued work is done."""
        self.all_reduce(self._scratch, self._scratch, 1, dtypes.float32, "sum")
        self.cuda.synchronize()

    def destroy(self) -> None:
        if self._comm is not None:
            self.cuda.synchronize()
            self.library.destroy(self._comm)
            self._comm = None
