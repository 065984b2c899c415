"""Run a rendered CUDA kernel on the CPU: the CUDA C compiled as C++ (g++ -std=c++20) with
a few definitions standing in for the CUDA built-ins, one block at a time.

Blocks without barriers run their threads one after another; blocks with __syncthreads
run one std::thread per CUDA thread, with std::barrier for __syncthreads and for each
warp's __shfl_down_sync. Memory is the host's, so misaligned buffers, tails and the
register caching of row kernels are checked without a GPU (the suite's CI has none).
Speed says nothing here: it is a correctness tool for small sizes.
"""
from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

SHIM = r"""
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <barrier>
#include <memory>
#include <thread>
#include <vector>
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
struct cg_dim3 { unsigned x, y, z; };
/* the vector types and intrinsics the matmul template uses (its sm_80 copies, cp.async,
   are inline PTX: emulate a matmul rendered for an older architecture, without them) */
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
template <class T> inline T __ldcg(const T* p) { T v; __atomic_load(p, &v, __ATOMIC_ACQUIRE); return v; }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static thread_local cg_dim3 threadIdx, blockIdx;
static cg_dim3 blockDim, gridDim;
template <class T> inline T __ldg(const T* p) { return *p; }
static std::barrier<>* cg_block_barrier;
static std::barrier<>* cg_warp_barrier[32];
static uint64_t cg_warp_slot[32][32];
inline void __syncthreads() { cg_block_barrier->arrive_and_wait(); }
template <class T> inline T __shfl_down_sync(unsigned, T value, int offset) {
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  uint64_t bits = 0;
  memcpy(&bits, &value, sizeof(T));
  cg_warp_slot[warp][lane] = bits;
  cg_warp_barrier[warp]->arrive_and_wait();
  T result = value;
  if (lane + offset < 32) memcpy(&result, &cg_warp_slot[warp][lane + offset], sizeof(T));
  cg_warp_barrier[warp]->arrive_and_wait();
  return result;
}
"""

HALF_HEADERS = {
    "cuda_fp16.h": "typedef _Float16 __half;\n"
                   "inline float __half2float(__half x) { return (float)x; }\n"
                   "inline __half __float2half(float x) { return (__half)x; }\n",
    "cuda_bf16.h": "struct __nv_bfloat16 { unsigned short bits; };\n"
                   "inline float __bfloat162float(__nv_bfloat16 x) {\n"
                   "  unsigned int u = (unsigned int)x.bits << 16; float f; memcpy(&f, &u, 4); return f; }\n"
                   "inline __nv_bfloat16 __float2bfloat16(float f) {\n"
                   "  unsigned int u; memcpy(&u, &f, 4); u += 0x7fffu + ((u >> 16) & 1u);\n"
                   "  __nv_bfloat16 x; x.bits = (unsigned short)(u >> 16); return x; }\n",
}

LAUNCHER = r"""
extern "C" void cg_emulate(void** args) {
  const unsigned block = %(block)d;
  gridDim = {%(grid_x)d, %(grid_y)d, %(grid_z)d};
  blockDim = {block, 1, 1};
  /* blocks one after another, x fastest: the last block of a split-K tile is its last part */
  for (unsigned linear = 0; linear < gridDim.x * gridDim.y * gridDim.z; linear++) {
    const cg_dim3 b = {linear %% gridDim.x, linear / gridDim.x %% gridDim.y, linear / (gridDim.x * gridDim.y)};
    if (!%(threaded)d) {
      for (unsigned t = 0; t < block; t++) {
        blockIdx = b;
        threadIdx = {t, 0, 0};
        %(call)s;
      }
      continue;
    }
    std::barrier<> block_barrier(block);
    cg_block_barrier = &block_barrier;
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    for (unsigned w = 0; w < block / 32; w++) {
      warps.emplace_back(new std::barrier<>(32));
      cg_warp_barrier[w] = warps.back().get();
    }
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < block; t++) {
      threads.emplace_back([b, t, args]() {
        blockIdx = b;
        threadIdx = {t, 0, 0};
        %(call)s;
      });
    }
    for (auto& thread : threads) thread.join();
  }
}
"""


def available() -> bool:
    return shutil.which("g++") is not None


def _storage(param) -> str:
    return param.dtype.cuda_name


def build(kernel, workdir: Path) -> ctypes.CDLL:
    """Compile kernel (a cudagrad Kernel for "cuda") with its launcher into a shared library."""
    (grid_x, grid_y, grid_z), (block, _, _), _ = kernel.launch
    arguments = [f"({'' if p.is_output else 'const '}{_storage(p)}*)args[{i}]"
                 for i, p in enumerate(kernel.params)]
    if getattr(kernel, "workspace", 0):
        arguments.append(f"(unsigned int*)args[{len(kernel.params)}]")
    launcher = LAUNCHER % {"grid_x": grid_x, "grid_y": grid_y, "grid_z": grid_z, "block": block,
                           "call": f"{kernel.name}({', '.join(arguments)})",
                           "threaded": int("__syncthreads" in kernel.source)}
    text = SHIM + kernel.source + launcher
    digest = hashlib.sha1(text.encode()).hexdigest()[:16]
    library = workdir / f"k{digest}.so"
    if not library.exists():
        include = workdir / "include"
        include.mkdir(exist_ok=True)
        for name, body in HALF_HEADERS.items():
            (include / name).write_text(body)
        source = workdir / f"k{digest}.cpp"
        source.write_text(text)
        result = subprocess.run(["g++", "-std=c++20", "-O1", "-fPIC", "-shared", "-pthread",
                                 "-w", f"-I{include}", str(source), "-o", str(library)],
                                capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"g++ failed on {kernel.name}:\n{result.stderr[:4000]}")
    return ctypes.CDLL(str(library))


class Emulator:
    """Runs kernels on numpy arrays. `misalign` shifts chosen buffers by one element
    inside a larger allocation, so the kernel sees addresses off the 16-byte grid."""

    def __init__(self):
        self.workdir = Path(tempfile.mkdtemp(prefix="cg-emulator-"))

    def run(self, kernel, arrays: list[np.ndarray], outputs: list[np.ndarray],
            misalign: frozenset[int] = frozenset()) -> list[np.ndarray]:
        library = build(kernel, self.workdir)
        buffers, keep = [], []
        for index, array in enumerate(list(outputs) + list(arrays)):
            array = np.ascontiguousarray(array)
            shift = 1 if index in misalign else 0
            # a 64-byte aligned allocation, then the array at `shift` elements into it
            raw = np.zeros(array.nbytes + 128 + shift * array.itemsize, dtype=np.uint8)
            start = (-raw.ctypes.data) % 64 + shift * array.itemsize
            view = raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
            view[...] = array
            buffers.append(view)
            keep.append(raw)
        addresses = [b.ctypes.data for b in buffers]
        if getattr(kernel, "workspace", 0):          # the program's memory, zeroed once
            workspace = np.zeros(kernel.workspace // 8 + 1, dtype=np.float64)
            keep.append(workspace)
            addresses.append(workspace.ctypes.data)
        pointers = (ctypes.c_void_p * len(addresses))(*addresses)
        library.cg_emulate(pointers)
        return [buffer.copy() for buffer in buffers[:len(outputs)]]


def _host_array(node) -> np.ndarray:
    """A cpu input's raw storage (a leaf's, or a realized node's buffer)."""
    buffer = node.realized if node.realized is not None else node.arg.buffer
    return buffer.array.view(np.uint8)[:node.numel * node.dtype.itemsize].view(node.dtype.numpy)


def emulate(emulator: Emulator, result, misalign: frozenset[int] = frozenset()) -> np.ndarray:
    """The value of cudagrad tensor `result` (built on the cpu device, its inputs realized),
    computed by its CUDA kernels on the emulator; misalign names kernel parameter positions
    (outputs first) to shift off the 16-byte grid."""
    from cudagrad.realization import plan_kernels
    values: dict[int, np.ndarray] = {}
    for spec, kernel, inputs in plan_kernels([result.node], "cuda"):
        arrays = [values[id(node)] if id(node) in values else _host_array(node)
                  for node in inputs]
        outputs = [np.full(root.numel, 7, dtype=root.dtype.numpy) for root in spec.roots]
        computed = emulator.run(kernel, arrays, outputs, misalign)
        for root, array in zip(spec.roots, computed):
            values[id(root)] = array
    return values[id(result.node)].reshape(result.shape)
