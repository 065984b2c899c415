"""Cut a lazy graph into kernels (fusion).

The rules, from DESIGN.md:
- every chain of elementwise and movement ops is one kernel;
- elementwise producers fuse into the reduction (or matmul) that consumes them
  (its prologue), and elementwise consumers fuse after it (its epilogue) when
  they keep its output's element order (elementwise ops and reshapes only);
- "reduce then broadcast" is one kernel per row: reductions over the same axes
  of same-shaped values, whose results are broadcast back along those axes
  (softmax, layer norm), run as phases of one kernel; a matmul stays alone;
- movement ops are index math: they never force a copy by themselves;
- a value that two kernels would both compute is stored once (materialized)
  and read by both, so each shared subexpression is computed once.

Inputs are nodes that already hold a buffer (leaves and realized nodes).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from cudagrad.ir.autograd import topological_order
from cudagrad.ir.node import ELEMENTWISE, MOVEMENT, REDUCE, Node, Op

CONTRACTIONS = REDUCE | {Op.MATMUL}
# A row kernel's phase k recomputes the values the phases before it read, so the work (and
# the source) of chained reductions grows with the square of their count: cap it.
MAX_ROW_PHASES = 4


def is_input(node: Node) -> bool:
    return node.realized is not None or node.op == Op.BUFFER


@dataclass
class KernelSpec:
    """What one kernel computes: the nodes it stores and the contractions it holds
    (one matmul, or reductions over the same axes of one shape, sources first)."""
    roots: list[Node]
    contractions: list[Node] = field(default_factory=list)
    members: list[Node] = field(default_factory=list)    # nodes computed inside, for explain()

    @property
    def contraction(self) -> Node | None:
        """The last (outermost) contraction, whose result the epilogue reads."""
        return self.contractions[-1] if self.contractions else None

    @property
    def kind(self) -> str:
        if not self.contractions:
            return "elementwise"
        return "matmul" if self.contractions[0].op == Op.MATMUL else "reduce"

    @property
    def row_loop(self) -> bool:
        """Whether the outputs have the reduced values' full shape: the kernel then
        ends with a loop over each row that writes every element (softmax)."""
        first = self.contractions[0] if self.contractions else None
        return (first is not None and first.op != Op.MATMUL
                and self.roots[0].shape == first.srcs[0].shape)


def graph_order(targets: list[Node]) -> list[Node]:
    """Every node reachable from targets (stopping at inputs), sources first."""
    return topological_order(targets, stop=is_input)


def _consumers(order: list[Node]) -> dict[int, set[int]]:
    consumers: dict[int, set[int]] = {id(node): set() for node in order}
    for node in order:
        if not is_input(node):
            for src in node.srcs:
                consumers[id(src)].add(id(node))
    return consumers


def _is_cheap(node: Node) -> bool:
    """Worth recomputing in every kernel that reads it rather than storing."""
    return node.op == Op.CONST or node.op in MOVEMENT


def _grow_kernel(root: Node, materialized: set[int], consumers) -> tuple[KernelSpec, Node | None]:
    """Collect the nodes computed inside root's kernel. Returns the spec, or a
    contraction that cannot be fused here (the caller materializes it and retries).

    Each path from the root carries two facts: `in_order` (only elementwise ops and
    reshapes so far: element o of the node is element o of the root) and `zeroed`
    (only elementwise ops and expands so far: the node is read at the root's
    coordinates with these dims set to 0; None once anything else intervenes). A
    reduction read with zeroed dims among its own axes is read at its row: it
    can run as a phase of this kernel."""
    spec = KernelSpec([root])
    visited: set[tuple] = set()
    member_ids: set[int] = set()
    parent_of: dict[int, Node | None] = {}
    stack: list[tuple[Node, bool, frozenset | None, Node | None]] = [
        (root, True, frozenset(), None)]
    while stack:
        node, in_order, zeroed, parent = stack.pop()
        if (id(node), in_order, zeroed) in visited:
            continue
        visited.add((id(node), in_order, zeroed))
        parent_of.setdefault(id(node), parent)
        if node is not root and (is_input(node) or id(node) in materialized):
            continue
        if id(node) not in member_ids:
            member_ids.add(id(node))
            spec.members.append(node)
        if node.op in CONTRACTIONS:
            if not _can_hold(spec, node, root, in_order, zeroed, consumers):
                return spec, _best_cut(node, root, parent_of, consumers)
            if node not in spec.contractions:
                spec.contractions.append(node)
            under: frozenset | None = frozenset() if node.op != Op.MATMUL else None
            for src in node.srcs:
                stack.append((src, False, under, node))
            continue
        if node.op in ELEMENTWISE:
            next_order, next_zeroed = in_order, zeroed
        elif node.op == Op.RESHAPE:
            next_order, next_zeroed = in_order, None
        elif node.op == Op.EXPAND and zeroed is not None:
            grown = {axis for axis, (before, after) in enumerate(zip(node.srcs[0].shape, node.shape))
                     if before != after}
            next_order, next_zeroed = False, zeroed | grown
        else:
            next_order, next_zeroed = False, None
        for src in node.srcs:
            stack.append((src, next_order, next_zeroed, node))
    spec.contractions = _sources_first(spec.contractions)
    return spec, None


def _can_hold(spec: KernelSpec, node: Node, root: Node, in_order: bool, zeroed, consumers) -> bool:
    """Whether the kernel can compute contraction node, reached along a path with
    these facts: as its epilogue's source (read element by element), or as a
    phase of a row kernel (read at its row, and like the kernel's other reductions)."""
    held = spec.contractions
    if node not in held and len(held) >= MAX_ROW_PHASES:
        return False                         # each phase recomputes what came before it
    if node.op == Op.MATMUL or (held and held[0].op == Op.MATMUL):
        single_use = node is root or len(consumers[id(node)]) == 1
        return in_order and single_use and (not held or held == [node])
    if node in held:
        return in_order or (zeroed is not None and zeroed <= set(node.arg))
    if not held:
        if in_order and (node is root or len(consumers[id(node)]) == 1):
            return True                      # the classic reduction with an epilogue
        return (node.op in (Op.SUM, Op.MAX) and zeroed is not None
                and zeroed <= set(node.arg) and root.shape == node.srcs[0].shape)
    first = held[0]
    return (node.op in (Op.SUM, Op.MAX) and first.op in (Op.SUM, Op.MAX)
            and node.arg == first.arg and node.srcs[0].shape == first.srcs[0].shape
            and (in_order or (zeroed is not None and zeroed <= set(node.arg))))


def _sources_first(contractions: list[Node]) -> list[Node]:
    """Order reductions so that each runs after every reduction it reads."""
    if len(contractions) < 2:
        return contractions
    wanted = {id(c) for c in contractions}
    ordered: list[Node] = []
    for node in graph_order(contractions):
        if id(node) in wanted:
            ordered.append(node)
    return ordered


def _keeps_order(node: Node) -> bool:
    return node.op in ELEMENTWISE or node.op == Op.RESHAPE


def _best_cut(blocked: Node, root: Node, parent_of, consumers) -> Node:
    """Where to store a contraction this kernel cannot hold: as high up its chain
    of single-consumer elementwise consumers as possible, so that chain becomes
    the contraction's epilogue in a kernel of its own."""
    cut = blocked
    while True:
        parent = parent_of.get(id(cut))
        if (parent is None or parent is root or not _keeps_order(parent)
                or len(consumers[id(cut)]) != 1):
            return cut
        cut = parent


def schedule(targets: list[Node]) -> list[KernelSpec]:
    """The kernels that compute targets, in an order that respects dependencies."""
    return _Scheduler(targets).run()


class _Scheduler:
    """Grows a kernel from each stored node, consumers first. When a value must be
    stored after all (a contraction a kernel cannot hold, or a value two kernels would
    both compute), only the kernels that held it are grown again, so planning stays
    about linear in the size of the graph."""

    def __init__(self, targets: list[Node]):
        self.targets = [t for t in dict.fromkeys(targets) if not is_input(t)]
        self.order = graph_order(self.targets)
        self.consumers = _consumers(self.order)
        self.materialized = {id(t) for t in self.targets}
        self.specs: list[KernelSpec] = []
        self.owner: dict[int, int] = {}      # node id -> index of the kernel computing it

    def run(self) -> list[KernelSpec]:
        for node in reversed(self.order):    # consumers before producers
            if id(node) not in self.materialized:
                continue
            index = len(self.specs)
            self.specs.append(KernelSpec([node]))
            while True:
                spec = self._grow(node)
                shared = [member for member in spec.members if _tracked(member)
                          and self.owner.get(id(member), index) != index]
                if not shared:
                    break
                for member in shared:        # two kernels need it: store it once
                    self._materialize(member)
            self._claim(index, spec)
        specs = list(reversed(self.specs))   # producers first
        return merge_elementwise(specs)

    def _grow(self, root: Node) -> KernelSpec:
        while True:
            spec, blocked = _grow_kernel(root, self.materialized, self.consumers)
            if blocked is None:
                return spec
            self._materialize(blocked)

    def _materialize(self, node: Node) -> None:
        self.materialized.add(id(node))
        holder = self.owner.pop(id(node), None)
        if holder is not None:               # that kernel now reads it instead
            old = self.specs[holder]
            for member in old.members:
                if self.owner.get(id(member)) == holder:
                    del self.owner[id(member)]
            self._claim(holder, self._grow(old.roots[0]))

    def _claim(self, index: int, spec: KernelSpec) -> None:
        self.specs[index] = spec
        for member in spec.members:
            if _tracked(member):
                self.owner[id(member)] = index


def _tracked(node: Node) -> bool:
    """Values whose kernel we remember: all but the cheap ones, recomputed freely."""
    return not _is_cheap(node) or node.op in CONTRACTIONS


def _reads_contractions_in_order(spec: KernelSpec, group_members: set[int],
                                 contractions: list[Node]) -> bool:
    """Whether every path from spec's roots to the contractions keeps element order,
    so spec's element o needs exactly the accumulators of output element o."""
    own = {id(member) for member in spec.members}
    stack = [(root, True) for root in spec.roots]
    seen: set[tuple[int, bool]] = set()
    while stack:
        node, in_order = stack.pop()
        if (id(node), in_order) in seen:
            continue
        seen.add((id(node), in_order))
        if node in contractions:
            if not in_order:
                return False
            continue
        if id(node) in own or id(node) in group_members:
            for src in node.srcs:
                stack.append((src, in_order and _keeps_order(node)))
    return True


def merge_elementwise(specs: list[KernelSpec]) -> list[KernelSpec]:
    """Fuse elementwise kernels into earlier kernels over the same number of output
    elements, giving kernels of several outputs (an optimizer step updates each
    parameter and its state in one pass, in the epilogue of the matmul or reduction
    that made its gradient). A kernel joins a group only if nothing scheduled since
    the group's first kernel reads the group's results, so running the group at its
    last member's place keeps every dependency in order; and it joins a contraction's
    group only if it reads the contraction's result element by element. Values one
    member computes and another reads are computed once, inline."""
    owner = {id(root): index for index, spec in enumerate(specs) for root in spec.roots}
    depends: list[set[int]] = []
    for index, spec in enumerate(specs):
        direct = {owner[id(src)] for member in spec.members for src in member.srcs
                  if id(src) in owner and owner[id(src)] != index}
        transitive = set(direct)
        for dependency in direct:
            transitive |= depends[dependency]
        depends.append(transitive)
    groups: list[list[int]] = []
    group_members: list[set[int]] = []
    for index, spec in enumerate(specs):
        joined = False
        if spec.kind == "elementwise":
            for group, members in zip(groups, group_members):
                first = specs[group[0]]
                if first.roots[0].numel != spec.roots[0].numel:
                    continue
                in_group = set(group)
                if any(depends[other] & in_group for other in range(group[0], index)
                       if other not in in_group):
                    continue
                if first.row_loop:
                    continue
                if first.contractions and not _reads_contractions_in_order(
                        spec, members, first.contractions):
                    continue
                group.append(index)
                members.update(id(member) for member in spec.members)
                joined = True
                break
        if not joined:
            groups.append([index])
            group_members.append({id(member) for member in spec.members})
    merged = []
    for group in sorted(groups, key=lambda g: g[-1]):
        if len(group) == 1:
            merged.append(specs[group[0]])
            continue
        first = specs[group[0]]
        spec = KernelSpec([root for i in group for root in specs[i].roots],
                          list(first.contractions))
        seen: set[int] = set()
        for i in group:
            for member in specs[i].members:
                if id(member) not in seen:
                    seen.add(id(member))
                    spec.members.append(member)
        merged.append(spec)
    return merged
