"""End-to-end check of the CUDA runtime on a real GPU: python scripts/cuda_smoke.py

Compiles hand-written kernels with NVRTC, runs them through CudaDevice, and checks
the allocator, out-of-memory handling, the disk cache, compile errors and the
Python cost of one launch. Prints one line per check; exits 1 if any failed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cudagrad.runtime import stats  # noqa: E402
from cudagrad.runtime.cuda import CudaDevice, cuda_available  # noqa: E402
from cudagrad.runtime.errors import CompileError, DeviceError  # noqa: E402
from cudagrad.runtime.nvrtc import compile_cuda, nvrtc_library, nvrtc_version  # noqa: E402


@dataclass(frozen=True)
class Kernel:  # the fields of codegen's Kernel that the runtime reads
    name: str
    source: str
    params: tuple
    launch: tuple
    device: str = "cuda"


N = (1 << 22) + 3  # not a multiple of the block size, to test the bounds check
ELEMENTWISE = Kernel("axpy_sin", r"""
#include <cuda_fp16.h>
// out = 2.5 * a + sin(b); out_half = __half(out)
extern "C" __global__ void axpy_sin(const float* a, const float* b, float* out, __half* out_half) {
    int index = blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= %d) return;
    float value = 2.5f * a[index] + sinf(b[index]);
    out[index] = value;
    out_half[index] = __float2half(value);
}
""" % N, ("a", "b", "out", "out_half"), (((N + 255) // 256, 1, 1), (256, 1, 1), 0))

REDUCE_BLOCKS = 264
REDUCE_SOURCE = r"""
// Each block sums a grid-stride slice: per-thread partial, then warp shuffles,
// then one warp over the per-warp sums held in dynamic shared memory.
__device__ float warp_sum(float value) {
    for (int offset = 16; offset > 0; offset /= 2)
        value += __shfl_down_sync(0xffffffffu, value, offset);
    return value;
}
extern "C" __global__ void NAME(const float* input, float* block_sums) {
    extern __shared__ float warp_sums[];
    float partial = 0.0f;
    for (int index = blockIdx.x * blockDim.x + threadIdx.x; index < COUNT;
         index += gridDim.x * blockDim.x)
        partial += input[index];
    partial = warp_sum(partial);
    int lane = threadIdx.x % 32;
    int warp = threadIdx.x / 32;
    if (lane == 0) warp_sums[warp] = partial;
    __syncthreads();
    if (warp == 0) {
        float value = lane < blockDim.x / 32 ? warp_sums[lane] : 0.0f;
        value = warp_sum(value);
        if (lane == 0) block_sums[blockIdx.x] = value;
    }
}
"""


def reduce_kernel(name: str, count: int, blocks: int, shared_bytes: int = 32 * 4) -> Kernel:
    source = REDUCE_SOURCE.replace("NAME", name).replace("COUNT", str(count))
    return Kernel(name, source, ("input", "block_sums"),
                  ((blocks, 1, 1), (1024, 1, 1), shared_bytes))


TINY = Kernel("tiny", 'extern "C" __global__ void tiny(float* x) { x[threadIdx.x] += 1.0f; }',
              ("x",), ((1, 1, 1), (32, 1, 1), 0))

results: list[tuple[str, bool, str]] = []


def check(name: str, passed: bool, detail: str = "") -> None:
    results.append((name, bool(passed), detail))
    print(f"{'PASS' if passed else 'FAIL'}  {name}  {detail}", flush=True)


def check_elementwise(device: CudaDevice, rng) -> None:
    a = rng.standard_normal(N).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    out, out_half = device.allocate(4 * N), device.allocate(2 * N)
    program = device.compile(ELEMENTWISE)
    device.launch(program, [device.from_numpy(a), device.from_numpy(b), out, out_half])
    got = device.to_numpy(out, np.float32, N)
    got_half = device.to_numpy(out_half, np.float16, N)
    expected = 2.5 * a.astype(np.float64) + np.sin(b.astype(np.float64))
    error = np.max(np.abs(got - expected))
    check("elementwise float32 vs float64", error < 1e-5, f"max abs error {error:.2e}")
    half_error = np.max(np.abs(got_half.astype(np.float64) - expected) / (1 + np.abs(expected)))
    check("elementwise __half output", half_error < 1e-3, f"max rel error {half_error:.2e}")


def check_reduction(device: CudaDevice, rng) -> None:
    count = 10_000_019
    values = rng.standard_normal(count).astype(np.float32) + 0.5
    first = device.compile(reduce_kernel("sum_blocks", count, REDUCE_BLOCKS))
    # 64 KiB of dynamic shared memory: more than 48 KiB needs the opt-in attribute.
    second = device.compile(reduce_kernel("sum_final", REDUCE_BLOCKS, 1, 64 * 1024))
    partials, total = device.allocate(4 * REDUCE_BLOCKS), device.allocate(4)
    device.launch(first, [device.from_numpy(values), partials])
    device.launch(second, [partials, total])
    got = float(device.to_numpy(total, np.float32, 1)[0])
    expected = float(np.sum(values, dtype=np.float64))
    relative = abs(got - expected) / np.sum(np.abs(values), dtype=np.float64)
    check("block reduction (warp shuffles) of 1e7 floats", relative < 1e-6,
          f"got {got:.6g}, float64 {expected:.6g}, error/sum|x| {relative:.1e}")


def check_allocator(device: CudaDevice, rng) -> None:
    """Random sizes up to 8 MiB, eight alive at a time: after a warm-up fills the
    free lists, the device's memory use must not move any more."""
    sizes = rng.integers(1, 8 << 20, size=10_000)
    live = []
    start = time.perf_counter()
    for iteration, size in enumerate(sizes):
        live.append(device.allocate(int(size)))
        if len(live) > 8:
            live.pop(0)  # dropped: its block goes back to the free list
        if iteration == 2_000:
            free_after_warmup, _ = device.memory_info()
    elapsed_us = (time.perf_counter() - start) / len(sizes) * 1e6
    live.clear()
    free_after, _ = device.memory_info()
    grown = max(0, free_after_warmup - free_after)
    check("allocator: 10,000 alloc/free stays flat", grown <= 64 << 20 and device.bytes_in_use
          < 1 << 20, f"grew {grown >> 20} MiB after warm-up; cached "
          f"{device.bytes_cached >> 20} MiB; {elapsed_us:.2f} us per allocate+free")


def check_out_of_memory(device: CudaDevice) -> None:
    try:
        device.allocate(10 << 40)
        check("out of memory raises DeviceError", False, "10 TiB allocation succeeded?")
    except DeviceError as error:
        check("out of memory raises DeviceError", "out of memory" in str(error), str(error))
    array = np.arange(1 << 18, dtype=np.float32)
    roundtrip = device.to_numpy(device.from_numpy(array), np.float32, array.size)
    check("after out of memory: allocate and copy still work", np.array_equal(array, roundtrip))


def check_disk_cache(device: CudaDevice) -> None:
    before = dict(stats.STATS)
    device.compile(ELEMENTWISE)
    check("memory cache hit", stats.STATS["cache_hits_memory"] == before["cache_hits_memory"] + 1)
    child = subprocess.run([sys.executable, __file__, "--disk-cache-child"], capture_output=True,
                           text=True, env=os.environ)
    try:
        child_stats = json.loads(child.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        child_stats = {"error": child.stdout + child.stderr}
    check("disk cache hit in a new process", child_stats.get("cache_hits_disk") == 1
          and child_stats.get("kernels_compiled") == 0, json.dumps(child_stats))


def check_compile_error(device: CudaDevice) -> None:
    broken = Kernel("broken", 'extern "C" __global__ void broken(float* x) { x[0] = 1.0f }',
                    ("x",), ((1, 1, 1), (1, 1, 1), 0))
    try:
        device.compile(broken)
        check("syntax error raises CompileError", False, "it compiled?")
    except CompileError as error:
        check("syntax error raises CompileError with the log",
              "broken.cu(1)" in error.log and error.log in str(error), error.log.splitlines()[0])


def _median_launch_us(device: CudaDevice, launch_once) -> float:
    timings = []
    for repeat in range(10_100):
        start = time.perf_counter_ns()
        launch_once()
        timings.append(time.perf_counter_ns() - start)
        if repeat % 512 == 0:
            device.synchronize()  # keep the launch queue from filling and blocking
    device.synchronize()
    return float(np.median(timings[100:])) / 1e3  # the first 100 are warm-up


def measure_launch_overhead(device: CudaDevice) -> None:
    from cuda.bindings import driver
    program = device.compile(TINY)
    buffer = device.from_numpy(np.zeros(32, dtype=np.float32))
    arguments = [buffer]
    ours_us = _median_launch_us(device, lambda: device.launch(program, arguments))
    # For comparison: the driver call alone, through cuda-python.
    wrapper_us = _median_launch_us(device, lambda: driver.cuLaunchKernel(
        program.function, 1, 1, 1, 32, 1, 1, 0, device._stream, program.arg_address, 0))
    total = device.to_numpy(buffer, np.float32, 32)
    check("launch overhead (and every launch ran)", np.all(total == 2 * 10_100),
          f"median {ours_us:.2f} us per CudaDevice.launch; bare cuda-python cuLaunchKernel "
          f"{wrapper_us:.2f} us")
    print(f"LAUNCH_OVERHEAD_US {ours_us:.3f}", flush=True)


def check_other_thread(device: CudaDevice) -> None:
    """A thread that never touched the device launches and copies (context per thread)."""
    buffer = device.from_numpy(np.zeros(32, dtype=np.float32))
    outcome = {}

    def work():
        try:
            device.launch(device.compile(TINY), [buffer])
            outcome["values"] = device.to_numpy(buffer, np.float32, 32)
        except Exception as error:
            outcome["error"] = repr(error)
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    check("launch from another thread", "values" in outcome and np.all(outcome["values"] == 1),
          outcome.get("error", ""))


def disk_cache_child() -> None:
    stats.reset()
    CudaDevice().compile(ELEMENTWISE)
    print(json.dumps({name: stats.STATS[name] for name in ("kernels_compiled", "cache_hits_disk")}))


def main() -> int:
    usable, why = cuda_available()
    print(f"cuda_available: {usable} ({why})")
    if not usable:
        return 1
    os.environ.setdefault("CUDAGRAD_CACHE_DIR", tempfile.mkdtemp(prefix="cudagrad-smoke-"))
    device = CudaDevice()
    print(f"device: {device!r} target={device.target}")
    print(f"nvrtc {nvrtc_version()} from {nvrtc_library()}")
    cubin = compile_cuda(TINY.source, "tiny", device.arch)
    check("compile_cuda gives a CUBIN", cubin[:4] == b"\x7fELF", f"{len(cubin)} bytes")
    rng = np.random.default_rng(0)
    for step in (check_elementwise, check_reduction, check_allocator):
        step(device, rng)
    check_out_of_memory(device)
    check_disk_cache(device)
    check_compile_error(device)
    check_other_thread(device)
    measure_launch_overhead(device)
    device.debug = True
    device.launch(device.compile(TINY), [device.allocate(128)])  # prints one debug line
    print(f"stats: {stats.STATS}")
    failed = [name for name, passed, _ in results if not passed]
    print(f"{len(results) - len(failed)}/{len(results)} checks passed" +
          (f"; FAILED: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    if "--disk-cache-child" in sys.argv:
        disk_cache_child()
    else:
        sys.exit(main())
