"""Vectorized ("lane") CUDA kernels, lower.py's packs: elementwise kernels read and write
contiguous operands as 16-byte packs with a ragged last slot, and row kernels keep the
row they read in several passes in registers (a fallback re-reads long rows).

The value tests run on cpu and cuda (the `device` fixture); on cuda they run the lane
kernels, on the CPU they pin the C path, and their CUDA sources are compiled by
test_zz_cuda_compile. tests/test_cuda_emulated.py runs the same CUDA kernels on the CPU.
The render tests check the decisions (width, alignment, caching) without a GPU.
"""
from __future__ import annotations

import numpy as np
import pytest

import cudagrad as cg
from cudagrad.bench.fusion import elementwise_chain, layer_norm
from cudagrad.realization import plan_kernels

SIZES = [1, 3, 4, 5, 8, 1023, 4099, 65541]
ROW_LENGTHS = [130, 999, 1000, 1003, 8192, 20000]
# rows longer than the register cache (ROW_CACHE_WORDS): float64, or two inputs read in each
# pass (rows of 2^15 and more, in at most 256 rows, are split into partial sums instead)
LONG_ROWS = [("float64", 20000, 1), ("float64", 20001, 1), ("float32", 20000, 2)]


def chain_numpy(x, y, z):
    return np.maximum((x * y + z) * 0.5 - y / (np.abs(z) + 1) + np.exp(-np.abs(x)), 0) * 1.5


def softmax_numpy(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def layer_norm_numpy(x, gamma, beta, eps=1e-5):
    centered = x - x.mean(axis=-1, keepdims=True)
    return centered / np.sqrt((centered ** 2).mean(axis=-1, keepdims=True) + eps) * gamma + beta


def leaf(array, device, dtype=None):
    return cg.tensor(array, device=device, dtype=dtype, requires_grad=False)


def close(got, want, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=rtol, atol=atol)


# ---- values, on every device ------------------------------------------------------------
@pytest.mark.parametrize("n", SIZES)
def test_chain_any_size(device, rng, n):
    arrays = [rng.standard_normal(n).astype(np.float32) for _ in range(3)]
    out = elementwise_chain(*[leaf(a, device) for a in arrays])
    assert len(out.kernels()) == 1
    close(out.numpy(), chain_numpy(*[a.astype(np.float64) for a in arrays]))


@pytest.mark.parametrize("n", [5, 1024, 4099])
def test_offset_views_on_and_off_the_pack_grid(device, rng, n):
    """Slices starting 1, 3, 4 and 8 elements into one buffer: 4 and 8 can be packs."""
    base = rng.standard_normal(n + 9).astype(np.float32)
    x = leaf(base, device)
    out = x[1:n + 1] * x[4:n + 4] + x[3:n + 3] - x[8:n + 8]
    want = base[1:n + 1] * base[4:n + 4] + base[3:n + 3] - base[8:n + 8]
    close(out.numpy(), want.astype(np.float64))


def test_rows_of_a_matrix_slice(device, rng):
    """A slice of whole rows is one contiguous run (a pack offset of 2 rows)."""
    base = rng.standard_normal((9, 33)).astype(np.float32)
    other = rng.standard_normal((5, 33)).astype(np.float32)
    out = leaf(base, device)[2:7] * leaf(other, device) + 1
    close(out.numpy(), (base[2:7] * other + 1).astype(np.float64))


def test_broadcast_and_permuted_operands_beside_contiguous_ones(device, rng):
    x = rng.standard_normal((37, 41)).astype(np.float32)
    y = rng.standard_normal((41, 37)).astype(np.float32)
    row = rng.standard_normal(41).astype(np.float32)
    column = rng.standard_normal((37, 1)).astype(np.float32)
    out = leaf(x, device) * leaf(row, device) + leaf(y, device).T - leaf(column, device)
    close(out.numpy(), (x * row + y.T - column).astype(np.float64))


def test_strided_slice_beside_contiguous(device, rng):
    base = rng.standard_normal(2 * 1001).astype(np.float32)
    other = rng.standard_normal(1001).astype(np.float32)
    out = leaf(base, device)[::2] + leaf(other, device)
    close(out.numpy(), (base[::2] + other).astype(np.float64))


@pytest.mark.parametrize("n", [7, 1029])
@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16", "int32", "bool"])
def test_dtypes(device, rng, n, dtype):
    x = rng.standard_normal(n).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    tx, ty = leaf(x, device), leaf(y, device)
    if dtype == "bool":
        out = (tx > ty).cast(cg.bool)
        np.testing.assert_array_equal(out.numpy(), x > y)
        return
    if dtype == "int32":
        xi, yi = (x * 100).astype(np.int32), (y * 100).astype(np.int32)
        out = leaf(xi, device) * 3 + leaf(yi, device)
        np.testing.assert_array_equal(out.numpy(), xi * 3 + yi)
        return
    cast = getattr(cg, dtype)
    a, b = tx.cast(cast).realize(), ty.cast(cast).realize()
    out = (a * b + a).cast(cg.float32)           # reads two narrow (or wide) buffers
    tolerance = {"float64": 1e-6, "float16": 4e-3, "bfloat16": 3e-2}[dtype]
    want = x.astype(np.float64) * y + x
    close(out.numpy(), want, rtol=tolerance, atol=tolerance * 4)


def test_several_outputs_of_one_kernel(device, rng):
    x = rng.standard_normal(1027).astype(np.float32)
    tx = leaf(x, device)
    a, b = tx * 2 + 1, (tx * tx).cast(cg.float64)
    cg.realize(a, b)
    close(a.numpy(), x.astype(np.float64) * 2 + 1)
    close(b.numpy(), x.astype(np.float64) ** 2)


@pytest.mark.parametrize("cols", ROW_LENGTHS)
def test_softmax_rows(device, rng, cols):
    x = rng.standard_normal((3, cols)).astype(np.float32)
    out = leaf(x, device).softmax(-1)
    assert len(out.kernels()) == 1
    close(out.numpy(), softmax_numpy(x.astype(np.float64)), atol=1e-7)


@pytest.mark.parametrize("cols", ROW_LENGTHS)
def test_layer_norm_rows(device, rng, cols):
    x = rng.standard_normal((3, cols)).astype(np.float32)
    gamma = rng.standard_normal(cols).astype(np.float32)
    beta = rng.standard_normal(cols).astype(np.float32)
    out = layer_norm(leaf(x, device), leaf(gamma, device), leaf(beta, device))
    assert len(out.kernels()) == 1
    close(out.numpy(), layer_norm_numpy(x.astype(np.float64), gamma, beta), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_softmax_rows_of_other_dtypes(device, rng, dtype):
    x = rng.standard_normal((3, 1000)).astype(np.float32)
    narrow = leaf(x, device).cast(getattr(cg, dtype)).realize()
    out = narrow.softmax(-1).cast(cg.float32)
    tolerance = 2e-3 if dtype == "float16" else 1e-6
    want = softmax_numpy(x.astype(getattr(np, dtype)).astype(np.float64))
    close(out.numpy(), want, rtol=tolerance, atol=tolerance * 1e-2)


@pytest.mark.parametrize("dtype, cols, inputs", LONG_ROWS)
def test_long_rows_read_again_in_each_pass(device, rng, dtype, cols, inputs):
    arrays = [rng.standard_normal((3, cols)).astype(dtype) for _ in range(inputs)]
    x = leaf(arrays[0], device)
    for array in arrays[1:]:
        x = x * leaf(array, device)
    out = x.softmax(-1)
    assert len(out.kernels()) == 1
    product = np.prod(np.stack(arrays).astype(np.float64), axis=0)
    close(out.numpy(), softmax_numpy(product), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("cols", [131, 4096])
def test_log_softmax_and_two_phase_rows(device, rng, cols):
    x = rng.standard_normal((4, cols)).astype(np.float64)
    out = leaf(x, device).log_softmax(-1)
    shifted = x - x.max(axis=-1, keepdims=True)
    close(out.numpy(), shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True)), rtol=1e-10)


@pytest.mark.parametrize("shape", [(5, 3, 256), (4, 1, 1001, 1)])
def test_softmax_rows_of_higher_rank(device, rng, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    axis = -1 if shape[-1] != 1 else -2
    out = leaf(x, device).softmax(axis)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    close(out.numpy(), e / e.sum(axis=axis, keepdims=True), atol=1e-7)


@pytest.mark.parametrize("view", ["rows", "columns", "transposed"])
def test_softmax_of_views(device, rng, view):
    x = rng.standard_normal((7, 1030)).astype(np.float32)
    t = leaf(x, device)
    if view == "rows":
        t, x = t[1:6], x[1:6]                   # one contiguous run, 1 row in: off the grid
    elif view == "columns":
        t, x = t[:, 3:1027], x[:, 3:1027]       # not contiguous: lane by lane
    else:
        t, x = t[:, :300].T, x[:, :300].T
    close(leaf_softmax(t).numpy(), softmax_numpy(x.astype(np.float64)), atol=1e-7)


def leaf_softmax(t):
    return t.softmax(-1)


def test_softmax_gradient_rows(device, rng):
    """The backward of softmax is a row kernel too (sum of g * y over the row)."""
    x_np = rng.standard_normal((3, 999)).astype(np.float64)
    g_np = rng.standard_normal((3, 999))
    x = cg.tensor(x_np, device=device)
    (x.softmax(-1) * cg.tensor(g_np, device=device, requires_grad=False)).sum().backward()
    y = softmax_numpy(x_np)
    want = y * (g_np - (g_np * y).sum(axis=-1, keepdims=True))
    close(np.reshape(x.grad, want.shape), want, rtol=1e-9, atol=1e-12)


# ---- the decisions, from the rendered CUDA source (no GPU needed) --------------------------
def cuda_kernels(out):
    return [kernel for _, kernel, _ in plan_kernels([out.node], "cuda")]


def test_chain_renders_16_byte_packs_for_every_operand():
    x, y, z = [cg.tensor(np.ones(1 << 12, dtype=np.float32)) for _ in range(3)]
    (kernel,) = cuda_kernels(elementwise_chain(x, y, z))
    source = kernel.source
    assert source.count("cg_load_pack<cg_pack<float, 4, 16>>") == 3
    assert source.count("cg_store_pack<cg_pack<float, 4, 16>>") == 1
    for name in ("in0", "in1", "in2", "out0"):
        assert f"cg_is_aligned({name}, 16)" in source
    assert "if (j < n) {" not in source          # 4096 is whole slots: no ragged lane test


def test_ragged_size_tests_the_last_slot():
    x = cg.tensor(np.ones(4099, dtype=np.float32))
    (kernel,) = cuda_kernels(x * 2)
    assert "slot < 1024 ? 4 : 3" in kernel.source


def test_offset_off_the_grid_is_read_lane_by_lane():
    x = cg.tensor(np.ones(1033, dtype=np.float32))
    (kernel,) = cuda_kernels(x[3:1027] + x[4:1028])
    assert "= false;" in kernel.source            # offset 3: never one access
    assert "cg_is_aligned(in0 + 4, 16)" in kernel.source


@pytest.mark.parametrize("dtype, width, align", [("float64", 2, 16), ("float16", 8, 16),
                                                 ("int32", 4, 16), ("bool", 8, 8)])
def test_width_follows_the_widest_operand(dtype, width, align):
    x = cg.tensor(np.ones(100, dtype=np.float32)).cast(getattr(cg, dtype)).realize()
    (kernel,) = cuda_kernels((x == x).cast(cg.bool) if dtype == "bool" else x + x)
    storage = getattr(cg, dtype).cuda_name
    assert f"cg_pack<{storage}, {width}, {align}>" in kernel.source


def test_softmax_row_is_read_once_into_registers():
    x = cg.tensor(np.ones((8, 8192), dtype=np.float32))
    (kernel,) = cuda_kernels(x.softmax(-1))
    assert kernel.source.count("cg_load_pack<") == 1    # one read of the row, reused by 3 passes
    assert "pack0_row[e]" in kernel.source
    assert kernel.source.count("cg_store_pack<") == 1


def test_layer_norm_keeps_x_and_reads_gamma_beta_as_packs():
    x = cg.tensor(np.ones((8, 8192), dtype=np.float32))
    g, b = cg.tensor(np.ones(8192, dtype=np.float32)), cg.tensor(np.ones(8192, dtype=np.float32))
    (kernel,) = cuda_kernels(layer_norm(x, g, b))
    assert kernel.source.count("cg_load_pack<") == 3
    assert "+ (slot * 4)" in kernel.source          # gamma and beta: the same for every row


def test_long_rows_fall_back_to_reading_again():
    x = cg.tensor(np.ones((2, 20000), dtype=np.float64))
    (kernel,) = cuda_kernels(x.softmax(-1))
    assert "_row[" not in kernel.source
    assert kernel.source.count("cg_load_pack<") == 3    # each pass reads the row


def test_cpu_kernels_are_not_lowered_in_lanes():
    x = cg.tensor(np.ones(4099, dtype=np.float32))
    for _, kernel, _ in plan_kernels([(x * 2).softmax(-1).node], "cpu"):
        assert "cg_pack" not in kernel.source


# ---- buffers off the 16-byte grid, known only at launch --------------------------------------
def test_imported_buffers_off_the_grid_take_the_lane_by_lane_path(rng):
    """A torch slice starting 1 element in: the kernel's address test sends every pack of it
    lane by lane, for elementwise and row kernels alike."""
    ok, reason = cg.cuda_available()
    if not ok:
        pytest.skip(f"cuda: {reason}")
    torch = pytest.importorskip("torch")
    x_np = rng.standard_normal(4 * 1030 + 1).astype(np.float32)
    y_np = rng.standard_normal(4 * 1030).astype(np.float32)
    x_torch = torch.from_numpy(x_np).cuda()[1:]            # 4 bytes past a 16-byte boundary
    x, y = cg.from_dlpack(x_torch), cg.tensor(y_np, device="cuda", requires_grad=False)
    close((x * y + 1).numpy(), (x_np[1:] * y_np + 1).astype(np.float64))
    rows = x.reshape(4, 1030)
    close(rows.softmax(-1).numpy(), softmax_numpy(x_np[1:].reshape(4, 1030).astype(np.float64)),
          atol=1e-7)
