"""The matmul kernel paths: 16-byte vector operand loads where a view allows them, the
generic per-element path where it does not, TF32 tensor cores behind
cg.set_float32_matmul_precision("high"), bfloat16 tensor cores, and the fused epilogue
on each. Values against numpy float64 on fresh random inputs, sizes off the tiles."""
from __future__ import annotations

import numpy as np
import pytest

import cudagrad as cg
from cudagrad.codegen.dialect import DIALECTS
from cudagrad.codegen.lower import lower
from cudagrad.codegen.schedule import schedule
from cudagrad.realization import plan_kernels
from helpers import grad_of, make

SIZES = [(1, 1, 1), (7, 33, 5), (33, 7, 129), (129, 257, 33), (257, 129, 1000), (1000, 64, 36)]
# norm-wise relative error bounds: float32 fused multiply-adds, TF32 products (10-bit
# mantissas, float32 sums), bfloat16 operands and a bfloat16 result
FLOAT32_ERROR, TF32_ERROR, BF16_ERROR = 1e-5, 3e-3, 1.5e-2


@pytest.fixture
def precision():
    """Yields the switch; the default comes back after the test, whatever happens."""
    yield cg.set_float32_matmul_precision
    cg.set_float32_matmul_precision("highest")


def relative_error(actual, expected) -> float:
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    assert np.all(np.isfinite(actual)), "non-finite output (an element not written?)"
    scale = np.linalg.norm(expected)
    return float(np.linalg.norm(actual - expected) / (scale if scale else 1.0))


def normal(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def matmul_kernel_source(out) -> str:
    """The CUDA source of the matmul kernel that realizes out (rendered, not run)."""
    sources = [kernel.source for spec, kernel, _ in plan_kernels([out.node], "cuda")
               if spec.kind == "matmul"]
    assert len(sources) == 1
    return sources[0]


def operand_modes(out) -> tuple[str, str]:
    """How the CUDA matmul kernel reads a and b: "k", "mn" (16-byte vectors) or "generic"."""
    def mode(layout):
        return "generic" if layout is None else layout.contiguous
    for spec in schedule([out.node]):
        if spec.kind == "matmul":
            tiles = lower(spec, DIALECTS["cuda"])[0].tiles
            return mode(tiles.a_layout), mode(tiles.b_layout)
    raise AssertionError("no matmul kernel")


# ---- float32, fused multiply-adds ---------------------------------------------------------
@pytest.mark.parametrize("m,k,n", SIZES, ids=str)
def test_float32_sizes_off_the_tiles(device, rng, seed, m, k, n):
    a, b = normal(rng, m, k), normal(rng, k, n)
    out = make(a, device) @ make(b, device)
    error = relative_error(out.numpy(), a.astype(np.float64) @ b)
    assert error < FLOAT32_ERROR, f"{m}x{k}x{n} seed={seed}: {error}"


VIEWS = {
    # name: (a from x [m, k] or [k, m], b from w, the modes the CUDA kernel must pick)
    "row-major": (lambda x: x, lambda w: w, ("k", "mn")),
    "b transposed (x @ W.T)": (lambda x: x, lambda w: w.T, ("k", "k")),
    "a transposed (X.T @ g)": (lambda x: x.T, lambda w: w, ("mn", "mn")),
    "both transposed": (lambda x: x.T, lambda w: w.T, ("mn", "k")),
    "rows sliced, aligned": (lambda x: x[4:], lambda w: w, ("k", "mn")),
    "k and n sliced by one: generic": (lambda x: x[:, 1:], lambda w: w[1:, 1:], ("generic", "generic")),
    "every other row": (lambda x: x[::2], lambda w: w, ("k", "mn")),
    "flipped rows, flipped columns: generic": (lambda x: x[::-1], lambda w: w[:, ::-1], ("k", "generic")),
}


@pytest.mark.parametrize("view", sorted(VIEWS), ids=str)
def test_float32_operand_views(device, rng, seed, view):
    make_a, make_b, modes = VIEWS[view]
    x, w = normal(rng, 72, 72), normal(rng, 72, 72)
    a_view, b_view = make_a(x), make_b(w)
    out = make_a(make(x, device)) @ make_b(make(w, device))
    assert operand_modes(out) == modes
    error = relative_error(out.numpy(), a_view.astype(np.float64) @ b_view)
    assert error < FLOAT32_ERROR, f"{view} seed={seed}: {error}"


# output sizes whose tiles (see test_fma_tiles_shrink_until_every_multiprocessor_has_one)
# are 128x128 and 64x64; the small sizes above get 32x32
TILED_SIZES = {"128x128 tiles": (1412, 72, 1544), "64x64 tiles": (900, 40, 1000)}


@pytest.mark.parametrize("tiles", sorted(TILED_SIZES))
@pytest.mark.parametrize("layout", ["x @ w", "x @ w.T", "x.T @ w", "x.T @ w.T"])
def test_float32_big_tiles(device, rng, seed, layout, tiles):
    """Enough output tiles for the 128x128 and 64x64 tilings, edges off the tile in m and
    n, every operand layout."""
    m, k, n = TILED_SIZES[tiles]
    x = normal(rng, *((k, m) if layout.startswith("x.T") else (m, k)))
    w = normal(rng, *((n, k) if layout.endswith("w.T") else (k, n)))
    a = x.T if layout.startswith("x.T") else x
    b = w.T if layout.endswith("w.T") else w
    xt, wt = make(x, device), make(w, device)
    out = (xt.T if layout.startswith("x.T") else xt) @ (wt.T if layout.endswith("w.T") else wt)
    error = relative_error(out.numpy(), a.astype(np.float64) @ b)
    assert error < FLOAT32_ERROR, f"{layout} seed={seed}: {error}"


@pytest.mark.parametrize("m,n,batch,tile", [(4096, 4096, 1, 128), (1412, 1544, 1, 128), (900, 1000, 1, 64),
                                             (512, 512, 1, 32), (512, 512, 3, 64), (512, 512, 9, 128),
                                             (1, 4096, 1, 32),
                                             (3, 5, 1, 32)])
def test_fma_tiles_shrink_until_every_multiprocessor_has_one(m, n, batch, tile):
    """The fused multiply-add matmul takes the largest tiles that still give each of the
    132 multiprocessors of an H100 a block (a 512-wide layer: 16 tiles of 128x128, 64 of
    64x64, 256 of 32x32), and the smallest where none does."""
    from types import SimpleNamespace

    from cudagrad.codegen.render import TYPICAL_MULTIPROCESSORS, _fma_tiling
    tiling = _fma_tiling(SimpleNamespace(m=m, n=n, batch=batch))
    assert (tiling["tile_m"], tiling["tile_n"]) == (tile, tile)
    blocks = -(-m // tile) * -(-n // tile) * batch
    assert blocks >= TYPICAL_MULTIPROCESSORS or tile == 32


# ---- split-K: few output tiles and a long K ------------------------------------------------
def split_parts(out) -> int:
    """Parts of K the CUDA matmul kernel that realizes out splits each tile into."""
    kernels = [kernel for spec, kernel, _ in plan_kernels([out.node], "cuda") if spec.kind == "matmul"]
    assert len(kernels) == 1
    grid_z = kernels[0].launch[0][2]
    batch = int(np.prod(out.shape[:-2])) if out.ndim > 2 else 1
    assert (kernels[0].workspace > 0) == (grid_z > batch)
    return grid_z // batch


SPLIT_SIZES = [(512, 512, 10), (10, 512, 512), (128, 4096, 128), (7, 3001, 5), (16, 1000, 24)]


@pytest.mark.parametrize("m,k,n", SPLIT_SIZES, ids=str)
def test_split_k_sizes_with_an_epilogue(device, rng, seed, m, k, n):
    """Each tile's K in parts, the last part to finish adding them and running the fused
    bias and ReLU; K not a multiple of the parts or of a stage in the last two sizes."""
    a, b, bias = normal(rng, m, k), normal(rng, k, n), normal(rng, n)
    out = (make(a, device) @ make(b, device) + make(bias, device)).relu()
    assert split_parts(out) > 1
    want = np.maximum(a.astype(np.float64) @ b + bias, 0)
    error = relative_error(out.numpy(), want)
    assert error < FLOAT32_ERROR, f"{m}x{k}x{n} seed={seed}: {error}"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_split_k_views_batches_and_repeated_launches(device, rng, seed, dtype):
    """A transposed a (a weight gradient, g.T @ h), a batched matmul, float64 partial
    sums, and the same kernel launched again on new values: each launch resets the tile
    counters it used, so the next one must add up its own parts only."""
    tolerance = FLOAT32_ERROR if dtype == "float32" else 1e-12
    for _ in range(3):
        g, h = rng.standard_normal((640, 10)), rng.standard_normal((640, 300))
        x, w = rng.standard_normal((3, 20, 900)), rng.standard_normal((3, 900, 30))
        g_t, h_t, x_t, w_t = (cg.tensor(v, dtype=dtype, device=device) for v in (g, h, x, w))
        grad, batched = g_t.T @ h_t, x_t @ w_t
        assert split_parts(grad) > 1 and split_parts(batched) > 1
        cg.realize(grad, batched)
        assert relative_error(grad.numpy(), g.T @ h) < tolerance
        assert relative_error(batched.numpy(), x @ w) < tolerance


def test_split_k_random_shapes_and_layouts(device, rng, seed):
    """Twelve drawn cases: small outputs, K from 128 to 3000, either operand transposed or
    sliced, batched or not, float32 or float64, a fused bias (and ReLU) or none."""
    for case in range(12):
        m, n = (int(v) for v in rng.integers(1, 70, 2))
        k = int(rng.integers(128, 3000))
        batch = int(rng.choice([1, 1, 2, 3]))
        dtype = str(rng.choice(["float32", "float64"]))
        x = rng.standard_normal((batch, k, m) if rng.random() < 0.5 else (batch, m, k + 1))
        w = rng.standard_normal((batch, n, k) if rng.random() < 0.5 else (batch, k, n))
        bias = rng.standard_normal(n)
        xt, wt, bt = (cg.tensor(v, dtype=dtype, device=device) for v in (x, w, bias))
        a, a_np = (xt.transpose(-2, -1), x.swapaxes(-2, -1)) if x.shape[-2] == k else (xt[..., 1:], x[..., 1:])
        b, b_np = (wt.transpose(-2, -1), w.swapaxes(-2, -1)) if w.shape[-2] == n else (wt, w)
        if batch == 1:
            a, a_np, b, b_np = a[0], a_np[0], b[0], b_np[0]
        out, want = a @ b, a_np @ b_np
        if rng.random() < 0.5:
            out, want = (out + bt).relu(), np.maximum(want + bias, 0)
        tolerance = FLOAT32_ERROR if dtype == "float32" else 1e-12
        error = relative_error(out.numpy(), want)
        assert error < tolerance, f"case {case}: {m}x{k}x{n} batch {batch} {dtype} seed={seed}: {error}"


def test_empty_output_with_a_long_k(device):
    out = cg.zeros((0, 512), device=device) @ cg.ones((512, 10), device=device)
    assert out.numpy().shape == (0, 10)
    grad = cg.ones((512, 0), device=device).T @ cg.ones((512, 7), device=device)
    assert grad.numpy().shape == (0, 7)


def test_split_k_is_deterministic(device, rng):
    """The parts are added in part order, whichever block finishes last: bit for bit the
    same result every time."""
    a, b = normal(rng, 24, 4096), normal(rng, 4096, 20)
    first = (make(a, device) @ make(b, device)).numpy()
    for _ in range(5):
        np.testing.assert_array_equal((make(a, device) @ make(b, device)).numpy(), first)


@pytest.mark.parametrize("m,k,n,parts", [(512, 512, 10, 8), (128, 4096, 128, 16), (512, 512, 512, 1),
                                         (16, 100, 16, 1), (4096, 4096, 4096, 1), (0, 512, 10, 1)])
def test_split_k_parts(m, k, n, parts):
    """Split where the tiles leave multiprocessors idle, into as many parts (a power of 2,
    at most 16) as fill them, each at least 64 deep; never where the tiles fill the GPU,
    nor where the output is empty."""
    out = cg.tensor(np.zeros((m, k), np.float32), device="cpu") @ cg.tensor(np.zeros((k, n), np.float32),
                                                                            device="cpu")
    assert split_parts(out) == parts


def test_float32_odd_k_takes_the_generic_path(rng):
    out = make(normal(rng, 9, 7), "cpu") @ make(normal(rng, 7, 6), "cpu")
    assert operand_modes(out) == ("generic", "generic")


@pytest.mark.parametrize("a_shape,b_shape", [((3, 65, 36), (3, 36, 40)), ((2, 1, 33, 8), (4, 8, 20)),
                                             ((5, 40, 12), (12, 132))], ids=str)
def test_float32_batched(device, rng, seed, a_shape, b_shape):
    a, b = normal(rng, *a_shape), normal(rng, *b_shape)
    out = make(a, device) @ make(b, device)
    error = relative_error(out.numpy(), a.astype(np.float64) @ b)
    assert error < FLOAT32_ERROR, f"{a_shape} @ {b_shape} seed={seed}: {error}"


def test_batched_operand_offsets_are_per_batch(rng):
    """A broadcast batch (stride 0) and a strided batch both keep vector loads."""
    a = make(normal(rng, 3, 16, 8), "cpu")
    b = make(normal(rng, 8, 12), "cpu")
    assert operand_modes(a @ b) == ("k", "mn")


@pytest.mark.parametrize("m,k,n", [(129, 257, 33), (64, 64, 64)], ids=str)
def test_float32_epilogue_bias_relu_is_one_kernel(device, rng, seed, m, k, n):
    x, w, bias = normal(rng, m, k), normal(rng, k, n), normal(rng, n)
    out = (make(x, device) @ make(w, device) + make(bias, device)).relu()
    assert len(out.kernels()) == 1
    expected = np.maximum(x.astype(np.float64) @ w + bias, 0)
    error = relative_error(out.numpy(), expected)
    assert error < FLOAT32_ERROR, f"seed={seed}: {error}"


def test_float32_linear_gradients(device, rng, seed):
    """Linear's forward reads W.T, its gradients read X.T and g: the vector layouts of
    training, against hand formulas."""
    x, w, g = normal(rng, 96, 40), normal(rng, 24, 40), normal(rng, 96, 24)
    xt, wt = make(x, device), make(w, device)
    out = xt @ wt.T
    out.backward(make(g, device, requires_grad=False))
    for actual, expected in ((out.numpy(), x.astype(np.float64) @ w.T),
                             (grad_of(xt), g.astype(np.float64) @ w), (grad_of(wt), g.T.astype(np.float64) @ x)):
        assert relative_error(actual, expected) < FLOAT32_ERROR, f"seed={seed}"


# ---- the precision switch and TF32 -----------------------------------------------------------
def test_precision_switch_default_and_errors(precision):
    assert cg.get_float32_matmul_precision() == "highest"
    precision("high")
    assert cg.get_float32_matmul_precision() == "high"
    with pytest.raises(ValueError, match="set_float32_matmul_precision"):
        cg.set_float32_matmul_precision("fast")
    assert cg.get_float32_matmul_precision() == "high"


def test_tf32_is_chosen_when_the_matmul_is_built(rng, precision):
    a, b = make(normal(rng, 40, 24), "cpu"), make(normal(rng, 24, 16), "cpu")
    full = a @ b
    precision("high")
    relaxed = a @ b
    assert "mma.sync" not in matmul_kernel_source(full)
    assert "tf32" in matmul_kernel_source(relaxed)
    precision("highest")
    assert "mma.sync" not in matmul_kernel_source(a @ b)
    # float64 matmuls ignore the switch
    precision("high")
    assert "mma.sync" not in matmul_kernel_source(a.to(cg.float64) @ b.to(cg.float64))


def test_precision_is_part_of_the_plan(device, rng, seed, precision):
    """The same graph realized under each precision must not share a plan: on CUDA the
    TF32 result differs from the float32 one by far more than float32 rounding."""
    a, b = normal(rng, 256, 256), normal(rng, 256, 256)
    expected = a.astype(np.float64) @ b
    first = relative_error((make(a, device) @ make(b, device)).numpy(), expected)
    precision("high")
    second = relative_error((make(a, device) @ make(b, device)).numpy(), expected)
    precision("highest")
    third = relative_error((make(a, device) @ make(b, device)).numpy(), expected)
    assert first < FLOAT32_ERROR and third < FLOAT32_ERROR, f"seed={seed}"
    assert second < TF32_ERROR, f"seed={seed}"
    if device == "cuda":
        assert second > 1e-5, f"TF32 not used under 'high' (plan reused?) seed={seed}"
    else:
        assert second < FLOAT32_ERROR, "the CPU computes in float32 whatever the switch"


@pytest.mark.parametrize("m,k,n", SIZES, ids=str)
def test_tf32_sizes_off_the_tiles(device, rng, seed, precision, m, k, n):
    precision("high")
    a, b = normal(rng, m, k), normal(rng, k, n)
    out = make(a, device) @ make(b, device)
    error = relative_error(out.numpy(), a.astype(np.float64) @ b)
    assert error < TF32_ERROR, f"{m}x{k}x{n} seed={seed}: {error}"


@pytest.mark.parametrize("view", sorted(VIEWS), ids=str)
def test_tf32_operand_views(device, rng, seed, precision, view):
    precision("high")
    make_a, make_b, _ = VIEWS[view]
    x, w = normal(rng, 136, 136), normal(rng, 136, 136)
    out = make_a(make(x, device)) @ make_b(make(w, device))
    error = relative_error(out.numpy(), make_a(x).astype(np.float64) @ make_b(w))
    assert error < TF32_ERROR, f"{view} seed={seed}: {error}"


def test_tf32_batched_and_epilogue(device, rng, seed, precision):
    precision("high")
    a, b, bias = normal(rng, 3, 130, 40), normal(rng, 40, 70), normal(rng, 70)
    out = (make(a, device) @ make(b, device) + make(bias, device)).relu()
    assert len(out.kernels()) == 1
    error = relative_error(out.numpy(), np.maximum(a.astype(np.float64) @ b + bias, 0))
    assert error < TF32_ERROR, f"seed={seed}: {error}"


# ---- bfloat16 ---------------------------------------------------------------------------------
def bf16_pair(rng, device, a_shape, b_shape):
    """bfloat16 tensors and their exact values as float64."""
    a = make(normal(rng, *a_shape), device).to(cg.bfloat16)
    b = make(normal(rng, *b_shape), device).to(cg.bfloat16)
    a.realize()
    b.realize()
    return a, b, a.to(cg.float64).numpy(), b.to(cg.float64).numpy()


@pytest.mark.parametrize("m,k,n", SIZES, ids=str)
def test_bf16_sizes_off_the_tiles(device, rng, seed, m, k, n):
    a, b, a64, b64 = bf16_pair(rng, device, (m, k), (k, n))
    out = a @ b
    assert out.dtype == cg.bfloat16
    error = relative_error(out.to(cg.float64).numpy(), a64 @ b64)
    assert error < BF16_ERROR, f"{m}x{k}x{n} seed={seed}: {error}"


@pytest.mark.parametrize("view", sorted(VIEWS), ids=str)
def test_bf16_operand_views(device, rng, seed, view):
    make_a, make_b, _ = VIEWS[view]
    a, b, a64, b64 = bf16_pair(rng, device, (136, 136), (136, 136))
    out = make_a(a) @ make_b(b)
    error = relative_error(out.to(cg.float64).numpy(), make_a(a64) @ make_b(b64))
    assert error < BF16_ERROR, f"{view} seed={seed}: {error}"


def test_bf16_kernel_uses_tensor_cores(rng):
    a, b, _, _ = bf16_pair(rng, "cpu", (64, 32), (32, 48))
    source = matmul_kernel_source(a @ b)
    assert "m16n8k16" in source and "bf16" in source
    assert operand_modes(a @ b) == ("k", "mn")


def test_bf16_batched_and_epilogue(device, rng, seed):
    a, b, a64, b64 = bf16_pair(rng, device, (2, 130, 48), (48, 72))
    bias = make(normal(rng, 72), device).to(cg.bfloat16)
    bias.realize()
    out = (a @ b + bias).relu()
    assert len(out.kernels()) == 1
    expected = np.maximum(a64 @ b64 + bias.to(cg.float64).numpy(), 0)
    error = relative_error(out.to(cg.float64).numpy(), expected)
    assert error < BF16_ERROR, f"seed={seed}: {error}"
