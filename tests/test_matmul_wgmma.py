"""The Hopper warpgroup matmul (templates/cuda/matmul_wgmma.cu.j2): which matmuls take it,
that its CUDA C compiles for sm_90a without a GPU, and, on an sm_90 GPU, its values
against numpy float64 with sizes off its 256x128 tiles, K off its stages, fused bias +
relu epilogues, batches, and the shapes that fall back to the mma.sync kernel."""
from __future__ import annotations

import numpy as np
import pytest

import cudagrad as cg
from cudagrad.codegen import render
from cudagrad.realization import plan_kernels
from helpers import make

TF32_ERROR, BF16_ERROR = 3e-3, 1.5e-2


@pytest.fixture
def precision():
    yield cg.set_float32_matmul_precision
    cg.set_float32_matmul_precision("highest")


@pytest.fixture
def hopper(monkeypatch):
    """Render as for an sm_90 GPU, whatever this machine has."""
    monkeypatch.setattr(render, "_cuda_arch", lambda: render.WGMMA_ARCH)


def relative_error(actual, expected) -> float:
    actual = np.asarray(actual, dtype=np.float64)
    assert np.all(np.isfinite(actual)), "non-finite output (an element not written?)"
    scale = np.linalg.norm(expected)
    return float(np.linalg.norm(actual - expected) / (scale if scale else 1.0))


def matmul_kernel(out):
    kernels = [kernel for spec, kernel, _ in plan_kernels([out.node], "cuda") if spec.kind == "matmul"]
    assert len(kernels) == 1
    return kernels[0]


def operands(rng, device, kind, a_shape, b_shape):
    """Tensors a, b of `kind` ("tf32": float32 under the "high" precision) and their exact
    values as float64."""
    a = make(rng.standard_normal(a_shape).astype(np.float32), device, requires_grad=False)
    b = make(rng.standard_normal(b_shape).astype(np.float32), device, requires_grad=False)
    if kind == "bf16":
        a, b = a.to(cg.bfloat16), b.to(cg.bfloat16)
        cg.realize(a, b)
        return a, b, a.to(cg.float64).numpy(), b.to(cg.float64).numpy()
    cg.set_float32_matmul_precision("high")
    return a, b, a.numpy().astype(np.float64), b.numpy().astype(np.float64)


def on_hopper() -> bool:
    if not cg.cuda_available()[0]:
        return False
    from cudagrad.device import get_device
    return tuple(get_device("cuda").target["compute_capability"]) == (9, 0)


# ---- which kernel: decided when rendering, no GPU needed ----------------------------------------
@pytest.mark.parametrize("kind", ["tf32", "bf16"])
def test_row_major_operands_take_wgmma_on_sm90(rng, precision, hopper, kind):
    a, b, _, _ = operands(rng, "cpu", kind, (1000, 520), (520, 1048))
    kernel = matmul_kernel(a @ b)
    assert "wgmma.mma_async" in kernel.source and kernel.arch == "sm_90a"
    assert kernel.launch[1] == (384, 1, 1)
    # fed by TMA: a map of a (k, m) and of b (n, k); the cp.async kernel is the fallback for
    # addresses a map cannot start at
    assert "cp.async.bulk.tensor" in kernel.source and "__cluster_dims__" not in kernel.source
    assert [tensor_map.dims for tensor_map in kernel.tensor_maps] == [(520, 1000), (1048, 520)]
    assert kernel.launch[0] == (9, 4, 1)
    fallback = kernel.fallback
    assert fallback is not None and not fallback.tensor_maps and "cp.async.cg" in fallback.source
    assert fallback.launch[0] == (9, 4, 1) and fallback.arch == "sm_90a"


@pytest.mark.parametrize("kind", ["tf32", "bf16"])
def test_batched_and_offset_operands_keep_the_cp_async_producer(rng, precision, hopper, kind):
    a, b, _, _ = operands(rng, "cpu", kind, (4, 300, 264), (264, 520))
    kernel = matmul_kernel(a @ b)
    assert "wgmma" in kernel.source and not kernel.tensor_maps and "cp.async.bulk" not in kernel.source
    big_a, big_b, _, _ = operands(rng, "cpu", kind, (1032, 520), (520, 1048))
    sliced = matmul_kernel(big_a[8:] @ big_b)           # a view 8 rows in: a map starting there
    assert sliced.tensor_maps[0].offset == 8 * 520 and sliced.tensor_maps[0].dims == (520, 1024)


@pytest.mark.parametrize("kind", ["tf32", "bf16"])
def test_other_matmuls_keep_mma_sync(rng, precision, hopper, kind):
    a, b, _, _ = operands(rng, "cpu", kind, (1024, 1024), (1024, 1024))
    for out in (a @ b.T, a.T @ b, a[:256, :256] @ b[:256, :256]):     # layouts, a small matmul
        kernel = matmul_kernel(out)
        assert "wgmma" not in kernel.source and "mma.sync" in kernel.source and kernel.arch == ""
    odd_a, odd_b, _, _ = operands(rng, "cpu", kind, (1000, 517), (517, 1003))   # no 16-byte vectors
    assert "wgmma" not in matmul_kernel(odd_a @ odd_b).source


def test_sm80_never_takes_wgmma(rng, precision, monkeypatch):
    monkeypatch.setattr(render, "_cuda_arch", lambda: 80)
    a, b, _, _ = operands(rng, "cpu", "bf16", (1024, 1024), (1024, 1024))
    assert "wgmma" not in matmul_kernel(a @ b).source


@pytest.mark.parametrize("variant", [{}, {"cluster": 2}, {"tma_stages": 4}, {"tma": False}, {"tma": False, "handoff": "lagged"},
                                     {"tma": False, "stages": 3, "l2_prefetch": "256B"}], ids=str)
@pytest.mark.parametrize("kind", ["tf32", "bf16"])
def test_wgmma_kernel_compiles_for_sm90a(rng, precision, hopper, monkeypatch, kind, variant):
    """The default and the variants scripts/matmul_variants.py measures."""
    for key, value in variant.items():
        monkeypatch.setitem(render.WGMMA_TILING, key, value)
    nvrtc = pytest.importorskip("cudagrad.runtime.nvrtc")
    pytest.importorskip("cuda.bindings.nvrtc")
    a, b, _, _ = operands(rng, "cpu", kind, (1000, 520), (520, 1048))
    bias = make(rng.standard_normal(1048).astype(np.float32), "cpu", requires_grad=False)
    if kind == "bf16":
        bias = bias.to(cg.bfloat16)
        bias.realize()
    kernel = matmul_kernel((a @ b + bias).relu())
    assert nvrtc.compile_cuda(kernel.source, kernel.name, kernel.arch)[:4] == b"\x7fELF"
    if kernel.fallback is not None:
        assert nvrtc.compile_cuda(kernel.fallback.source, kernel.fallback.name, kernel.arch)[:4] == b"\x7fELF"


# ---- values on an sm_90 GPU ---------------------------------------------------------------------
gpu = pytest.mark.skipif(not on_hopper(), reason="needs an sm_90 GPU")
SHAPES = [(1000, 520, 1048), (512, 512, 512), (64, 2048, 1032), (2304, 264, 264)]


@gpu
@pytest.mark.parametrize("kind", ["tf32", "bf16"])
@pytest.mark.parametrize("m,k,n", SHAPES, ids=str)
def test_wgmma_values(rng, seed, precision, kind, m, k, n):
    a, b, a64, b64 = operands(rng, "cuda", kind, (m, k), (k, n))
    out = a @ b
    assert "wgmma" in matmul_kernel(out).source
    error = relative_error(out.to(cg.float64).numpy(), a64 @ b64)
    assert error < (TF32_ERROR if kind == "tf32" else BF16_ERROR), f"{kind} {m}x{k}x{n} seed={seed}: {error}"


@gpu
@pytest.mark.parametrize("kind", ["tf32", "bf16"])
def test_wgmma_bias_relu_epilogue_is_one_kernel(rng, seed, precision, kind):
    m, k, n = 1000, 520, 1048
    a, b, a64, b64 = operands(rng, "cuda", kind, (m, k), (k, n))
    bias = make(rng.standard_normal(n).astype(np.float32), "cuda", requires_grad=False)
    if kind == "bf16":
        bias = bias.to(cg.bfloat16)
        bias.realize()
    out = (a @ b + bias).relu()
    assert len(out.kernels()) == 1 and "wgmma" in matmul_kernel(out).source
    expected = np.maximum(a64 @ b64 + bias.to(cg.float64).numpy(), 0)
    error = relative_error(out.to(cg.float64).numpy(), expected)
    assert error < (TF32_ERROR if kind == "tf32" else BF16_ERROR), f"{kind} seed={seed}: {error}"


@gpu
@pytest.mark.parametrize("kind", ["tf32", "bf16"])
def test_wgmma_batched(rng, seed, precision, kind):
    a, b, a64, b64 = operands(rng, "cuda", kind, (4, 300, 264), (264, 520))
    out = a @ b
    assert "wgmma" in matmul_kernel(out).source
    error = relative_error(out.to(cg.float64).numpy(), a64 @ b64)
    assert error < (TF32_ERROR if kind == "tf32" else BF16_ERROR), f"{kind} seed={seed}: {error}"


@gpu
@pytest.mark.parametrize("kind", ["tf32", "bf16"])
def test_fallback_shapes_stay_right(rng, seed, precision, kind):
    a, b, a64, b64 = operands(rng, "cuda", kind, (1000, 517), (517, 1003))
    out = a @ b
    assert "wgmma" not in matmul_kernel(out).source
    error = relative_error(out.to(cg.float64).numpy(), a64 @ b64)
    assert error < (TF32_ERROR if kind == "tf32" else BF16_ERROR), f"{kind} seed={seed}: {error}"


@gpu
@pytest.mark.parametrize("kind", ["tf32", "bf16"])
def test_tma_kernel_follows_new_buffers_and_offset_views(rng, seed, precision, kind):
    """The same plan on other buffers (the launch re-encodes its tensor maps), and on views
    that start inside their buffer (a map's start moved by the view's offset)."""
    for _ in range(2):
        a, b, a64, b64 = operands(rng, "cuda", kind, (1032, 520), (520, 1048))
        out = a[8:] @ b
        assert matmul_kernel(out).tensor_maps
        error = relative_error(out.to(cg.float64).numpy(), a64[8:] @ b64)
        assert error < (TF32_ERROR if kind == "tf32" else BF16_ERROR), f"{kind} seed={seed}: {error}"


@gpu
def test_tma_kernel_falls_back_where_a_buffer_is_not_16_byte_aligned(rng, seed, precision):
    """An imported buffer 4 bytes into its allocation cannot start a tensor map: the launch
    runs the cp.async kernel instead, with the same values."""
    torch = pytest.importorskip("torch")
    m, k, n = 1000, 520, 1048
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    storage = torch.zeros(m * k + 1, device="cuda")
    storage[1:] = torch.from_numpy(x).cuda().reshape(-1)
    a = cg.from_dlpack(storage[1:].view(m, k))
    b = make(w, "cuda", requires_grad=False)
    cg.set_float32_matmul_precision("high")
    out = a @ b
    assert matmul_kernel(out).tensor_maps
    error = relative_error(out.numpy().astype(np.float64), x.astype(np.float64) @ w.astype(np.float64))
    assert error < TF32_ERROR, f"seed={seed}: {error}"


@gpu
@pytest.mark.parametrize("graph", [False, True], ids=["plain", "graph"])
def test_tma_kernel_under_jit(rng, seed, graph):
    """cg.jit replays (and captures into a CUDA graph) a launch with tensor maps."""
    a, b, a64, b64 = operands(rng, "cuda", "bf16", (512, 512), (512, 512))

    @cg.jit(graph=graph)
    def step(x):
        return (x @ b).relu()

    for _ in range(4):
        x = make(rng.standard_normal((512, 512)).astype(np.float32), "cuda", requires_grad=False).to(cg.bfloat16)
        out = step(x)
        expected = np.maximum(x.to(cg.float64).numpy() @ b64, 0)
        error = relative_error(out.to(cg.float64).numpy(), expected)
        assert error < BF16_ERROR, f"seed={seed}: {error}"
