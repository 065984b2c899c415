"""What lowering hands render: a kernel's statements in scopes, its reduction phases,
its packs (lane kernels) and, for a matmul, its operand tiles. Plain data."""
from __future__ import annotations

from dataclasses import dataclass, field

from cudagrad.codegen.kernel import KernelParam
from cudagrad.codegen.operand_layout import OperandLayout
from cudagrad.dtypes import DType


@dataclass(frozen=True)
class Index:
    """A position in a shape: per-dim coordinates and/or a flat row-major offset.
    `valid` is a C condition, set under PAD: where false the value is zero."""
    shape: tuple[int, ...]
    coords: tuple[str, ...] | None = None
    flat: str | None = None
    valid: str | None = None
    # (stride, offset): the flat position is stride * o + offset (+ r in a row kernel,
    # whose row o is stored contiguously), so lanes can read it as packs; None otherwise
    linear: tuple[int, int] | None = None


@dataclass
class Pack:
    """W consecutive elements of a buffer, read or written as one access where alignment
    allows: at stride * o + offset + slot * W in a row kernel (o the row), at
    offset + slot * W in an elementwise kernel. `scopes` are where lanes use it."""
    name: str
    param: str
    dtype: DType
    stride: int
    offset: int
    is_output: bool
    scopes: list[str] = field(default_factory=list)


@dataclass
class Phase:
    """One reduction of a reduce kernel: a loop over the reduced elements of a row."""
    op: str                      # "sum" | "max" | "argmax"
    count: int                   # elements reduced per row
    accumulator: str             # the C variable, e.g. acc0
    best_index: str              # argmax only: the index variable
    accumulator_type: str
    init: str
    value: str                   # the value combined into the accumulator
    pre: list[str] = field(default_factory=list)     # per row, before the loop
    loop: list[str] = field(default_factory=list)    # per reduced element

    @property
    def one_width(self) -> bool:
        """Whether the loop computes in a single floating-point width. GCC 12 miscompiles
        some loops mixing float and double once vectorized in lanes (found by the fuzzer:
        a float comparison selecting doubles), so only these get the lane layout."""
        widths = {kind for kind in ("float", "double")
                  for line in self.loop if line.startswith(f"const {kind} ")}
        return len(widths) <= 1


@dataclass
class LoweredKernel:
    """Statements in loops. Elementwise: `outer` per output element o. Reduce: per
    row o, `outer`, then each phase's loop, then `after` (the epilogue); with
    `final_loop`, a last loop over the row computes `final` and stores every element."""
    kind: str                                  # "elementwise" | "reduce"
    params: list[KernelParam]
    numel: int                                 # output elements, or rows of a reduce kernel
    index_type: str                            # int, or long long past 2^31 elements
    header: list[str]
    op_names: list[str]                        # the fused ops, for the kernel's name
    outer: list[str] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    final_loop: bool = False
    final_count: int = 0
    final: list[str] = field(default_factory=list)
    stores: list[str] = field(default_factory=list)
    tiles: MatmulTiles | None = None           # matmul operands as separate loads, for tiling
    narrows_double: bool = False               # holds a float64 -> float32 conversion
    packs: list[Pack] | None = None            # lowered in lanes (see the module doc); else None

    @property
    def reduce_count(self) -> int:
        return max([phase.count for phase in self.phases] + [self.final_count])

    @property
    def single_sum(self) -> bool:
        """One sum and nothing per element after it: the loop itself may be split."""
        return len(self.phases) == 1 and self.phases[0].op == "sum" and not self.final_loop


@dataclass
class MatmulTiles:
    """A matmul's operands as loads a tiled kernel can place in shared memory:
    a at (batch, row, kk), b at (batch, kk, col), each with its own statements."""
    batch: int
    m: int
    n: int
    k: int
    a_statements: list[str]
    a_value: str
    b_statements: list[str]
    b_value: str
    dtype: str = "float32"                     # the operands' (and the matmul's) dtype
    precision: str = "highest"                 # "tf32": TF32 tensor cores allowed
    a_layout: OperandLayout | None = None      # 16-byte vector loads, where they fit
    b_layout: OperandLayout | None = None
