"""Fill a template with a lowered kernel, giving a Kernel (name, source, launch).

Python decides (which template, how many threads, whether to parallelize);
the templates hold the text.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from cudagrad.codegen.dialect import Dialect
from cudagrad.codegen.kernel import Kernel, TensorMap
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
# Fused multiply-add matmul: 8 warps of 4x8 threads, each warp a 32x64 sub-tile (8x8 a thread)
# of a 128x128 output tile, 16 columns of K staged at a time (2 x 16.5 KiB of shared memory,
# double-buffered), at most 128 registers a thread so that 2 blocks share a multiprocessor;
# m/n-contiguous operands are copied with cp.async on sm_80+. Where that gives fewer blocks
# than a GPU has multiprocessors, 64x64 tiles (4x4 a thread). float64 stages 8 columns (its
# registers are twice as wide).
MATMUL_TILING: dict[str, Any] = {"tile_m": 128, "tile_n": 128, "tile_k": 16, "warps_m": 4, "warps_n": 2,
                                 "lanes_m": 4, "min_blocks": 2}
SMALL_MATMUL_TILING: dict[str, Any] = {"tile_m": 64, "tile_n": 64, "tile_k": 16, "warps_m": 2, "warps_n": 4,
                                       "lanes_m": 8}
# and where even those leave multiprocessors idle (a 512-wide layer), 32x32 tiles of 4 warps,
# 4x2 a thread. Here a k-contiguous b is copied as it is too (direct_b; a Linear layer's
# x @ W.T): 512^3 from 19.0 us to 14.7 us on an H200, where the big tiles lose with it
TINY_MATMUL_TILING: dict[str, Any] = {"tile_m": 32, "tile_n": 32, "tile_k": 16, "warps_m": 2, "warps_n": 2,
                                      "lanes_m": 4, "direct_b": True}
# Tensor-core matmul (sm_80+): 8 warps, each a 64x32 sub-tile of mma.sync steps, 3 stages of
# cp.async copies. TF32 steps are 8 deep (K staged 32 at a time), bfloat16 steps 16 (K 64).
MMA_TILING: dict[str, Any] = {"tile_m": 128, "tile_n": 128, "warps_m": 2, "warps_n": 4, "stages": 3,
                              "ldmatrix": True, "min_blocks": 2}
MMA_KINDS: dict[str, dict[str, Any]] = {"tf32": {"tile_k": 32, "mma_k": 8, "element_bytes": 4},
             "bf16": {"tile_k": 64, "mma_k": 16, "element_bytes": 2}}
MMA_MIN_ARCH = 80          # mma.sync with TF32/bf16 operands and cp.async
# Warpgroup matmul (Hopper, sm_90a): a producer warpgroup copies a 256x(K step) tile of a
# (k-contiguous, 128-byte swizzled: read by wgmma through a shared-memory descriptor) and a
# (K step)x128 tile of b (n-contiguous, padded: read into registers) per stage with cp.async;
# 2 consumer warpgroups each multiply 64 columns of n by the 256 rows of m with wgmma, which
# computes out^T = b^T a^T (b^T as the register operand, so neither operand needs a
# transposed shared layout: TF32 wgmma reads shared operands k-major only). "handoff":
# "async" passes a stage on when its copies land (cp.async.mbarrier.arrive); "lagged" has
# each producer thread wait for its copies `lag` stages later and round TF32 tiles in shared
# memory first (slower: 32% of cuBLAS TF32 against 55%, H100, docs/BENCHMARKS.md). Chosen
# for k-contiguous a, n-contiguous b and at least WGMMA_MIN_WORK multiply-adds; everything
# else keeps the mma.sync kernel. l2_prefetch: "", "128B" or "256B" (no gain measured).
WGMMA_TILING: dict[str, Any] = {"enabled": True, "tile_m": 256, "tile_n": 128, "stages": 4, "lag": 1,
                                "handoff": "async", "group_m": 8, "l2_prefetch": "", "tma": True,
                                "tma_stages": 3, "cluster": 1}
# "tma" (matmul_wgmma_tma.cu.j2): one producer thread has the copy engine fill the stages
# (cp.async.bulk.tensor, described by tensor maps the launch encodes from the buffers'
# addresses: Kernel.tensor_maps), b in 128-byte swizzled boxes too, and the producer gives its
# registers to the consumers (setmaxnreg; at 168 registers ptxas serializes the wgmmas,
# C7512): 84-99% of cuBLAS against 48-57% for the cp.async kernel (H100, docs/BENCHMARKS.md);
# 3 stages ("tma_stages") measured 2-6% faster than 4.
# Taken for unbatched matmuls of plain (offset) views; a launch whose buffer is not 16-byte
# aligned runs the cp.async kernel instead (Kernel.fallback). "cluster": 2 pairs blocks along
# n that multicast their shared a tile: correct but measured at half the speed (40-50%).
WGMMA_ARCH = 90
WGMMA_MIN_WORK = 1 << 27
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
        return checkout / "templates"


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


def _cuda_arch() -> int:
    """The compute capability of the CUDA device in use (90 for sm_90); where none is open
    (rendering without a GPU, as the compile tests do), the oldest the mma path needs."""
    from cudagrad.device import opened_device
    device = opened_device("cuda")
    if device is None:
        return MMA_MIN_ARCH
    major, minor = device.target["compute_capability"]
    return 10 * major + minor


def _output_tiles(tiles, tiling: dict[str, Any]) -> int:
    """Tiles of a matmul's output (of every batch) under a tiling."""
    return -(-tiles.n // tiling["tile_n"]) * -(-tiles.m // tiling["tile_m"]) * max(1, tiles.batch)


def _fma_tiling(tiles) -> dict[str, Any]:
    """The largest tiles that still give every multiprocessor a block (the smallest else):
    a 512x512 output is 16 tiles of 128x128 but 256 of 32x32."""
    for tiling in (MATMUL_TILING, SMALL_MATMUL_TILING, TINY_MATMUL_TILING):
        if _output_tiles(tiles, tiling) >= TYPICAL_MULTIPROCESSORS:
            return tiling
    return tiling


# Split-K: where even the smallest tiles leave multiprocessors idle and K is long (a
# weight gradient of a 10-wide layer: [10, 512] from a batch of 512), each tile's K range
# is cut into up to SPLIT_K_MAX parts of at least SPLIT_K_MIN_DEPTH, one block each; the
# block that finishes a tile last sums the parts in order (deterministic) and runs the
# epilogue. [512, 512] @ [512, 10] on an H100: 13.8 us in 16 blocks, 4.1 us in 8 parts.
SPLIT_K_MAX = 16
SPLIT_K_MIN_DEPTH = 64


def _plan_split_k(tiles, tiling: dict[str, Any]) -> None:
    """Set split_k (parts of K a tile), k_per_split and the workspace it needs."""
    blocks = _output_tiles(tiles, tiling)
    split = 1
    while (0 < blocks * split < TYPICAL_MULTIPROCESSORS and split < SPLIT_K_MAX
           and tiles.k // (2 * split) >= SPLIT_K_MIN_DEPTH
           and max(1, tiles.batch) * 2 * split <= CUDA_MAX_GRID_Z):
        split *= 2
    tiling["split_k"] = split
    if split == 1:
        return
    tile_k = tiling["tile_k"]
    tiling["k_per_split"] = -(-tiles.k // (split * tile_k)) * tile_k    # whole stages of K
    tiling["counter_words"] = -(-blocks // 4) * 4                        # 16-byte aligned after
    item = 4 if tiling["accumulator"] == "float" else 8
    partial_sums = blocks * split * tiling["tile_m"] * tiling["tile_n"]
    tiling["workspace"] = 4 * tiling["counter_words"] + partial_sums * item


def _operand_mode(layout, vector: int) -> str:
    """How a template reads an operand: "k" or "mn" (16-byte vectors), else "generic"."""
    return layout.contiguous if layout is not None and layout.vector == vector else "generic"


def _wgmma_fits(tiles, kind: str | None, arch: int) -> bool:
    """Whether the warpgroup kernel takes this matmul: Hopper, a tensor-core kind, a read
    along k in 16-byte vectors, b along n, and enough work to fill the GPU's tiles."""
    if kind is None or arch != WGMMA_ARCH or not WGMMA_TILING["enabled"]:
        return False
    a_mode = _operand_mode(tiles.a_layout, 16 // MMA_KINDS[kind]["element_bytes"])
    b_mode = _operand_mode(tiles.b_layout, 16 // MMA_KINDS[kind]["element_bytes"])
    work = tiles.m * tiles.n * tiles.k * max(1, tiles.batch)
    return a_mode == "k" and b_mode == "mn" and work >= WGMMA_MIN_WORK


def _wgmma_tiling(tiles, kind: str) -> tuple[dict, int]:
    """The warpgroup kernel's template values and its dynamic shared memory in bytes."""
    tiling: dict[str, Any] = dict(WGMMA_TILING, **MMA_KINDS[kind], kind=kind)
    # a producer running `lag` stages behind its copies must still be able to free a stage
    assert 0 < tiling["lag"] < tiling["stages"], "wgmma: lag must be below the stage count"
    tiling["consumers"] = tiling["tile_n"] // 64           # one warpgroup a 64-column slice of n
    tiling["block"] = 128 * (1 + tiling["consumers"])
    element = tiling["element_bytes"]
    tiling["vector"] = 16 // element
    # 8 elements of padding a row of b: the fragment reads of a warp (ldmatrix rows 16 bytes
    # apart in bank, or TF32 words 8 banks apart by k) hit every bank once
    tiling["b_row"] = tiling["tile_n"] + 8
    tiling["a_stage_bytes"] = tiling["tile_m"] * tiling["tile_k"] * element
    tiling["b_stage_bytes"] = tiling["tile_k"] * tiling["b_row"] * element
    tiling["m_tiles"] = -(-tiles.m // tiling["tile_m"])
    tiling["n_tiles"] = -(-tiles.n // tiling["tile_n"])
    # the stages, 1024 bytes to align the swizzled tiles to their 1024-byte pattern, and
    # two 8-byte barriers a stage
    shared = tiling["stages"] * (tiling["a_stage_bytes"] + tiling["b_stage_bytes"] + 16) + 1024
    return tiling, shared


def _literal_offset(layout) -> int | None:
    """An operand layout's start as a number of elements; None where it depends on the batch."""
    return int(layout.base) if layout.base.isdigit() else None


def _wgmma_tma_tiling(kernel: LoweredKernel, kind: str) -> tuple[dict, int] | None:
    """The TMA warpgroup kernel's template values (with its tensor maps) and its dynamic
    shared memory, or None where it does not take this matmul: a batch (one tensor map
    would need the batch's stride), or an operand whose start depends on the batch."""
    tiles = kernel.tiles
    assert tiles is not None and tiles.a_layout is not None and tiles.b_layout is not None
    a_offset, b_offset = _literal_offset(tiles.a_layout), _literal_offset(tiles.b_layout)
    if not WGMMA_TILING.get("tma") or tiles.batch > 1 or a_offset is None or b_offset is None:
        return None
    tiling: dict[str, Any] = dict(WGMMA_TILING, **MMA_KINDS[kind], kind=kind)
    tiling["stages"] = tiling["tma_stages"]
    cluster = tiling["cluster"]
    element = tiling["element_bytes"]
    tiling["consumers"] = tiling["tile_n"] // 64           # one warpgroup a 64-column slice of n
    tiling["block"] = 128 * (1 + tiling["consumers"])
    # registers a thread (setmaxnreg): the producer warpgroup's few go to the consumers,
    # within the 64K of a multiprocessor (multiples of 8)
    tiling["producer_registers"] = 40
    tiling["consumer_registers"] = min(232, (65536 // 128 - 40) // tiling["consumers"] // 8 * 8)
    # every box row is 128 bytes of k (a) or of n (b): the 128-byte swizzle's width
    assert tiling["tile_k"] * element == 128, "wgmma TMA: a k tile is one 128-byte swizzle row"
    tiling["a_box_rows"] = tiling["tile_m"] // cluster     # each block of a cluster copies its share of a
    tiling["a_box_bytes"] = tiling["a_box_rows"] * 128
    tiling["a_stage_bytes"] = tiling["tile_m"] * 128
    tiling["b_box_columns"] = 128 // element
    tiling["b_boxes"] = tiling["tile_n"] // tiling["b_box_columns"]
    tiling["b_box_bytes"] = tiling["tile_k"] * 128
    tiling["stage_bytes"] = tiling["a_stage_bytes"] + tiling["b_boxes"] * tiling["b_box_bytes"]
    tiling["m_tiles"] = -(-tiles.m // tiling["tile_m"])
    tiling["n_clusters"] = -(-tiles.n // (tiling["tile_n"] * cluster))
    params = [param.name for param in kernel.params]
    dtype = tiles.dtype
    tiling["tensor_maps"] = (
        TensorMap(params.index(tiles.a_layout.param), dtype, a_offset, (tiles.k, tiles.m),
                  tiles.a_layout.stride, (tiling["tile_k"], tiling["a_box_rows"])),
        TensorMap(params.index(tiles.b_layout.param), dtype, b_offset, (tiles.n, tiles.k),
                  tiles.b_layout.stride, (tiling["b_box_columns"], tiling["tile_k"])))
    # the stages, 1024 bytes to align them to the swizzle's pattern, two barriers a stage
    shared = tiling["stages"] * (tiling["stage_bytes"] + 16) + 1024
    return tiling, shared


def _cuda_matmul(kernel: LoweredKernel, arch: int, tma: bool = True) -> tuple[str, dict, tuple, str]:
    """The matmul template, its tiling, the launch and the architecture it needs ("": the
    device's): warpgroup MMA on Hopper where the operands allow (fed by TMA where `tma`
    and the operands allow), tensor cores for bfloat16 operands, and for float32 where
    TF32 is allowed (sm_80+); fused multiply-adds otherwise."""
    tiles = kernel.tiles
    assert tiles is not None
    kind = {"bfloat16": "bf16", "float32": "tf32" if tiles.precision == "tf32" else None}.get(tiles.dtype)
    wgmma_fits = kind is not None and _wgmma_fits(tiles, kind, arch)
    fed_by_tma = _wgmma_tma_tiling(kernel, kind) if wgmma_fits and tma and kind is not None else None
    if fed_by_tma is not None:
        wgmma, wgmma_shared = fed_by_tma
        grid = (wgmma["n_clusters"] * wgmma["cluster"], wgmma["m_tiles"], 1)
        return "cuda/matmul_wgmma_tma.cu.j2", wgmma, (grid, (wgmma["block"], 1, 1), wgmma_shared), "sm_90a"
    if kind is not None and wgmma_fits:
        wgmma, wgmma_shared = _wgmma_tiling(tiles, kind)
        grid = (wgmma["n_tiles"], wgmma["m_tiles"], max(1, tiles.batch))
        return "cuda/matmul_wgmma.cu.j2", wgmma, (grid, (wgmma["block"], 1, 1), wgmma_shared), "sm_90a"
    if kind is not None and arch >= MMA_MIN_ARCH:
        tiling: dict[str, Any] = dict(MMA_TILING, **MMA_KINDS[kind], kind=kind, async_copy=True)
        tiling["block"] = 32 * tiling["warps_m"] * tiling["warps_n"]
        vector = 16 // tiling["element_bytes"]
        tiling["a_mode"] = _operand_mode(tiles.a_layout, vector)
        tiling["b_mode"] = _operand_mode(tiles.b_layout, vector)
        shared = 0
        for mode, tile_mn in ((tiling["a_mode"], tiling["tile_m"]), (tiling["b_mode"], tiling["tile_n"])):
            row = tile_mn + 8 if mode == "mn" else tiling["tile_k"] + (4 if kind == "tf32" else 8)
            shared += row * (tiling["tile_k"] if mode == "mn" else tile_mn)
        shared *= tiling["stages"] * tiling["element_bytes"]
        template = "cuda/matmul_mma.cu.j2"
    else:
        tiling = dict(_fma_tiling(tiles))
        wide = kernel.phases[0].accumulator_type != "float"
        tiling["accumulator"] = kernel.phases[0].accumulator_type
        if wide:
            tiling["tile_k"] = 8
        tiling["block"] = 32 * tiling["warps_m"] * tiling["warps_n"]
        vector = 0 if wide or tiles.dtype != "float32" else 4
        tiling["a_mode"] = _operand_mode(tiles.a_layout, vector)
        tiling["b_mode"] = _operand_mode(tiles.b_layout, vector)
        tiling["async_copy"] = arch >= MMA_MIN_ARCH and tiling.get("async_copy", True)
        # a k-contiguous a is copied as it is and read along k (no transposing stores: x @ w
        # from 78% of cuBLAS to 81%, H100). Not where b is k-contiguous too, unless the tiling
        # says direct_b: in 128x128 tiles a direct b measured slower (x @ w.T 62%), and a
        # direct a beside a transposed b spills
        both = tiling.get("direct_b", False)
        direct = tiling["async_copy"] and tiling.get("direct_k", True) and (tiling["b_mode"] != "k" or both)
        tiling["a_direct"] = direct and tiling["a_mode"] == "k"
        tiling["b_direct"] = direct and tiling["b_mode"] == "k" and both
        shared = 0
        template = "cuda/matmul.cu.j2"
        _plan_split_k(tiles, tiling)
    split = tiling.get("split_k", 1)
    launch = ((max(1, -(-tiles.n // tiling["tile_n"])), max(1, -(-tiles.m // tiling["tile_m"])),
               max(1, tiles.batch) * split), (tiling["block"], 1, 1), shared)
    return template, tiling, launch, ""


def render(kernel: LoweredKernel, dialect: Dialect, device: str, tma: bool = True) -> Kernel:
    """The Kernel of a lowered kernel; tma=False: without tensor maps (the fallback of a
    kernel that has them)."""
    needs_half = any(p.dtype.name in ("float16", "bfloat16") for p in kernel.params)
    context = {"k": kernel, "signature": _signature(kernel, dialect), "needs_half": needs_half,
               "block": CUDA_BLOCK}
    launch: tuple = ()
    arch = ""
    tensor_maps: tuple[TensorMap, ...] = ()
    fallback = None
    workspace = 0
    if device == "cuda" and kernel.tiles is not None and kernel.tiles.batch <= CUDA_MAX_GRID_Z:
        template, tiling, launch, arch = _cuda_matmul(kernel, _cuda_arch(), tma)
        context.update(tiling)
        workspace = tiling.get("workspace", 0)
        context["storage"] = {p.name: dialect.storage_type(p.dtype) for p in kernel.params}
        tensor_maps = tiling.get("tensor_maps", ())
        if tensor_maps:
            fallback = render(kernel, dialect, device, tma=False)
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
    return Kernel(name, source, device, tuple(kernel.params), launch, arch, tensor_maps, fallback,
                  workspace)


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
