"""Every CUDA kernel the suite's graphs produce compiles with NVRTC to CUBIN for
sm_80 and sm_90 (runs last: its file name sorts after the others). On CI there
is no GPU, so this is what proves the CUDA templates are valid CUDA C."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import cudagrad as cg

nvrtc = pytest.importorskip("cudagrad.runtime.nvrtc")
pytest.importorskip("cuda.bindings.nvrtc", reason="cuda-python is not installed")


def _representative_graphs():
    """A few graphs of every kernel family and dtype, so the file also checks
    something when it runs alone."""
    rng = np.random.default_rng()
    x = cg.tensor(rng.standard_normal((5, 7)), device="cpu")     # cpu graphs are the ones recorded
    y = cg.tensor(rng.standard_normal((7,)), device="cpu")
    outs = [((x * y + 1).exp().sum(axis=1)), (x @ x.T).relu(), x.max(axis=0), x.argmax(1),
            cg.cat([x, x[::-1]], 0), x.softmax(-1), x.to(cg.float64).mean()]
    for dtype in (cg.float16, cg.bfloat16, cg.int32, cg.bool):
        outs.append(x.cast(dtype) * 2 if dtype != cg.bool else (x > 0).cast(cg.bool))
    # matmuls on every CUDA path: 16-byte operand loads (K and N multiples of 4), the
    # generic path, TF32 and bfloat16 tensor cores
    a = cg.tensor(rng.standard_normal((16, 8)), device="cpu")
    w = cg.tensor(rng.standard_normal((12, 8)), device="cpu")
    outs += [(a @ w.T).relu(), a.T @ a, a[:, 1:] @ w[:, 1:].T]
    long_k = cg.tensor(rng.standard_normal((6, 700)), device="cpu")    # split-K, float64
    outs += [long_k @ long_k.T, long_k.T[:, :5].T @ long_k.T]
    cg.set_float32_matmul_precision("high")
    try:
        outs += [a @ w.T, a.T @ a]
    finally:
        cg.set_float32_matmul_precision("highest")
    a16, w16 = a.cast(cg.bfloat16), w.cast(cg.bfloat16)
    a16.realize()
    w16.realize()
    outs += [a16 @ w16.T, a16.T @ a16, a16[:, 1:] @ w16[:, 1:].T]
    for out in outs:          # one by one: realized together, same-size kernels merge
        out.realize()


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_every_generated_cuda_kernel_compiles(arch, record_cuda_kernels):
    try:
        nvrtc.nvrtc_version()
    except Exception as error:
        pytest.skip(f"NVRTC library not available: {error}")
    _representative_graphs()
    failures = [key for key, kernel in record_cuda_kernels.items() if isinstance(kernel, Exception)]
    assert not failures, f"rendering for CUDA failed: {failures[:3]}"
    kernels = list(record_cuda_kernels.values())
    assert len(kernels) >= 10

    def compile_one(kernel):
        cubin = nvrtc.compile_cuda(kernel.source, kernel.name, arch)
        assert cubin[:4] == b"\x7fELF", kernel.name
        return kernel.name

    with ThreadPoolExecutor(max_workers=4) as pool:
        compiled = list(pool.map(compile_one, kernels))
    assert len(compiled) == len(kernels)
    print(f"{len(kernels)} CUDA kernels compiled for {arch}")
