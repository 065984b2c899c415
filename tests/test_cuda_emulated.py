"""The lane kernels' CUDA C run on the CPU (tests/cuda_emulator.py: g++ and std::thread
standing in for the GPU), against numpy, with buffers on and off the 16-byte grid. CI has
no GPU: this is where it sees the generated CUDA compute, not only compile."""
from __future__ import annotations

import numpy as np
import pytest
from cuda_emulator import Emulator, available, emulate
from test_lanes import chain_numpy, layer_norm_numpy, softmax_numpy

import cudagrad as cg
from cudagrad.bench.fusion import elementwise_chain, layer_norm

pytestmark = pytest.mark.skipif(not available(), reason="no g++ to build the emulated kernels")

ALIGNED, FIRST_INPUT_OFF, OUTPUT_OFF = frozenset(), frozenset({1}), frozenset({0})


@pytest.fixture(scope="module")
def emulator():
    return Emulator()


def leaf(array, dtype=None):
    return cg.tensor(array, dtype=dtype, device="cpu", requires_grad=False)


def close(got, want, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("n", [1, 5, 4099])
def test_chain(emulator, rng, n):
    arrays = [rng.standard_normal(n).astype(np.float32) for _ in range(3)]
    out = elementwise_chain(*[leaf(a) for a in arrays])
    want = chain_numpy(*[a.astype(np.float64) for a in arrays])
    for misalign in (ALIGNED, FIRST_INPUT_OFF, OUTPUT_OFF | frozenset({3})):
        close(emulate(emulator, out, misalign), want)


def test_offset_views(emulator, rng):
    n = 1029
    base = rng.standard_normal(n + 9).astype(np.float32)
    x = leaf(base)
    out = x[1:n + 1] * x[4:n + 4] + x[3:n + 3] - x[8:n + 8]
    want = (base[1:n + 1] * base[4:n + 4] + base[3:n + 3] - base[8:n + 8]).astype(np.float64)
    for misalign in (ALIGNED, FIRST_INPUT_OFF):
        close(emulate(emulator, out, misalign), want)


def test_broadcast_and_permuted_beside_contiguous(emulator, rng):
    x = rng.standard_normal((37, 41)).astype(np.float32)
    y = rng.standard_normal((41, 37)).astype(np.float32)
    row = rng.standard_normal(41).astype(np.float32)
    out = leaf(x) * leaf(row) + leaf(y).T
    close(emulate(emulator, out), (x * row + y.T).astype(np.float64))


@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16", "int32"])
def test_dtypes(emulator, rng, dtype):
    n = 1029
    x = rng.standard_normal(n).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    if dtype == "int32":
        xi, yi = (x * 100).astype(np.int32), (y * 100).astype(np.int32)
        out = leaf(xi) * 3 + leaf(yi)
        for misalign in (ALIGNED, FIRST_INPUT_OFF):
            np.testing.assert_array_equal(emulate(emulator, out, misalign), xi * 3 + yi)
        return
    cast = getattr(cg, dtype)
    a, b = leaf(x).cast(cast).realize(), leaf(y).cast(cast).realize()
    out = (a * b + a).cast(cg.float32)
    tolerance = {"float64": 1e-6, "float16": 4e-3, "bfloat16": 3e-2}[dtype]
    for misalign in (ALIGNED, FIRST_INPUT_OFF):
        close(emulate(emulator, out, misalign), x.astype(np.float64) * y + x,
              rtol=tolerance, atol=tolerance * 4)


def test_bool_output(emulator, rng):
    x = rng.standard_normal(1029).astype(np.float32)
    y = rng.standard_normal(1029).astype(np.float32)
    out = (leaf(x) > leaf(y)).cast(cg.bool)
    np.testing.assert_array_equal(emulate(emulator, out, OUTPUT_OFF), x > y)


@pytest.mark.parametrize("cols", [130, 1003, 8192])
def test_softmax_rows(emulator, rng, cols):
    x = rng.standard_normal((3, cols)).astype(np.float32)
    out = leaf(x).softmax(-1)
    for misalign in (ALIGNED, FIRST_INPUT_OFF, OUTPUT_OFF):
        close(emulate(emulator, out, misalign), softmax_numpy(x.astype(np.float64)), atol=1e-7)


def test_float16_rows(emulator, rng):
    x = rng.standard_normal((2, 1000)).astype(np.float32)
    out = leaf(x).cast(cg.float16).realize().softmax(-1).cast(cg.float32)
    want = softmax_numpy(x.astype(np.float16).astype(np.float64))
    close(emulate(emulator, out, FIRST_INPUT_OFF), want, rtol=2e-3, atol=2e-5)


def test_long_rows_fallback(emulator, rng):
    x = rng.standard_normal((2, 20000))
    out = leaf(x).softmax(-1)
    for misalign in (ALIGNED, FIRST_INPUT_OFF):
        close(emulate(emulator, out, misalign), softmax_numpy(x), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("cols", [1000, 8192])
def test_layer_norm_rows(emulator, rng, cols):
    x = rng.standard_normal((2, cols)).astype(np.float32)
    gamma = rng.standard_normal(cols).astype(np.float32)
    beta = rng.standard_normal(cols).astype(np.float32)
    out = layer_norm(leaf(x), leaf(gamma), leaf(beta))
    want = layer_norm_numpy(x.astype(np.float64), gamma, beta)
    for misalign in (ALIGNED, frozenset({2})):
        close(emulate(emulator, out, misalign), want, rtol=1e-4, atol=1e-4)


def test_log_softmax_two_phases(emulator, rng):
    x = rng.standard_normal((3, 4096)).astype(np.float32)
    out = leaf(x).log_softmax(-1)
    shifted = x.astype(np.float64) - x.max(axis=-1, keepdims=True)
    close(emulate(emulator, out), shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True)),
          atol=1e-5)


def test_softmax_of_a_row_slice_off_the_grid(emulator, rng):
    x = rng.standard_normal((7, 1030)).astype(np.float32)
    out = leaf(x)[1:6].softmax(-1)
    close(emulate(emulator, out), softmax_numpy(x[1:6].astype(np.float64)), atol=1e-7)


# ---- split-K matmuls: the parts, the last part's sum and the epilogue ----------------------
@pytest.fixture
def before_sm80(monkeypatch):
    """Render the FMA matmul as for sm_75: without cp.async (inline PTX, which g++ cannot
    build); the split-K code, the subject here, is the same on every architecture."""
    import cudagrad.codegen.render as render
    monkeypatch.setattr(render, "_cuda_arch", lambda: 75)


@pytest.mark.parametrize("m,k,n,batch,dtype", [(5, 300, 7, 1, "float32"), (33, 1000, 3, 1, "float32"),
                                               (4, 257, 6, 2, "float64")])
def test_split_k_matmul(emulator, rng, before_sm80, m, k, n, batch, dtype):
    """Parts of K in separate blocks (K not a multiple of a stage in the last two), each
    leaving its sums in the workspace, the last adding them in order, then the fused bias
    and ReLU; a batched float64 case; a transposed a."""
    from cudagrad.realization import plan_kernels
    a = rng.standard_normal((batch, k, m))
    b = rng.standard_normal((batch, k, n))
    bias = rng.standard_normal(n)
    a_t, b_t, bias_t = leaf(a, dtype), leaf(b, dtype), leaf(bias, dtype)
    out = (a_t.transpose(-2, -1) @ b_t + bias_t).relu()
    if batch == 1:
        out = (a_t[0].T @ b_t[0] + bias_t).relu()
    kernels = [kernel for spec, kernel, _ in plan_kernels([out.node], "cuda") if spec.kind == "matmul"]
    assert len(kernels) == 1 and kernels[0].workspace > 0 and kernels[0].launch[0][2] > batch
    want = np.maximum(a.swapaxes(-2, -1) @ b + bias, 0)
    close(emulate(emulator, out), want.reshape(out.shape), rtol=1e-5 if dtype == "float32" else 1e-12,
          atol=1e-5 if dtype == "float32" else 1e-12)


MATMUL_VIEWS = {
    "x @ w": (lambda x: x, lambda w: w, False, False),
    "x @ w.T": (lambda x: x, lambda w: w.T, False, True),
    "x.T @ w": (lambda x: x.T, lambda w: w, True, False),
    "sliced: generic": (lambda x: x[:, 1:], lambda w: w[1:, :], False, False),
}


@pytest.mark.parametrize("view", sorted(MATMUL_VIEWS))
@pytest.mark.parametrize("m,k,n,dtype", [(40, 24, 36, "float32"), (33, 20, 70, "float64"),
                                         (900, 9, 1000, "float32")])
def test_fma_matmul(emulator, rng, before_sm80, view, m, k, n, dtype):
    """The fused multiply-add matmul without split-K: 32x32 tiles (the first two sizes) and
    64x64 tiles (the last), edges off the tiles, every operand layout and the generic
    per-element path, with a fused bias."""
    make_a, make_b, a_transposed, b_transposed = MATMUL_VIEWS[view]
    sliced = int(view == "sliced: generic")        # one more column of x, row of w, cut off
    x = rng.standard_normal((k, m) if a_transposed else (m, k + sliced))
    w = rng.standard_normal((n, k) if b_transposed else (k + sliced, n))
    bias = rng.standard_normal(n)
    out = make_a(leaf(x, dtype)) @ make_b(leaf(w, dtype)) + leaf(bias, dtype)
    want = make_a(x) @ make_b(w) + bias
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    close(emulate(emulator, out), want, rtol=tolerance, atol=tolerance)
