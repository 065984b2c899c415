"""NVRTC compiles CUDA C to CUBIN without any GPU (CPU-only, skipped without NVRTC)."""
from __future__ import annotations

import pytest

pytest.importorskip("cuda.bindings.nvrtc", reason="cuda-python is not installed")

from cudagrad.runtime.errors import CompileError  # noqa: E402
from cudagrad.runtime.nvrtc import compile_cuda, nvrtc_library, nvrtc_version  # noqa: E402

ELF_MAGIC = b"\x7fELF"

HALF_AND_BFLOAT16_KERNEL = r"""
#include <cuda_fp16.h>
#include <cuda_bf16.h>

extern "C" __global__ void scale_mixed(const float* input, __half* out_half,
                                       __nv_bfloat16* out_bfloat16) {
    int index = blockIdx.x * blockDim.x + threadIdx.x;
    if (index < 1000) {
        float value = input[index] * 2.0f;
        out_half[index] = __float2half(value);
        out_bfloat16[index] = __float2bfloat16(value);
    }
}
"""


@pytest.fixture(scope="module", autouse=True)
def nvrtc_loads():
    try:
        return nvrtc_version()
    except Exception as error:  # the bindings are there but libnvrtc is not
        pytest.skip(f"NVRTC library not available: {error}")


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_compiles_half_and_bfloat16_kernel_to_cubin(arch):
    cubin = compile_cuda(HALF_AND_BFLOAT16_KERNEL, "scale_mixed", arch)
    assert isinstance(cubin, bytes)
    assert cubin[:4] == ELF_MAGIC, "NVRTC must give a CUBIN (an ELF file), never PTX"
    assert b"scale_mixed" in cubin


def test_syntax_error_raises_compile_error_with_log():
    source = 'extern "C" __global__ void broken(float* x) { x[0] = 1.0f }\n'
    with pytest.raises(CompileError) as caught:
        compile_cuda(source, "broken", "sm_90")
    error = caught.value
    assert "broken.cu(1)" in error.log and "error" in error.log
    assert error.log in str(error)
    assert error.source == source


def test_bad_arch_is_rejected():
    with pytest.raises(ValueError):
        compile_cuda(HALF_AND_BFLOAT16_KERNEL, "scale_mixed", "compute_90")


def test_reports_version_and_library():
    major, minor = nvrtc_version()
    assert major >= 12 and minor >= 0
    assert "nvrtc" in nvrtc_library()
