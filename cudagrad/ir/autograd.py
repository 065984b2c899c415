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


def topological_order(roots, stop=None) -> list[Node]:
    """The nodes under roots (a node or a list), sources before consumers, each once;
    a node for which stop(node) is true is listed but its sources are not walked."""
    order: list[Node] = []
    done: set[int] = set()
    expanded: set[int] = set()
    stack = list(roots) if isinstance(roots, (list, tuple)) else [roots]
    stack.reverse()
    while stack:
        node = stack[-1]
        node_id = id(node)
        if node_id in done:
            stack.pop()
            continue
        if node.srcs and node_id not in expanded and not (stop is not None and stop(node)):
            expanded.add(node_id)
            for src in node.srcs:
                if id(src) not in done:
                    stack.append(src)
            continue
        stack.pop()
        done.add(node_id)
        order.append(node)
    return order


def gradients(output: Node, wrt: list[Node], seed: Node,
              order: list[Node] | None = None) -> list[Node | None]:
    """d output / d node for each node in wrt (None where it does not depend on it).
    order: topological_order(output), when the caller has it already."""
    if order is None:
        order = topological_order(output)
    targets = {id(node) for node in wrt}
    leads_to_target: set[int] = set()
    for node in order:   # sources come before consumers
        node_id = id(node)
        if node_id in targets:
            leads_to_target.add(node_id)
        elif node.op is not Op.DETACH:
            for src in node.srcs:
                if id(src) in leads_to_target:
                    leads_to_target.add(node_id)
                    break

    grads: dict[int, Node] = {id(output): seed}
    for node in reversed(order):
        grad = grads.get(id(node))
        srcs = node.srcs
        if grad is None or not srcs:
            continue
        for src in srcs:
            if id(src) in leads_to_target:
                break
        else:
            continue       # no gradient flows below this node
        rule = GRAD_RULES[node.op]
        for src, src_grad in zip(srcs, rule(node, grad, *srcs)):
            if src_grad is None or id(src) not in leads_to_target:
                continue
            src_grad = cast(src_grad, src.dtype)
            previous = grads.get(id(src))
            grads[id(src)] = src_grad if previous is None else add(previous, src_grad)
    return [grads.get(id(node)) for node in wrt]
