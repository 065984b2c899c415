"""cg.draw: a picture of the lazy graph, each kernel a boxed cluster of the ops it fuses.

The picture is Graphviz DOT text. `.dot` (or `.gv`) files are written as is;
`.svg`, `.png` and `.pdf` are drawn by Graphviz's `dot` program. Without Graphviz
the DOT file is written beside the requested path and a warning says so.

What the picture shows:
- one cluster per kernel, in the order `t.kernels()` lists them, labelled with
  the kernel's name and kind; nodes a kernel stores (writes to memory) have a
  double border, edges between clusters are values passed through memory;
- inputs (leaf tensors) are grey boxes, already realized buffers grey dashed boxes;
- gradient ops (nodes not under any of the `forward` tensors) are orange,
  forward ops blue, and the ops of an assigned update (an optimizer step)
  green. A cheap node (a constant or a view) recomputed by several kernels
  is drawn once in each.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cudagrad.codegen.schedule import graph_order, is_input
from cudagrad.ir.node import Node, Op

if TYPE_CHECKING:
    from cudagrad.tensor import Tensor

RENDERED_FORMATS = ("svg", "png", "pdf")
FORWARD_COLOUR = "#dbe9f6"      # light blue
GRADIENT_COLOUR = "#fde0c5"     # light orange
UPDATE_COLOUR = "#d9f0d3"       # light green
INPUT_COLOUR = "#d9d9d9"        # grey
REALIZED_COLOUR = "#eeeeee"


class GraphvizMissing(RuntimeWarning):
    """Graphviz's `dot` program is not installed: only the DOT text was written."""


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _shape_text(node: Node) -> str:
    return "[" + ", ".join(str(d) for d in node.shape) + "]"


def _arg_text(node: Node) -> str:
    arg = node.arg
    if arg is None or node.op in (Op.BUFFER, Op.CAST):
        return ""
    if node.op == Op.CONST:
        return f" {arg:g}" if isinstance(arg, float) else f" {arg}"
    if node.op in (Op.SUM, Op.MAX, Op.ARGMAX):
        return " axes " + ",".join(str(a) for a in arg)
    if node.op == Op.PERMUTE:
        return " " + ",".join(str(a) for a in arg)
    if node.op in (Op.RESHAPE, Op.EXPAND):
        return ""      # the new shape is the node's shape, shown anyway
    text = str(arg)
    return " " + (text if len(text) <= 24 else text[:21] + "...")


def _op_label(node: Node) -> str:
    name = node.op.name.lower()
    if node.op == Op.CAST:
        name = f"cast {node.dtype.name}"
    dtype = "" if node.op == Op.CAST or node.dtype.name == "float32" else f" {node.dtype.name}"
    return f"{name}{_arg_text(node)}\n{_shape_text(node)}{dtype}"


def _targets_of(tensors: Sequence[Tensor]) -> list[Node]:
    from cudagrad.tensor import Tensor
    targets = []
    for tensor in tensors:
        if not isinstance(tensor, Tensor):
            raise TypeError(f"draw: expected tensors, got {type(tensor).__name__}")
        targets.append(tensor._pending if tensor._pending is not None else tensor.node)
    return targets


def _gradient_nodes() -> list[Node]:
    """The nodes that are some leaf's accumulated gradient."""
    from cudagrad.tensor import leaves_with_gradients
    result = []
    for owner in leaves_with_gradients():
        gradient = owner.grad_tensor
        if gradient is not None:
            result.append(gradient._pending if gradient._pending is not None else gradient.node)
    return result


def _gradient_tensors() -> set[int]:
    return {id(node) for node in _gradient_nodes()}


def to_dot(tensors: Sequence[Tensor], forward: Sequence[Tensor] | None = None,
           names: Mapping[str, Tensor] | None = None, title: str | None = None) -> str:
    """The DOT text of the lazy graph under tensors (see the module docstring)."""
    from cudagrad import realization
    targets = _targets_of(tensors)
    if forward is None:
        # realizing a loss together with gradients: the non-gradient targets are the forward pass
        # (an assigned update, as an optimizer step makes, is not forward either)
        gradients = _gradient_tensors()
        forward_targets = [tensor.node for tensor in tensors
                           if tensor._pending is None and id(tensor.node) not in gradients]
        if len(forward_targets) == len(targets):
            forward_targets = []      # nothing says which part is the gradient
    else:
        forward_targets = _targets_of(forward)
    forward_ids = {id(node) for node in graph_order(forward_targets)} if forward_targets else None
    # with assigned updates (an optimizer step) in the picture, ops that are neither forward
    # nor under a leaf's gradient are the update itself
    update_ids: set[int] = set()
    if forward_ids is not None and any(tensor._pending is not None for tensor in tensors):
        gradient_ids = {id(node) for node in graph_order(_gradient_nodes())}
        update_ids = {id(node) for node in graph_order(targets)
                      if id(node) not in forward_ids and id(node) not in gradient_ids}

    pending = [node for node in dict.fromkeys(targets) if not is_input(node)]
    order = graph_order(list(dict.fromkeys(targets)))
    number = {id(node): index for index, node in enumerate(order)}
    given_names: dict[int, str] = {}
    for name, tensor in (names or {}).items():
        given_names[id(tensor.node)] = name
        if tensor._pending is not None:                  # an assigned update: the new value
            given_names.setdefault(id(tensor._pending), f"new {name}")
        if tensor.grad_tensor is not None:
            given_names.setdefault(id(tensor.grad_tensor.node), f"{name}.grad")
    planned = realization.plan_all(pending)

    def fill(node: Node) -> str:
        if id(node) in update_ids:
            return UPDATE_COLOUR
        if forward_ids is not None and id(node) not in forward_ids:
            return GRADIENT_COLOUR
        return FORWARD_COLOUR

    lines = ["digraph cudagrad {",
             "  rankdir=TB;",
             '  graph [fontname="Helvetica", fontsize=11, newrank=true];',
             '  node [fontname="Helvetica", fontsize=10, style="rounded,filled", shape=box];',
             '  edge [color="#555555", arrowsize=0.6];']
    legend = ("grey box: input; dashed: realized earlier; double border: written to memory; "
              "bold arrow: read from memory")
    if forward_ids is not None:
        legend = ("blue: forward op; orange: gradient op; " + ("green: update op; " if update_ids else "")
                  + legend)
    lines.append(f"  label={_quote((title + chr(10) if title else '') + legend)}; labelloc=b;")

    # inputs: leaves and buffers realized earlier, outside every kernel
    for node in order:
        if not is_input(node):
            continue
        given = given_names.get(id(node))
        if node.op == Op.BUFFER:
            head = given or "input"
            style = f'style="filled", fillcolor="{INPUT_COLOUR}"'
        else:
            head = given or f"realized {node.op.name.lower()}"
            style = f'style="filled,dashed", fillcolor="{REALIZED_COLOUR}"'
        dtype = "" if node.dtype.name == "float32" else f" {node.dtype.name}"
        label = f"{head}\n{_shape_text(node)}{dtype}"
        lines.append(f"  n{number[id(node)]} [label={_quote(label)}, shape=box, {style}];")

    # where each stored value lives: the cluster of the kernel that writes it
    home: dict[int, str] = {id(node): f"n{number[id(node)]}" for node in order if is_input(node)}
    for index, (spec, _, _) in enumerate(planned):
        for root in spec.roots:
            home[id(root)] = f"k{index}_n{number[id(root)]}"

    edges: list[str] = []
    for index, (spec, kernel, _) in enumerate(planned):
        members = {id(member) for member in spec.members}
        roots = {id(root) for root in spec.roots}
        lines.append(f"  subgraph cluster_{index} {{")
        lines.append(f"    label={_quote(f'kernel {index}: {kernel.name} ({spec.kind})')};")
        lines.append('    labelloc=t; style="rounded"; color="#3b6ea5"; fontcolor="#1f3b57";')
        for member in sorted(spec.members, key=lambda node: number[id(node)]):
            node_id = f"k{index}_n{number[id(member)]}"
            label = _op_label(member)
            if id(member) in given_names:
                label = f"{given_names[id(member)]} = {label}"
            extra = ", peripheries=2" if id(member) in roots else ""
            lines.append(f"    {node_id} [label={_quote(label)}, fillcolor=\"{fill(member)}\"{extra}];")
            for src in member.srcs:
                if id(src) in members:       # computed in this kernel, in registers
                    edges.append(f"  k{index}_n{number[id(src)]} -> {node_id};")
                else:                         # read from memory: an input or another kernel's output
                    edges.append(f"  {home[id(src)]} -> {node_id} [style=bold];")
        lines.append("  }")
    lines.extend(dict.fromkeys(edges))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _render(dot_text: str, path: Path, fmt: str) -> None:
    import shutil
    import subprocess
    program = shutil.which("dot")
    if program is None:
        dot_path = path.with_suffix(".dot")
        dot_path.write_text(dot_text)
        warnings.warn(f"cudagrad.draw: Graphviz is not installed (no `dot` program on PATH), so "
                      f"{path.name} was not drawn; wrote the graph as DOT text to {dot_path} "
                      "instead. Install Graphviz (e.g. `apt-get install graphviz`, "
                      "`brew install graphviz`) to get pictures.", GraphvizMissing, stacklevel=3)
        return
    result = subprocess.run([program, f"-T{fmt}", "-o", os.fspath(path)], input=dot_text.encode(),
                            capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"cudagrad.draw: Graphviz's dot failed on {path}: "
                           f"{result.stderr.decode(errors='replace').strip()}")


def draw_many(tensors: Sequence[Tensor], path: str | os.PathLike[str] | None = None, *,
              forward: Sequence[Tensor] | None = None, names: Mapping[str, Tensor] | None = None,
              title: str | None = None) -> str:
    """Draw the kernels that realizing all of tensors together would run (as `cg.realize`
    does), e.g. a loss and its gradients. Returns the DOT text; writes `path` if given:
    `.dot`/`.gv` as text, `.svg`/`.png`/`.pdf` through Graphviz.

    forward: the tensors of the forward pass; ops not under them are drawn as gradient
    ops. By default, those of `tensors` that are not some leaf's gradient.
    names: labels for tensors, e.g. {"x": x, "w": w}.
    Nothing is realized."""
    dot_text = to_dot(list(tensors), forward=forward, names=names, title=title)
    if path is not None:
        target = Path(path)
        fmt = target.suffix.lstrip(".").lower()
        if fmt in ("dot", "gv", ""):
            target.write_text(dot_text)
        elif fmt in RENDERED_FORMATS:
            _render(dot_text, target, fmt)
        else:
            raise ValueError(f"draw: cannot write {target.name}: use a .dot, .gv, .svg, .png "
                             "or .pdf file name")
    return dot_text


def draw(t: Tensor, path: str | os.PathLike[str] | None = None, *,
         forward: Sequence[Tensor] | Tensor | None = None,
         names: Mapping[str, Tensor] | None = None, title: str | None = None) -> str:
    """Draw the lazy graph under t with one cluster per kernel of `t.kernels()`.
    See draw_many for the arguments; `forward` may be one tensor or a list."""
    from cudagrad.tensor import Tensor
    if isinstance(forward, Tensor):
        forward = [forward]
    return draw_many([t], path, forward=forward, names=names, title=title)
