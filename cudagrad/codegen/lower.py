"""Lower one scheduled kernel to statements: index math and named values.

The kernel walks its output elements by a flat index. Each node is evaluated
at an Index (a position in that node's shape), recursively: movement ops
rewrite the Index (that is all a view is), elementwise ops combine their
sources' values, inputs are loads. Values and index variables are memoized,
so a subexpression used twice is one statement.

On CUDA, elementwise kernels and row kernels that read a row more than once are
lowered in lanes (`lane_mode`): the template walks W consecutive elements per
"slot", and every operand read (or written) contiguously at the kernel's linear
position is a Pack, loaded once per slot as one access of up to 16 bytes
(`packN.v[j]` in the statements is lane j's element). Which packs exist is a
fact of the graph; the width, the alignment and what stays in registers are
render's decisions.

A reduce kernel has three statement lists: `outer` (per output element,
before the reduction loop), `inner` (per reduced element) and `after` (the
epilogue, reading the accumulator). A matmul is a reduce over K whose inner
value is a[..., m, k] * b[..., k, n].
"""
from __future__ import annotations

import re
import sys

from cudagrad.codegen.dialect import Dialect, compute_type
from cudagrad.codegen.kernel import KernelParam
from cudagrad.codegen.lowered import Index, LoweredKernel, MatmulTiles, Pack, Phase
from cudagrad.codegen.operand_layout import operand_layout
from cudagrad.codegen.schedule import KernelSpec, is_input
from cudagrad.dtypes import DType
from cudagrad.ir.node import Node, Op, prod

_INFIX = {Op.ADD: "+", Op.SUB: "-", Op.MUL: "*", Op.DIV: "/"}
_COMPARE = {Op.CMPLT: "<", Op.CMPLE: "<=", Op.CMPEQ: "==", Op.CMPNE: "!="}
MAX_INT32_INDEX = 2**31 - 1
# lane kernels step whole slots of several elements past the end: keep int well clear of 2^31
MAX_INT32_LANE_INDEX = 2**30
# lane kernels on or off (scripts/tune_lanes.py times the scalar kernels against them)
LANES = True
# rows at least this long run a block a row (render's block-reduce template); shorter ones a thread
BLOCK_ROW_MIN = 128
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _strides(shape: tuple[int, ...]) -> list[int]:
    strides, running = [], 1
    for size in reversed(shape):
        strides.append(running)
        running *= size
    return strides[::-1]


class Lowerer:
    """Scopes: "outer" (per output element or row), "loop{p}" (the loop of reduction
    phase p) with "pre{p}" before it, "after" (after the last phase) and "final"
    (the last loop over a row). emit() hoists each statement to the outermost
    scope of the current phase whose variables it does not need."""

    def __init__(self, spec: KernelSpec, dialect: Dialect):
        self.spec = spec
        self.dialect = dialect
        self.inputs: dict[int, KernelParam] = {}
        self.input_nodes: list[Node] = []
        self.memo: dict = {}
        self.counter = 0
        self.loop_scope = "outer"     # where statements that need the loop variable go
        self.hoist_scope = "outer"    # where the others go
        self.loop_names: set[str] = set()
        self.lists: dict[str, list[str]] = {"outer": [], "after": [], "final": []}
        self.reduce_loop_var = "r"
        self.accumulators: dict[int, str] = {}    # finished reductions -> their C value
        self.member_ids = {id(n) for n in spec.members}
        self.narrows_double = False
        self.lanes = lane_mode(spec, dialect)
        self.packs: dict[tuple, Pack] = {}
        self.row_count: int | None = None       # elements a row, in a row kernel
        # index math must also reach every element of the buffers it loads from: a
        # 4-element slice of a 2^31-element buffer still needs 64-bit offsets
        sizes = [n.numel for n in spec.members + spec.roots]
        sizes += [src.numel for n in spec.members for src in n.srcs]
        biggest = max(sizes + [1])
        limit = MAX_INT32_LANE_INDEX if self.lanes else MAX_INT32_INDEX
        self.index_type = "int" if biggest <= limit else "long long"

    def enter(self, loop_scope: str, hoist_scope: str) -> None:
        self.loop_scope, self.hoist_scope = loop_scope, hoist_scope
        self.lists.setdefault(loop_scope, [])
        self.lists.setdefault(hoist_scope, [])
        self.loop_names = set()

    # ---- statements -----------------------------------------------------------
    def _needs_loop(self, expr: str) -> bool:
        if self.loop_scope == self.hoist_scope:
            return False
        tokens = set(_IDENTIFIER.findall(expr))
        # j: the lane within a slot (pack elements packN.v[j] change along the row)
        return self.reduce_loop_var in tokens or "j" in tokens or bool(tokens & self.loop_names)

    def emit(self, expr: str, ctype: str, hint: str) -> str:
        """A named constant holding expr, placed in the outermost scope it can live in."""
        if _IDENTIFIER.fullmatch(expr) or expr.isdigit():
            return expr                  # already a name or a number: no new statement
        scope = self.loop_scope if self._needs_loop(expr) else self.hoist_scope
        key = (scope, expr)
        if key in self.memo:
            return self.memo[key]
        self.counter += 1
        name = f"{hint}{self.counter}"
        self.lists[scope].append(f"const {ctype} {name} = {expr};")
        if scope == self.loop_scope and scope != self.hoist_scope:
            self.loop_names.add(name)
        self.memo[key] = name
        return name

    # ---- index math -----------------------------------------------------------
    def coords(self, index: Index) -> tuple[str, ...]:
        if index.coords is not None:
            return index.coords
        assert index.flat is not None, "an Index holds coords or a flat index"
        result = []
        strides = _strides(index.shape)
        leading = True
        for size, stride in zip(index.shape, strides):
            if size == 1:
                result.append("0")
                continue
            expr = index.flat if stride == 1 else f"{index.flat} / {stride}"
            if not leading:
                expr = f"({expr}) % {size}" if stride != 1 else f"{index.flat} % {size}"
            leading = False
            result.append(self.emit(expr, self.index_type, "idx"))
        return tuple(result)

    def flat(self, index: Index) -> str:
        if index.flat is not None:
            return index.flat
        assert index.coords is not None, "an Index holds coords or a flat index"
        terms = []
        for coord, size, stride in zip(index.coords, index.shape, _strides(index.shape)):
            if size == 1 or coord == "0":
                continue
            terms.append(coord if stride == 1 else f"{coord} * {stride}")
        if not terms:
            return "0"
        if len(terms) == 1 and " " not in terms[0]:
            return terms[0]
        return self.emit(" + ".join(terms), self.index_type, "idx")

    def move(self, node: Node, index: Index) -> Index:
        """The source index that node (a movement op) reads for its element at index."""
        src = node.srcs[0]
        if node.op == Op.RESHAPE:
            return Index(src.shape, flat=self.flat(index), valid=index.valid, linear=index.linear)
        coords = self.coords(index)
        if node.op == Op.PERMUTE:
            src_coords = [""] * len(coords)
            for position, axis in enumerate(node.arg):
                src_coords[axis] = coords[position]
            return Index(src.shape, coords=tuple(src_coords), valid=index.valid)
        if node.op == Op.EXPAND:
            return Index(src.shape, valid=index.valid, coords=tuple(
                "0" if size == 1 else coord for coord, size in zip(coords, src.shape)),
                linear=self._expand_linear(node, index.linear))
        if node.op == Op.SHRINK:
            src_coords = []
            for coord, (start, step, _) in zip(coords, node.arg):
                terms = [str(start)] if start else []
                if coord != "0":
                    terms.append(coord if step == 1 else f"{coord} * {step}")
                src_coords.append(" + ".join(terms) if terms else "0")
            return Index(src.shape, coords=tuple(
                c if " " not in c else self.emit(c, self.index_type, "idx") for c in src_coords),
                valid=index.valid, linear=_shrink_linear(node, index.linear))
        assert node.op == Op.PAD
        src_coords, conditions = [], [index.valid] if index.valid else []
        for coord, (offset, step, count, size) in zip(coords, node.arg):
            distance = f"{coord} - {offset}" if step > 0 else f"{offset} - {coord}"
            if offset == 0 and step > 0:
                distance = coord
            distance = self.emit(distance, self.index_type, "pad") if " " in distance else distance
            span = abs(step)
            conditions.append(f"{distance} >= 0")
            if span != 1:
                conditions.append(f"{distance} % {span} == 0")
            source = distance if span == 1 else self.emit(f"{distance} / {span}", self.index_type, "pad")
            conditions.append(f"{source} < {count}")
            src_coords.append(source)
        valid = self.emit(" && ".join(conditions), "int", "inside")
        return Index(src.shape, coords=tuple(src_coords), valid=valid)

    def _expand_linear(self, node: Node, linear):
        """A row kernel's broadcast of one row over all rows (layer norm's gamma) is read at
        r alone: linear with stride 0. Any other expand is not linear."""
        count = self.row_count
        if linear != (count, 0) or count is None:
            return None
        shape, src_shape = node.shape, node.srcs[0].shape
        split, size = len(shape), 1
        while split > 0 and size < count:
            split -= 1
            size *= shape[split]
        if size != count or src_shape[split:] != shape[split:]:
            return None
        return (0, 0) if all(s == 1 for s in src_shape[:split]) else None

    # ---- values ---------------------------------------------------------------
    def pack(self, param: str, dtype: DType, linear: tuple[int, int], is_output: bool) -> Pack:
        """The pack of param at this linear position, noting that the current scope uses it."""
        key = (param, linear, is_output)
        if key not in self.packs:
            self.packs[key] = Pack(f"pack{len(self.packs)}", param, dtype, linear[0], linear[1],
                                   is_output)
        pack = self.packs[key]
        if self.loop_scope not in pack.scopes:
            pack.scopes.append(self.loop_scope)
        return pack

    def param(self, node: Node) -> str:
        if id(node) not in self.inputs:
            name = f"in{len(self.inputs)}"
            self.inputs[id(node)] = KernelParam(name, node.dtype, False)
            self.input_nodes.append(node)
        return self.inputs[id(node)].name

    def value(self, node: Node, index: Index) -> str:
        key = (id(node), index, self.loop_scope, self.hoist_scope)
        if key in self.memo:
            return self.memo[key]
        result = self._value(node, index)
        self.memo[key] = result
        return result

    def _value(self, node: Node, index: Index) -> str:
        ctype = compute_type(node.dtype)
        dialect = self.dialect
        materialized = is_input(node) or id(node) not in self.member_ids
        if id(node) in self.accumulators:
            return self.accumulators[id(node)]     # a reduction of an earlier phase
        if materialized and self.lanes and index.linear is not None and not index.valid:
            pack = self.pack(self.param(node), node.dtype, index.linear, False)
            return self.emit(dialect.widen(f"{pack.name}.v[j]", node.dtype), ctype, "load")
        if materialized:
            load = dialect.load(self.param(node), self.flat(index), node.dtype)
            if index.valid:
                load = f"{index.valid} ? {load} : {dialect.literal(0, ctype)}"
            return self.emit(load, ctype, "load")
        if node.op == Op.CONST:
            return dialect.literal(node.arg, ctype)
        if node.op in (Op.RESHAPE, Op.PERMUTE, Op.EXPAND, Op.SHRINK, Op.PAD):
            value = self.value(node.srcs[0], self.move(node, index))
            if node.op == Op.PAD:
                inner = self.move(node, index)
                value = self.emit(f"{inner.valid} ? {value} : {dialect.literal(0, ctype)}", ctype, "pad")
            return value
        args = [self.value(src, index) for src in node.srcs]
        return self.emit(self._expression(node, args), ctype, node.op.name.lower())

    def _expression(self, node: Node, args: list[str]) -> str:
        op, ctype = node.op, compute_type(node.dtype)
        if op in _INFIX:
            return f"{args[0]} {_INFIX[op]} {args[1]}"
        if op in _COMPARE:
            return f"({args[0]} {_COMPARE[op]} {args[1]}) ? 1.0f : 0.0f"
        zero = self.dialect.literal(0, ctype)
        one = self.dialect.literal(1, ctype)
        if op == Op.NEG:
            return f"-{args[0]}"
        if op == Op.RELU:
            return f"{args[0]} < {zero} ? {zero} : {args[0]}"     # NaN stays NaN
        if op == Op.SIGMOID:
            return f"{one} / ({one} + {self.dialect.function(Op.EXP, ctype, ['-' + args[0]])})"
        if op == Op.MAXIMUM:
            return f"({args[0]} != {args[0]} || {args[0]} > {args[1]}) ? {args[0]} : {args[1]}"
        if op == Op.MINIMUM:
            return f"({args[0]} != {args[0]} || {args[0]} < {args[1]}) ? {args[0]} : {args[1]}"
        if op == Op.WHERE:
            return f"{args[0]} != 0 ? {args[1]} : {args[2]}"
        if op == Op.CAST:
            if node.dtype.name == "bool":
                return f"({args[0]} != 0) ? 1.0f : 0.0f"
            if compute_type(node.srcs[0].dtype) == "double" and ctype == "float":
                self.narrows_double = True
            return f"({ctype}){args[0]}"
        if op == Op.DETACH:
            return args[0]
        return self.dialect.function(op, ctype, args)

    # ---- the kernel -----------------------------------------------------------
    def lower(self) -> LoweredKernel:
        spec, dialect = self.spec, self.dialect
        root = spec.roots[0]
        header = [f"{op_summary(spec)}", f"output {list(root.shape)} {root.dtype.name}"]
        outputs = [KernelParam(f"out{i}", r.dtype, True) for i, r in enumerate(spec.roots)]
        kernel = LoweredKernel(spec.kind if spec.kind == "elementwise" else "reduce", [],
                               root.numel, self.index_type, header, fused_op_names(spec))
        store_index, row_element = "o", None
        if spec.contractions:
            row_coords = self._lower_phases(kernel)
            if spec.row_loop:
                first = spec.contractions[0]
                self.enter("final", "after")
                full = self._row_element(first.srcs[0].shape, first.arg, row_coords)
                store_index = self.flat(Index(first.srcs[0].shape, coords=full))
                row_element = full
                kernel.final_loop, kernel.final_count = True, prod(first.srcs[0].shape[a]
                                                                   for a in first.arg)
                if kernel.final_count == 0:
                    kernel.final_loop = False     # nothing to write
            else:
                self.enter("after", "after")
        for param, out in zip(outputs, spec.roots):
            index = Index(out.shape, flat=store_index,
                          linear=(1, 0) if spec.kind == "elementwise" else None)
            if row_element is not None and out.shape == spec.contractions[0].srcs[0].shape:
                index = Index(out.shape, coords=row_element, flat=store_index,
                              linear=self._row_linear(spec.contractions[0]))
            value = self.value(out, index)
            if self.lanes and index.linear is not None:
                pack = self.pack(param.name, out.dtype, index.linear, True)
                kernel.stores.append(dialect.store(f"{pack.name}.v", "j", value, out.dtype))
            else:
                kernel.stores.append(dialect.store(param.name, store_index, value, out.dtype))
        if self.lanes:
            kernel.packs = list(self.packs.values())
        kernel.outer, kernel.after = self.lists["outer"], self.lists["after"]
        kernel.final = self.lists["final"]
        kernel.params = outputs + [self.inputs[id(n)] for n in self.input_nodes]
        kernel.narrows_double = self.narrows_double
        return kernel

    def _row_linear(self, contraction: Node) -> tuple[int, int] | None:
        """(count, 0) where the row's elements sit contiguously at o * count + r: every
        dim from the first reduced axis on is reduced or of size 1."""
        shape, axes = contraction.srcs[0].shape, contraction.arg
        if not axes:
            return None
        trailing = all(d in axes or shape[d] == 1 for d in range(min(axes), len(shape)))
        return (prod(shape[a] for a in axes), 0) if trailing else None

    def _row_element(self, shape, axes, row_coords) -> tuple[str, ...]:
        """Coordinates in shape of element r of the current row (axes are the row)."""
        reduced = self.coords(Index(tuple(shape[a] for a in axes), flat=self.reduce_loop_var))
        coords = list(row_coords)
        for axis, coord in zip(axes, reduced):
            coords[axis] = coord
        return tuple(coords)

    def _lower_phases(self, kernel: LoweredKernel) -> tuple[str, ...]:
        """One phase per contraction; returns the row's coordinates."""
        contractions = self.spec.contractions
        kernel.numel = contractions[0].numel
        if contractions[0].op != Op.MATMUL:
            self.row_count = prod(contractions[0].srcs[0].shape[a] for a in contractions[0].arg)
        row_coords = self.coords(Index(contractions[0].shape, flat="o"))
        for number, node in enumerate(contractions):
            self.enter(f"loop{number}", "outer" if number == 0 else f"pre{number}")
            if node.op == Op.MATMUL:
                a, b = node.srcs
                k = self.reduce_loop_var
                a_value = self.value(a, Index(a.shape, coords=row_coords[:-1] + (k,)))
                b_value = self.value(b, Index(b.shape, coords=row_coords[:-2] + (k, row_coords[-1])))
                ctype = compute_type(node.dtype)
                value = self.emit(f"{a_value} * {b_value}", ctype, "product")
                op, count = "sum", a.shape[-1]
                kernel.tiles = self._matmul_tiles(a, b, node.arg)
            else:
                src = node.srcs[0]
                full = self._row_element(src.shape, node.arg, row_coords)
                value = self.value(src, Index(src.shape, coords=full, linear=self._row_linear(node)))
                ctype = compute_type(src.dtype)
                op = {Op.SUM: "sum", Op.MAX: "max", Op.ARGMAX: "argmax"}[node.op]
                count = prod(src.shape[a] for a in node.arg)
            kernel.phases.append(self._phase(number, node, op, count, ctype, value))
        return row_coords

    def _phase(self, number: int, node: Node, op: str, count: int, ctype: str, value: str) -> Phase:
        accumulator_type = ctype
        if op == "sum" and ctype == "float" and self.dialect.name == "c":
            accumulator_type = "double"      # wide accumulation on the CPU keeps sums exact-ish
        if op == "sum":
            init = self.dialect.literal(0, ctype)
        elif ctype == "int":
            init = "(-2147483647 - 1)"
        else:
            init = self.dialect.literal(float("-inf"), ctype)
        accumulator, best_index = f"acc{number}", f"best{number}"
        result_type = compute_type(node.dtype)
        if op == "argmax":
            self.accumulators[id(node)] = best_index
        elif accumulator_type != result_type:
            self.accumulators[id(node)] = f"(({result_type}){accumulator})"
        else:
            self.accumulators[id(node)] = accumulator
        loop_scope = f"loop{number}"
        pre = [] if number == 0 else self.lists[f"pre{number}"]
        return Phase(op, count, accumulator, best_index, accumulator_type, init, value, pre,
                     self.lists[loop_scope])

    def _operand_load(self, operand: Node, batch_coords: tuple, rows: str, cols: str):
        """Statements and value of operand[batch..., rows, cols], in lists of their own."""
        saved = self.lists, self.memo, self.loop_scope, self.hoist_scope
        self.lists, self.memo = {"operand": []}, {}
        self.loop_scope = self.hoist_scope = "operand"
        try:
            value = self.value(operand, Index(operand.shape, coords=batch_coords + (rows, cols)))
            return self.lists["operand"], value
        finally:
            self.lists, self.memo, self.loop_scope, self.hoist_scope = saved

    def _matmul_tiles(self, a: Node, b: Node, precision: str | None) -> MatmulTiles:
        batch_shape = a.shape[:-2]
        saved = self.lists, self.memo, self.loop_scope, self.hoist_scope
        self.lists, self.memo = {"operand": []}, {}
        self.loop_scope = self.hoist_scope = "operand"
        batch_coords = self.coords(Index(batch_shape, flat="batch")) if batch_shape else ()
        batch_statements = self.lists["operand"]
        self.lists, self.memo, self.loop_scope, self.hoist_scope = saved
        a_statements, a_value = self._operand_load(a, batch_coords, "row", "kk")
        b_statements, b_value = self._operand_load(b, batch_coords, "kk", "col")
        def stored(node: Node) -> bool:
            return is_input(node) or id(node) not in self.member_ids
        def param(node: Node) -> str | None:      # the buffer the generic loads already read
            known = self.inputs.get(id(node))
            return None if known is None else known.name
        layouts = [operand_layout(x, axis, stored, param, self.index_type)
                   for x, axis in ((a, -2), (b, -1))] if self.dialect.name == "cuda" else [None, None]
        return MatmulTiles(prod(batch_shape), a.shape[-2], b.shape[-1], a.shape[-1],
                           batch_statements + a_statements, a_value,
                           batch_statements + b_statements, b_value,
                           a.dtype.name, precision or "highest", *layouts)


def lane_mode(spec: KernelSpec, dialect: Dialect) -> bool:
    """Whether to lower in lanes: CUDA elementwise kernels, and CUDA row kernels long enough
    for a block a row that read their row more than once (phases, or a final pass)."""
    if dialect.name != "cuda" or not LANES:
        return False
    if spec.kind == "elementwise":
        return True
    if spec.kind != "reduce":
        return False
    first = spec.contractions[0]
    count = prod(first.srcs[0].shape[a] for a in first.arg)
    return count >= BLOCK_ROW_MIN and (len(spec.contractions) > 1 or spec.row_loop)


def _shrink_linear(node: Node, linear):
    """A slice that is one contiguous run of its source (whole trailing dims, a step-1
    range before them, single indices before that) moves the linear position by a constant."""
    if linear is None:
        return None
    stride, offset = linear
    shift, running = 0, False
    for (start, step, count), size, dim_stride in zip(node.arg, node.srcs[0].shape,
                                                      _strides(node.srcs[0].shape)):
        shift += start * dim_stride
        if running and not (start == 0 and step == 1 and count == size):
            return None
        if count > 1:
            if step != 1:
                return None
            running = True
    return (stride, offset + shift)


def fused_op_names(spec: KernelSpec) -> list[str]:
    names = [node.op.name.lower() for node in reversed(spec.members) if node.op not in _VIEW_LIKE]
    return names or ["copy"]


_VIEW_LIKE = (Op.RESHAPE, Op.PERMUTE, Op.EXPAND, Op.SHRINK, Op.PAD, Op.CONST, Op.DETACH)


def op_summary(spec: KernelSpec) -> str:
    names = []
    for node in spec.members:
        if node.op in _VIEW_LIKE:
            continue
        label = node.op.name.lower()
        if node.op in (Op.SUM, Op.MAX, Op.ARGMAX):
            label += f" over axes {list(node.arg)} of {list(node.srcs[0].shape)}"
        elif node.op == Op.MATMUL:
            label += f" {list(node.srcs[0].shape)} @ {list(node.srcs[1].shape)}"
        names.append(label)
    return "fuses: " + (", ".join(reversed(names)) if names else "copy")


def lower(spec: KernelSpec, dialect: Dialect) -> tuple[LoweredKernel, list[Node]]:
    """The lowered kernel and the nodes its input parameters read, in order."""
    lowerer = Lowerer(spec, dialect)
    # value() recurses once per fused node (a few frames each); a long unrolled
    # chain is thousands deep. Python 3.11+ keeps such frames off the C stack.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(spec.members) + 1000))
    try:
        kernel = lowerer.lower()
    finally:
        sys.setrecursionlimit(limit)
    return kernel, lowerer.input_nodes
