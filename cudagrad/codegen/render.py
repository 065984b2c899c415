"""Fill a template with a lowered kernel, giving a Kernel (name, source, launch).

Python decides (which template, how many threads, whether to parallelize);
the templates hold the text.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from cudagrad.codegen.dialect import Dialect
from cudagrad.codegen.kernel import Kernel
from cudagrad.codegen.lower import LoweredKernel

CPU_PARALLEL_WORK = 1 << 17      # below this, starting threads costs more than it saves
CUDA_BLOCK = 256
CPU_MATMUL_TILING = {"rows": 8, "cols": 32}     # 8x32 floats: 16 AVX-512 or 32 AVX2 registers
CUDA_MAX_GRID = 65535 * 16
CUDA_BLOCK_REDUCE_MIN = 128
CUDA_MAX_GRID_Z = 65535
# 16x16 threads, each computing an 8x8 patch: a 128x128 output tile per block,
# 8 columns of K staged at a time (2 x 8 KiB of shared memory, double-buffered).
# Where that gives fewer blocks than a GPU has multiprocessors, 64x64 tiles (4x4 a thread).
MATMUL_TILING = {"tile_m": 128, "tile_n": 128, "tile_k": 8, "micro": 8, "threads_m": 16,
                 "threads_n": 16}
SMALL_MATMUL_TILING = {"tile_m": 64, "tile_n": 64, "tile_k": 16, "micro": 4, "threads_m": 16,
                       "threads_n": 16}
TYPICAL_MULTIPROCESSORS = 132      # reductions at least this long get a block per output


def template_dir() -> Path:
    """templates/ ships inside the wheel as cudagrad/templates; in a source
    checkout it sits beside the package."""
    try:
        import cudagrad.templates as shipped
        return Path(next(iter(shipped.__path__)))
    except ImportError:
        return Path(__file__).resolve().parents[2] / "templates"


@lru_cache(maxsize=1)
def _environment():
    import jinja2  # imported on first render: `import cudagrad` stays fast
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir())),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              trim_blocks=False, lstrip_blocks=False)


def _signature(kernel: LoweredKernel, dialect: Dialect) -> str:
    params = []
    for param in kernel.params:
        const = "" if param.is_output else "const "
        params.append(f"{const}{dialect.storage_type(param.dtype)}* {dialect.restrict} {param.name}")
    return ", ".join(params)


def _name(kernel: LoweredKernel, body: str) -> str:
    words = list(dict.fromkeys(kernel.op_names))[:4]
    digest = hashlib.sha1(body.encode()).hexdigest()[:8]
    return "cg_" + "_".join(words + [digest])


def render(kernel: LoweredKernel, dialect: Dialect, device: str) -> Kernel:
    needs_half = any(p.dtype.name in ("float16", "bfloat16") for p in kernel.params)
    context = {"k": kernel, "signature": _signature(kernel, dialect), "needs_half": needs_half,
               "block": CUDA_BLOCK}
    launch: tuple = ()
    if device == "cuda" and kernel.tiles is not None and kernel.tiles.batch <= CUDA_MAX_GRID_Z:
        tiles = kernel.tiles
        template = "cuda/matmul.cu.j2"
        big_blocks = -(-tiles.n // 128) * -(-tiles.m // 128) * max(1, tiles.batch)
        tiling = MATMUL_TILING if big_blocks >= TYPICAL_MULTIPROCESSORS else SMALL_MATMUL_TILING
        context.update(tiling)
        context["storage"] = {p.name: dialect.storage_type(p.dtype) for p in kernel.params}
        launch = ((max(1, -(-tiles.n // tiling["tile_n"])),
                   max(1, -(-tiles.m // tiling["tile_m"])), max(1, tiles.batch)),
                  (CUDA_BLOCK, 1, 1), 0)
    elif device == "cuda":
        block_reduce = kernel.kind == "reduce" and kernel.reduce_count >= CUDA_BLOCK_REDUCE_MIN
        if block_reduce:
            # long rows: more threads a row keep more loads in flight per multiprocessor
            block = 1024 if kernel.reduce_count >= 8192 else 512 if kernel.reduce_count >= 2048 else 256
            context["block"] = block
        template = ("cuda/reduce_block.cu.j2" if block_reduce else
                    "cuda/reduce_thread.cu.j2" if kernel.kind == "reduce" else "cuda/elementwise.cu.j2")
        blocks = kernel.numel if block_reduce else -(-kernel.numel // CUDA_BLOCK)
        launch = ((max(1, min(blocks, CUDA_MAX_GRID)), 1, 1), (context["block"], 1, 1), 0)
    elif kernel.tiles is not None:
        template = "c/matmul.c.j2"
        context.update(CPU_MATMUL_TILING)
        context["parallel"] = kernel.numel * kernel.reduce_count >= CPU_PARALLEL_WORK
    else:
        template = "c/reduce.c.j2" if kernel.kind == "reduce" else "c/elementwise.c.j2"
        work = kernel.numel * max(kernel.reduce_count, 1)
        parallel = ""
        if work >= CPU_PARALLEL_WORK:
            inner_pays = kernel.numel < 8 and kernel.single_sum
            parallel = "inner" if inner_pays else "outer"
        context["parallel"] = parallel
    environment = _environment()
    body = environment.get_template(template).render(name="KERNEL_NAME", **context)
    name = _name(kernel, body)
    source = body.replace("KERNEL_NAME", name)
    return Kernel(name, source, device, tuple(kernel.params), launch)
