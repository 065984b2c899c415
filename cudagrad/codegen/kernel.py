"""A kernel is data: its source text and what it takes. The runtime compiles and
launches it without knowing the graph it came from."""
from __future__ import annotations

from dataclasses import dataclass

from cudagrad.dtypes import DType


@dataclass(frozen=True)
class KernelParam:
    name: str
    dtype: DType
    is_output: bool


@dataclass(frozen=True)
class TensorMap:
    """A tensor map (TMA) the launch encodes from one buffer's address: the buffer read as
    a row-major matrix of `dims` = (inner, outer) elements, rows `row_stride` elements
    apart, starting `offset` elements in; copied in boxes of `box` = (inner, outer)
    elements, 128-byte swizzled in shared memory, zeros outside the matrix. The kernel
    takes it by value after its buffers, in this order."""
    param: int                   # the buffer's index in Kernel.params
    dtype: str                   # "float32" | "bfloat16"
    offset: int
    dims: tuple[int, int]
    row_stride: int
    box: tuple[int, int]


@dataclass(frozen=True)
class Kernel:
    name: str
    source: str
    device: str
    params: tuple[KernelParam, ...]
    launch: tuple = ()        # cuda: ((gx, gy, gz), (bx, by, bz), shared_bytes)
    # the exact CUDA architecture the source needs where it is not the device's own
    # (sm_90a for wgmma, which runs on compute capability 9.0 alone); "": the device's
    arch: str = ""
    # tensor maps the launch builds from the buffers' addresses (cuda only), and the
    # kernel launched instead where an address cannot be a map's base (TMA needs 16 bytes
    # of alignment; a buffer imported through DLPack may start anywhere)
    tensor_maps: tuple[TensorMap, ...] = ()
    fallback: Kernel | None = None
    # bytes of device memory the kernel keeps between launches, zeroed once, passed after
    # its buffers (cuda only: a split-K matmul's tile counters and partial sums)
    workspace: int = 0

    def __repr__(self) -> str:
        return f"<Kernel {self.name} on {self.device}, {len(self.params)} buffers>"
