"""Reliability, part 5: tensors of more than 2^31 elements.

Index arithmetic must switch to 64 bits (codegen/lower.py MAX_INT32_INDEX)
once any tensor a kernel touches has more than 2^31 - 1 elements, else
offsets past 2^31 wrap around and read the wrong element.

- Everywhere (no memory needed): a graph over a small tensor *expanded* to
  2^31 + 1024 elements renders kernels with `long long` indices, a small graph
  keeps `int`; on the CPU such expanded graphs also run (a view allocates
  nothing), and sums, maxima and slices past element 2^31 are right.
- On the GPU: real buffers of 2^31 + 4096 float16 (4 GiB) and bool (2 GiB)
  elements; elementwise ops, slices, sums and maxima touching elements past
  2^31 are right.
"""
from __future__ import annotations

import numpy as np
import pytest

import cudagrad as cg
from cudagrad.codegen.lower import MAX_INT32_INDEX

PAST = 2**31                    # the first element an int32 index cannot reach
N = 2**31 + 4096                # divisible by 1024


def _cuda_ok() -> bool:
    try:
        return bool(cg.cuda_available()[0])
    except Exception:
        return False


def periodic(n: int, device: str, dtype=cg.float32):
    """A view of n elements: element i is i % 1024 (from a 1024-element tensor)."""
    base = cg.arange(1024, dtype=dtype, device=device)
    return base.reshape(1, 1024).expand(n // 1024, 1024).reshape(n)


def expected_sum_of_periods(count: int, offset: int = 0) -> float:
    """sum of (i % 1024) for i in [offset, offset + count); offset a multiple of 1024."""
    whole, rest = divmod(count, 1024)
    return whole * 523776.0 + rest * (rest - 1) / 2.0


def test_max_int32_index_is_the_int32_limit():
    assert MAX_INT32_INDEX == 2**31 - 1


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_kernels_past_2_31_elements_use_64_bit_indices(device):
    """Rendering only: the kernels are never run, so this needs no memory and no GPU."""
    big = periodic(2**31 + 1024, "cpu")
    if device == "cuda":
        # render the CUDA kernels of the same graph without a GPU
        from cudagrad.realization import plan_kernels
        render = lambda t: [kernel for _, kernel, _ in plan_kernels([t.node], "cuda")]  # noqa: E731
    else:
        render = lambda t: t.kernels()  # noqa: E731
    graphs = {
        "elementwise": (big * 2.0 + 1.0),
        "sum": big.sum(),
        "max": big.max(),
        "slice-past-2^31": big[PAST:].exp(),
        "sum-of-slice": big[PAST:].sum(),
    }
    for name, graph in graphs.items():
        kernels = render(graph)
        assert kernels, name
        assert any("long long" in kernel.source for kernel in kernels), \
            f"{name}: no 64-bit index in\n{kernels[0].source}"
    small = periodic(4096, "cpu") * 2.0
    assert all("long long" not in kernel.source for kernel in render(small)), "small kernels keep int"


def test_views_past_2_31_elements_compute_right_on_the_cpu():
    """An expanded view allocates nothing, so the CPU can run reductions over 2^31+ elements."""
    big = periodic(N, "cpu")
    # elements past 2^31 only: a slice whose offsets do not fit int32
    tail = big[PAST:]
    assert tail.shape == (N - PAST,)
    assert tail.sum().item() == expected_sum_of_periods(N - PAST)
    np.testing.assert_array_equal(big[N - 5:].numpy(), [1019, 1020, 1021, 1022, 1023])
    np.testing.assert_array_equal(big[PAST - 2:PAST + 3].numpy(), [1022, 1023, 0, 1, 2])
    # a reduction over all of them (the reduce loop itself runs past 2^31)
    assert big.max().item() == 1023.0
    total = big.sum().item()
    assert total == pytest.approx(expected_sum_of_periods(N), rel=1e-6)


@pytest.fixture(scope="module")
def big_gpu():
    if not _cuda_ok():
        pytest.skip("cuda: no usable GPU (the 2^31-element buffers need one)")
    from cudagrad.device import get_device
    device = get_device("cuda")
    free, _ = device.memory_info()
    if free < 16 * 2**30:
        pytest.skip(f"cuda: needs 16 GiB free, {free / 2**30:.1f} GiB free")
    values = (periodic(N, "cuda", cg.float16) + 1.0).realize()      # 1..1024, 4 GiB of float16
    assert values.dtype == cg.float16 and values.shape == (N,)
    yield values
    del values


def test_gpu_float16_buffer_past_2_31_indexes_right(big_gpu):
    y = big_gpu
    np.testing.assert_array_equal(y[N - 4:].numpy().astype(np.float64), [1021, 1022, 1023, 1024])
    np.testing.assert_array_equal(y[PAST - 2:PAST + 3].numpy().astype(np.float64), [1023, 1024, 1, 2, 3])
    np.testing.assert_array_equal(y[PAST + 1000:PAST + 1000 + 3 * 1024:1024].numpy().astype(np.float64),
                                  [1001, 1001, 1001])


def test_gpu_elementwise_op_on_a_buffer_past_2_31(big_gpu):
    doubled = (big_gpu * 2.0).realize()               # reads and writes every element
    np.testing.assert_array_equal(doubled[N - 3:].numpy().astype(np.float64), [2044, 2046, 2048])
    np.testing.assert_array_equal(doubled[PAST:PAST + 3].numpy().astype(np.float64), [2, 4, 6])
    # the last elements of a reversed view come from the front, the first from past 2^31
    reverse = doubled[::-1]
    np.testing.assert_array_equal(reverse[:2].numpy().astype(np.float64), [2048, 2046])
    del doubled, reverse


def test_gpu_reductions_past_2_31(big_gpu):
    y = big_gpu
    tail_sum = y[PAST:].float().sum().item()                 # 4 periods of 1..1024
    assert tail_sum == 4 * 524800.0
    assert y.max().item() == 1024.0
    assert y[PAST:].min().item() == 1.0
    total = y.float().sum().item()
    assert total == pytest.approx((N // 1024) * 524800.0, rel=1e-4)
    assert y.float().mean().item() == pytest.approx(512.5, rel=1e-4)


def test_gpu_bool_buffer_past_2_31(big_gpu):
    mask = (big_gpu > 512.0).cast(cg.bool).realize()         # 2 GiB of bool
    assert mask.dtype == cg.bool and mask.shape == (N,)
    assert mask[PAST + 511:PAST + 513].numpy().tolist() == [False, True]
    assert mask[N - 1:].numpy().tolist() == [True]
    assert mask[PAST:].sum().item() == 4 * 512
    del mask


def test_small_slice_of_a_huge_input_uses_64_bit_offsets():
    """Regression (found on an H200): a 4-element slice at the end of a realized
    2^31-element buffer was lowered with int offsets, which overflowed."""
    huge = periodic(N, "cpu", cg.float16) + 1.0
    huge.node.realized = object()      # stands for a realized 4 GiB buffer; nothing runs
    try:
        tail = huge[N - 4:] * 2
        for device in ("cpu", "cuda"):
            from cudagrad.realization import plan_kernels
            (kernel,) = [k for _, k, _ in plan_kernels([tail.node], device)]
            assert "long long" in kernel.source, kernel.source
    finally:
        huge.node.realized = None
