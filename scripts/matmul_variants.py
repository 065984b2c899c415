"""Time matmul kernel variants (tilings, operand layouts, paths) against cuBLAS, in one run.

    python scripts/matmul_variants.py [--sizes 4096,8192]

For the lease-bound GPU sessions of issue 7: each variant patches the tiling tables
of cudagrad.codegen.render, drops cached plans, checks the result against PyTorch
(float64 of the same inputs) and times plan replays with CUDA events (the runner's
method: warm-up, medians). Prints one table; the last lines are the summary.
"""
from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager

import numpy as np

import cudagrad as cg
from cudagrad.bench.gpu import Bench
from cudagrad.bench.timing import replay_plan
from cudagrad.codegen import render
from cudagrad.realization import _PLANS

SIMT_VARIANTS = {
    "simt, k-contiguous a direct": {},
    "simt, k-contiguous a and b transposed": {"direct_k": False},
    "simt, one block an SM (more registers)": {"min_blocks": 1},
}
MMA_VARIANTS = {
    "mma 128x128, 8 warps of 64x32": {},
}
# Hopper: the warpgroup kernel's variants (the mma.sync kernel above runs with it off)
WGMMA_VARIANTS = {
    "wgmma 256x128, TMA, 3 stages": {},
    "wgmma 256x128, TMA, 4 stages": {"tma_stages": 4},
    "wgmma 256x128, TMA, clusters of 2 (a multicast)": {"cluster": 2},
    "wgmma 256x128, cp.async, 4 stages, async hand-over": {"tma": False},
}


@contextmanager
def patched(table: dict, changes: dict):
    """table with changes (None: the key removed) inside the block, as it was after; plans
    hold rendered kernels, so they are dropped both times."""
    saved = dict(table)
    for key, value in changes.items():
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    _PLANS.clear()
    try:
        yield
    finally:
        table.clear()
        table.update(saved)
        _PLANS.clear()


def measure(bench: Bench, torch, size: int, path: str, layout: str) -> tuple[float, float]:
    """(TFLOP/s, relative error) of one cudagrad matmul."""
    rng = np.random.default_rng(size)
    x = rng.standard_normal((size, size), dtype=np.float32)
    w = rng.standard_normal((size, size), dtype=np.float32)
    a, b = cg.tensor(x, requires_grad=False), cg.tensor(w, requires_grad=False)
    if path == "bf16":
        a, b = a.to(cg.bfloat16), b.to(cg.bfloat16)
        cg.realize(a, b)
    cg.set_float32_matmul_precision("high" if path == "tf32" else "highest")
    try:
        out = {"x@w": lambda: a @ b, "x@w.T": lambda: a @ b.T, "x.T@w": lambda: a.T @ b}[layout]()
    finally:
        cg.set_float32_matmul_precision("highest")
    _, run = replay_plan(out)
    seconds = bench.seconds(run, "cudagrad")
    ours = torch.from_numpy(out.to(cg.float32).numpy()).cuda().double()
    tx, tw = torch.from_numpy(x).cuda(), torch.from_numpy(w).cuda()
    if path == "bf16":
        tx, tw = tx.bfloat16(), tw.bfloat16()
    tx, tw = tx.double(), tw.double()
    tw = tw.T if layout == "x@w.T" else tw
    tx = tx.T if layout == "x.T@w" else tx
    expected = tx @ tw
    error = float(torch.linalg.norm(ours - expected) / torch.linalg.norm(expected))
    return 2 * size ** 3 / seconds / 1e12, error


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="4096,8192")
    parser.add_argument("--tensor-cores-only", action="store_true", help="TF32 and bf16 rows alone")
    parser.add_argument("--simt-only", action="store_true", help="the float32 FMA kernel's variants alone")
    parser.add_argument("--wgmma-only", action="store_true", help="TF32 and bf16, warpgroup variants alone")
    args = parser.parse_args()
    args.tensor_cores_only = args.tensor_cores_only or args.wgmma_only
    sizes = [int(s) for s in args.sizes.split(",")]
    bench = Bench("cuda", quick=False, compile_torch=False)
    torch = bench.torch
    print(f"{bench.card}; PyTorch {torch.__version__}", flush=True)
    rows = []

    def record(size: int, path: str, name: str, layout: str, peak: float) -> None:
        rate, error = measure(bench, torch, size, path, layout)
        rows.append((size, path, name, layout, rate, rate / peak, error))
        print(rows[-1], flush=True)

    for size in sizes:
        peaks = {"fp32": bench.cublas_tflops(size, size, size),
                 "tf32": bench.cublas_tflops(size, size, size, "float32", True),
                 "bf16": bench.cublas_tflops(size, size, size, "bfloat16")}
        print(f"cuBLAS {size}: " + ", ".join(f"{k} {v:.1f}" for k, v in peaks.items()), flush=True)
        for name, changes in SIMT_VARIANTS.items() if not args.tensor_cores_only else ():
            try:
                with patched(render.MATMUL_TILING, changes):
                    record(size, "fp32", name, "x@w", peaks["fp32"])
            except Exception as e:      # a variant failing leaves the others
                print(f"{size} {name}: {type(e).__name__}: {e}", flush=True)
        for path in ("tf32", "bf16") if not args.simt_only else ():
            for name, changes in WGMMA_VARIANTS.items():
                try:
                    with patched(render.WGMMA_TILING, changes):
                        record(size, path, name, "x@w", peaks[path])
                except Exception as e:
                    print(f"{size} {path} {name}: {type(e).__name__}: {e}", flush=True)
            with patched(render.WGMMA_TILING, {"enabled": False}):
                for name, changes in MMA_VARIANTS.items() if not args.wgmma_only else ():
                    try:
                        with patched(render.MMA_TILING, changes):
                            record(size, path, name, "x@w", peaks[path])
                    except Exception as e:
                        print(f"{size} {path} {name}: {type(e).__name__}: {e}", flush=True)
        if size == sizes[0] and not args.tensor_cores_only:
            for name, changes in SIMT_VARIANTS.items():
                with patched(render.MATMUL_TILING, changes):
                    for layout in ("x@w.T", "x.T@w"):
                        record(size, "fp32", name, layout, peaks["fp32"])
            for path in ("tf32", "bf16") if not args.simt_only else ():
                for layout in ("x@w.T", "x.T@w"):
                    record(size, path, "default", layout, peaks[path])
        bench.free()
    print("\n| size | path | variant | layout | TFLOP/s | of cuBLAS | rel err |")
    for size, path, name, layout, rate, fraction, error in rows:
        print(f"| {size} | {path} | {name} | {layout} | {rate:.1f} | {fraction:.0%} | {error:.1e} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
