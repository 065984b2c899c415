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
from cudagrad.codegen.lower import BLOCK_ROW_MIN, LoweredKernel, Pack

CPU_PARALLEL_WORK = 1 << 17      # below this, starting threads costs more than it saves
CUDA_BLOCK = 256
CPU_MATMUL_TILING = {"rows": 8, "cols": 32}     # 8x32 floats: 16 AVX-512 or 32 AVX2 registers
CUDA_MAX_GRID = 65535 * 16
CUDA_BLOCK_REDUCE_MIN = BLOCK_ROW_MIN
# Lane kernels (lower.py): a pack is at most one 16-byte access (float4, double2, 8 halves)
LANE_BYTES = 16
MAX_LANE_WIDTH = 8
# an elementwise thread loads this many elements of each operand before computing any (2
# float4 loads an operand in flight), in blocks of 512 threads: on an H200 (2026-11-26,
# scripts/tune_lanes.py) 4, 8 or 16 elements and blocks of 128 to 512 were all within 1% on
# the 2^28-element chain, 512 threads the fastest in two runs; evict-first hints cost 0.2%
ELEMENTWISE_ELEMENTS_PER_THREAD = 8
ELEMENTWISE_BLOCK = 512
# the unrolled lanes copy the statements: past this many copies, fewer lanes
MAX_UNROLLED_STATEMENTS = 4096
# a row kernel keeps the packs it reads in several passes in registers when they take at
# most this many 32-bit registers a thread; longer rows are read again in each pass. On an
# H200, softmax and layer norm of 8192x8192: 32 words (blocks of 256) 136 and 139 us, 16
# (512) 135 and 141 us, 8 (1024: 2 blocks a multiprocessor) 253 and 227 us, re-reading 183 us
ROW_CACHE_WORDS = 32
ROW_BLOCKS = (256, 512, 1024)
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
    checkout it sits beside the package. The checkout's own copy wins: an editable
    install maps cudagrad.templates to the checkout it was made from, which is
    another worktree's when this package is imported from a second worktree."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "templates" / "cuda").is_dir():
        return checkout / "templates"
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
    elif device == "cuda" and kernel.packs is not None and kernel.kind == "elementwise":
        template = "cuda/elementwise_lanes.cu.j2"
        launch = _elementwise_lanes(kernel, dialect, context)
    elif device == "cuda" and kernel.packs is not None:
        template = "cuda/reduce_rows.cu.j2"
        launch = _row_lanes(kernel, dialect, context)
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


# ---- lane kernels: how wide, how many in flight, what stays in registers -------------------
def _lane_width(kernel: LoweredKernel, statements: int) -> int:
    """Elements a pack: 16 bytes of the widest operand, at most 8; a row kernel's width
    divides its row (so no slot straddles two rows), and huge bodies get fewer copies."""
    widest = max(param.dtype.itemsize for param in kernel.params)
    width = max(1, min(MAX_LANE_WIDTH, LANE_BYTES // widest))
    while width > 1 and kernel.kind == "reduce" and kernel.reduce_count % width:
        width //= 2
    while width > 1 and statements * width > MAX_UNROLLED_STATEMENTS:
        width //= 2
    return width


def _pack_context(pack: Pack, width: int, dialect: Dialect, row: bool) -> dict:
    """How the template spells one pack: its C type, base index and alignment test."""
    storage = dialect.storage_type(pack.dtype)
    align = min(width * pack.dtype.itemsize, LANE_BYTES)
    terms = [f"o * {pack.stride}"] if row and pack.stride else []
    terms += [str(pack.offset)] if pack.offset else []
    terms.append(f"slot * {width}" if width > 1 else "slot")
    # an offset off the pack grid can never be one access: lane by lane, decided here;
    # the buffer's own address is only known at launch: tested once in the kernel
    on_grid = pack.offset % width == 0 and (not row or pack.stride % width == 0)
    if width == 1:
        aligned = "true"
    elif not on_grid:
        aligned = "false"
    else:
        offset = f" + {pack.offset}" if pack.offset else ""
        aligned = f"cg_is_aligned({pack.param}{offset}, {align})"
    return {"name": pack.name, "param": pack.param, "type": f"cg_pack<{storage}, {width}, {align}>",
            "base": " + ".join(terms), "aligned": aligned, "is_output": pack.is_output,
            "scopes": pack.scopes}


def _elementwise_lanes(kernel: LoweredKernel, dialect: Dialect, context: dict) -> tuple:
    statements = len(kernel.outer) + len(kernel.stores)
    width = _lane_width(kernel, statements)
    per_thread = max(1, ELEMENTWISE_ELEMENTS_PER_THREAD // width)   # slots a thread
    while per_thread > 1 and statements * width * per_thread > MAX_UNROLLED_STATEMENTS:
        per_thread //= 2
    slots = -(-kernel.numel // width)
    packs = [_pack_context(pack, width, dialect, row=False) for pack in kernel.packs or []]
    context.update(width=width, per_thread=per_thread, slots=slots,
                   ragged=kernel.numel % width != 0,
                   loads=[p for p in packs if not p["is_output"]],
                   outputs=[p for p in packs if p["is_output"]], packs=packs)
    context["block"] = ELEMENTWISE_BLOCK
    blocks = -(-slots // (ELEMENTWISE_BLOCK * per_thread))
    return ((max(1, min(blocks, CUDA_MAX_GRID)), 1, 1), (ELEMENTWISE_BLOCK, 1, 1), 0)


def _row_lanes(kernel: LoweredKernel, dialect: Dialect, context: dict) -> tuple:
    """A block a row, W elements a slot. Packs read in more than one pass (the row's
    input) are loaded once into registers when they fit ROW_CACHE_WORDS; the block then
    is the smallest that fits them (more rows in flight a multiprocessor)."""
    count = kernel.reduce_count
    statements = sum(len(phase.loop) + 1 for phase in kernel.phases) + len(kernel.final)
    width = _lane_width(kernel, statements)
    slots = count // width
    reused = [pack for pack in kernel.packs or [] if len(pack.scopes) > 1]
    words_a_slot = sum(-(-width * pack.dtype.itemsize // 4) for pack in reused)
    fitting = [candidate for candidate in ROW_BLOCKS
               if -(-slots // candidate) * words_a_slot <= ROW_CACHE_WORDS]
    block = 1024 if count >= 8192 else 512 if count >= 2048 else 256
    cached = False
    if reused and fitting:
        # the smallest block that holds the row; short rows: no idle warps either
        candidate = min(fitting[0], max(64, 1 << (slots - 1).bit_length()))
        # registers need the slots unrolled: each unrolled copy repeats the pass's statements
        if statements * width * -(-slots // candidate) <= MAX_UNROLLED_STATEMENTS:
            block, cached = candidate, True
    packs = [_pack_context(pack, width, dialect, row=True) for pack in kernel.packs or []]
    kept = {pack.name for pack in reused} if cached else set()
    for pack in packs:
        pack["cached"] = pack["name"] in kept
    context.update(width=width, slots=slots, block=block, unrolled=cached,
                   slots_a_thread=-(-slots // block), packs=packs)
    return ((max(1, min(kernel.numel, CUDA_MAX_GRID)), 1, 1), (block, 1, 1), 0)
