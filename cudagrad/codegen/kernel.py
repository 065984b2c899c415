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
class Kernel:
    name: str
    source: str
    device: str
    params: tuple[KernelParam, ...]
    launch: tuple = ()        # cuda: ((gx, gy, gz), (bx, by, bz), shared_bytes)
    # the exact CUDA architecture the source needs where it is not the device's own
    # (sm_90a for wgmma, which runs on compute capability 9.0 alone); "": the device's
    arch: str = ""

    def __repr__(self) -> str:
        return f"<Kernel {self.name} on {self.device}, {len(self.params)} buffers>"
