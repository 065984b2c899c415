"""cg.explain: the lazy graph, how it was cut into kernels, and each kernel's source."""
from __future__ import annotations

from cudagrad.codegen.schedule import graph_order, is_input
from cudagrad.ir.node import Node
from cudagrad.realization import plan_all


def _label(node: Node, names: dict) -> str:
    sources = ", ".join(names[id(s)] for s in node.srcs)
    arg = "" if node.arg is None or is_input(node) else f" {node.arg}"
    kind = "input" if is_input(node) else node.op.name.lower()
    return f"{names[id(node)]} = {kind}{arg}({sources}) -> {list(node.shape)} {node.dtype.name}"


def explain_nodes(targets: list[Node]) -> str:
    pending = [t for t in targets if not is_input(t)]
    lines = []
    order = graph_order(pending)
    names = {id(node): f"%{i}" for i, node in enumerate(order)}
    lines.append(f"== lazy graph: {len(order)} nodes ==")
    lines.extend(_label(node, names) for node in order)
    planned = plan_all(pending)
    lines.append(f"== fused into {len(planned)} kernel(s) ==")
    for index, (spec, kernel, inputs) in enumerate(planned):
        members = ", ".join(names.get(id(m), "?") for m in reversed(spec.members))
        reads = ", ".join(names.get(id(n), "?") for n in inputs)
        writes = ", ".join(names.get(id(r), "?") for r in spec.roots)
        lines.append(f"kernel {index}: {kernel.name} [{spec.kind}] computes {members}; "
                     f"reads {reads or 'nothing'}; writes {writes}")
    for spec, kernel, _ in planned:
        lines.append(f"== {kernel.name} ({kernel.device}) ==")
        lines.append(kernel.source)
    return "\n".join(lines)
