"""Reverse-mode differentiation of the lazy graph, symbolically.

`gradients(output, wrt, seed)` walks the graph from `output` back to the nodes
in `wrt`, applying each op's rule from ir/ops.py, and returns lazy gradient
nodes. Only nodes on a path to some `wrt` node are visited, and a node used
several times gets the sum of its consumers' contributions (diamonds and
reuse are exact).
"""
from __future__ import annotations

from cudagrad.ir.node import Node, Op
from cudagrad.ir.ops import GRAD_RULES, add, cast


def _topological_order(output: Node) -> list[Node]:
    order: list[Node] = []
    seen: set[int] = set()
    stack = [(output, False)]
    while stack:
        node, sources_done = stack.pop()
        if sources_done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for src in node.srcs:
            if id(src) not in seen:
                stack.append((src, False))
    return order


def gradients(output: Node, wrt: list[Node], seed: Node) -> list[Node | None]:
    """d output / d node for each node in wrt (None where it does not depend on it)."""
    order = _topological_order(output)
    targets = {id(node) for node in wrt}
    leads_to_target: dict[int, bool] = {}
    for node in order:   # sources come before consumers
        leads_to_target[id(node)] = id(node) in targets or (
            node.op != Op.DETACH and any(leads_to_target[id(s)] for s in node.srcs))

    grads: dict[int, Node] = {id(output): seed}
    for node in reversed(order):
        grad = grads.get(id(node))
        if grad is None or id(node) in targets and not node.srcs:
            continue
        if not any(leads_to_target[id(s)] for s in node.srcs):
            continue
        rule = GRAD_RULES[node.op]
        for src, src_grad in zip(node.srcs, rule(node, grad, *node.srcs)):
            if src_grad is None or not leads_to_target[id(src)]:
                continue
            src_grad = cast(src_grad, src.dtype)
            previous = grads.get(id(src))
            grads[id(src)] = src_grad if previous is None else add(previous, src_grad)
    return [grads.get(id(node)) for node in wrt]
