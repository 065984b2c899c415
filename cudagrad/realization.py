"""Realization: from target nodes to launched kernels.

The first time a graph *shape* is seen, it is scheduled, lowered, rendered and
compiled, and the result is kept as a Plan: kernels plus, for each, which
numbered graph nodes it reads and writes. The key is the graph's structure
with the inputs' data left out, so the next training step (same graph, new
data) costs one walk over the graph, a dictionary look-up and the launches.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cudagrad import capture as _capture
from cudagrad.device import get_device
from cudagrad.environment import getenv, is_set
from cudagrad.ir.node import Node, Op
from cudagrad.replay import compile_replay
from cudagrad.runtime.stats import STATS

if TYPE_CHECKING:     # codegen is imported on the first plan: `import cudagrad` stays fast
    from cudagrad.codegen.kernel import Kernel
    from cudagrad.codegen.schedule import KernelSpec

_PLANS: dict = {}
_plan_lock = threading.Lock()


def _is_input(node: Node) -> bool:
    return node.realized is not None or node.op == Op.BUFFER


def input_buffer(node: Node):
    return node.realized if node.realized is not None else node.arg.buffer


_BUFFER, _CONST = Op.BUFFER, Op.CONST
_CAPTURING = _capture.ACTIVE


class _TooDeep(Exception):
    pass


class _TooMany(Exception):
    pass


# The recursive walk is 40% faster than the stack-based one; deeper graphs than
# this take the latter (each level is a Python frame).
_RECURSIVE_DEPTH = 150


def canonicalize(targets: list[Node], limit: int = 0) -> Any:
    """A structural key of the graph under targets and its nodes, numbered in a
    fixed order (sources before consumers). Inputs enter the key by shape and
    dtype only. This walk runs on every realize: keep it lean.
    With a limit, None as soon as the graph has more nodes than that."""
    numbering: dict[int, int] = {}
    nodes: list[Node] = []
    key: list = []
    add_node = nodes.append
    add_key = key.append

    def visit(node: Node, depth: int) -> int:
        node_id = id(node)
        number = numbering.get(node_id)
        if number is not None:
            return number
        if node.realized is not None or node.op is _BUFFER:      # an input
            number = numbering[node_id] = len(nodes)
            add_node(node)
            add_key((node.shape, node.dtype))
            return number
        if depth > _RECURSIVE_DEPTH:
            raise _TooDeep
        srcs = node.srcs
        if len(srcs) == 1:
            numbers: Any = visit(srcs[0], depth + 1)
        elif len(srcs) == 2:
            numbers = (visit(srcs[0], depth + 1), visit(srcs[1], depth + 1))
        else:
            numbers = tuple([visit(src, depth + 1) for src in srcs])
        if limit and len(nodes) >= limit:
            raise _TooMany
        number = numbering[node_id] = len(nodes)
        add_node(node)
        op = node.op
        # a constant's value is baked into the kernel: repr tells 1 from 1.0, -0.0 from 0.0
        # and lets nan find its plan again (nan != nan)
        add_key((op, repr(node.arg) if op is _CONST else node.arg, numbers, node.shape, node.dtype))
        return number

    try:
        add_key(tuple([visit(target, 0) for target in targets]))
    except _TooMany:
        return None
    except (_TooDeep, RecursionError):
        return _canonicalize_deep(targets, limit)
    finally:
        visit = None    # type: ignore[assignment]  # it refers to itself through its closure: a cycle
    return tuple(key), nodes


def _canonicalize_deep(targets: list[Node], limit: int = 0) -> Any:
    """canonicalize for graphs of any depth: the same walk with a stack of its own."""
    numbering: dict[int, int] = {}
    nodes: list[Node] = []
    key: list = []
    for target in targets:
        if id(target) in numbering:
            continue
        stack = [target]
        while stack:
            node = stack[-1]
            node_id = id(node)
            if node_id in numbering:
                stack.pop()
                continue
            if node.realized is not None or node.op is _BUFFER:      # an input
                stack.pop()
                numbering[node_id] = len(nodes)
                nodes.append(node)
                key.append((node.shape, node.dtype))
                continue
            srcs = node.srcs
            first_pushed = 0
            for src in srcs:
                if id(src) not in numbering:
                    if not first_pushed:
                        first_pushed = len(stack)
                    stack.append(src)
            if first_pushed:
                if len(stack) - first_pushed > 1:        # visit the sources in their order
                    stack[first_pushed:] = stack[:first_pushed - 1:-1]
                continue
            stack.pop()
            if limit and len(nodes) >= limit:
                return None
            numbering[node_id] = len(nodes)
            nodes.append(node)
            op = node.op
            numbers: Any
            if len(srcs) == 1:
                numbers = numbering[id(srcs[0])]
            elif len(srcs) == 2:
                numbers = (numbering[id(srcs[0])], numbering[id(srcs[1])])
            else:
                numbers = tuple([numbering[id(src)] for src in srcs])
            # a constant's value is baked into the kernel: repr tells 1 from 1.0, -0.0 from 0.0
            # and lets nan find its plan again (nan != nan)
            key.append((op, repr(node.arg) if op is _CONST else node.arg, numbers, node.shape,
                        node.dtype))
    key.append(tuple([numbering[id(target)] for target in targets]))
    return tuple(key), nodes


@dataclass
class Step:
    """One kernel launch of a plan: the program, and node numbers of its outputs and inputs.
    It holds no node: a cached plan must not keep the first graph (and its buffers) alive."""
    kernel: Kernel
    program: Any
    outputs: tuple[int, ...]
    inputs: tuple[int, ...]
    output_bytes: tuple[int, ...] = ()     # the size of each output's buffer


@dataclass
class Plan:
    device: Any
    steps: list[Step]
    replay: Any = None       # straight-line Python running the steps (see replay.py)


def plan_kernels(targets: list[Node], device_name: str) -> list[tuple[KernelSpec, Kernel, list[Node]]]:
    """Schedule, lower and render, without compiling: (spec, Kernel, input nodes) per kernel."""
    from cudagrad.codegen.dialect import DIALECTS
    from cudagrad.codegen.lower import lower
    from cudagrad.codegen.render import render
    from cudagrad.codegen.schedule import schedule
    dialect = DIALECTS[device_name]
    result = []
    for spec in schedule(targets):
        lowered, input_nodes = lower(spec, dialect)
        result.append((spec, render(lowered, dialect, device_name), input_nodes))
    return result


def _build_plan(targets: list[Node], nodes: list[Node], device_name: str) -> Plan:
    device = get_device(device_name)
    number = {id(node): index for index, node in enumerate(nodes)}
    planned = plan_kernels(targets, device_name)
    compiled_before = STATS["kernels_compiled"]
    kernels = [kernel for _, kernel, _ in planned]
    # a cold cache with many kernels takes seconds: say so on a terminal (CUDAGRAD_QUIET=1 silences)
    quiet = os.environ.get("CUDAGRAD_QUIET", "0").strip() not in ("", "0")
    show_progress = len(kernels) > 8 and sys.stderr.isatty() and not quiet
    done = [0]
    progress_lock = threading.Lock()

    def compile_one(kernel):
        program = device.compile(kernel)
        if show_progress:
            with progress_lock:
                done[0] += 1
                if STATS["kernels_compiled"] > compiled_before:    # cache hits need no progress
                    end = "\n" if done[0] == len(kernels) else ""
                    print(f"\rcudagrad: compiling kernels {done[0]}/{len(kernels)}", end=end,
                          file=sys.stderr, flush=True)
        return program
    if len(kernels) > 1:
        # independent compiles overlap: the C compiler and NVRTC release the GIL
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=min(8, len(kernels))) as pool:
            programs = list(pool.map(compile_one, kernels))
    else:
        programs = [compile_one(kernel) for kernel in kernels]
    if os.environ.get("CUDAGRAD_DEBUG", "0") >= "2" and STATS["kernels_compiled"] > compiled_before:
        for kernel in kernels:
            print(f"[cudagrad] kernel {kernel.name} ({kernel.device}):\n{kernel.source}",
                  file=sys.stderr, flush=True)
    steps = [Step(kernel, program, tuple(number[id(root)] for root in spec.roots),
                  tuple(number[id(node)] for node in input_nodes),
                  tuple(root.numel * root.dtype.itemsize for root in spec.roots))
             for (spec, kernel, input_nodes), program in zip(planned, programs)]
    plan = Plan(device, steps)
    plan.replay = compile_replay(plan)
    return plan


def realize_nodes(targets: list[Node]) -> None:
    """Compute every target node that holds no buffer yet, in one schedule per device."""
    if len(targets) == 1:         # the common case, without the grouping
        node = targets[0]
        if node.realized is None and node.op is not _BUFFER:
            realize_node(node)
        return
    by_device: dict[str, list[Node]] = {}
    for node in dict.fromkeys(targets):
        if not _is_input(node):
            by_device.setdefault(node.device, []).append(node)
    for device_name, group in by_device.items():
        key, nodes = canonicalize(group)
        plan = _PLANS.get((device_name, key))
        if plan is None:
            plan = plan_for(key, nodes, group, device_name)
        run_plan(plan, nodes)


def realize_node(node: Node) -> None:
    """realize_nodes([node]) for a node not computed yet: the hot path of reading a result."""
    key, nodes = canonicalize([node])
    plan = _PLANS.get((node.device, key))
    if plan is None:
        plan = plan_for(key, nodes, [node], node.device)
    run_plan(plan, nodes)


def plan_for(key: tuple, nodes: list[Node], targets: list[Node], device_name: str) -> Plan:
    """The plan of a graph with this structural key, built the first time it is asked."""
    plan_key = (device_name, key)
    plan = _PLANS.get(plan_key)
    if plan is None:
        with _plan_lock:
            plan = _PLANS.get(plan_key)
            if plan is None:
                plan = _build_plan(targets, nodes, device_name)
                _PLANS[plan_key] = plan
    return plan


def run_plan(plan: Plan, nodes: list) -> None:
    """Launch a plan's kernels on the buffers of nodes (numbered as its key numbered them)."""
    if _CAPTURING[0] is not None:
        capture = _capture.current()
        if capture is not None:     # cg.jit records the launches (jit.py)
            capture.run(plan, nodes)
            return
    if not _debugging():
        plan.replay(nodes)
    else:
        _run_logged(plan, nodes)


def _debugging() -> bool:
    # is_set first: an unset variable (nearly always) costs a dictionary look-up, no decoding
    return is_set("CUDAGRAD_DEBUG") and getenv("CUDAGRAD_DEBUG", "0") >= "1"  # type: ignore[operator]


def _run_logged(plan: Plan, nodes: list[Node]) -> None:
    """The steps one by one, each timed and logged (CUDAGRAD_DEBUG=1)."""
    device = plan.device
    allocate = device.allocate
    debug = True
    buffers: dict[int, Any] = {}
    for step in plan.steps:
        args = []
        for index, nbytes in zip(step.outputs, step.output_bytes):
            buffer = allocate(nbytes)
            buffers[index] = buffer
            args.append(buffer)
        for index in step.inputs:
            buffer = buffers.get(index)
            if buffer is None:
                node = nodes[index]
                buffer = node.realized if node.realized is not None else node.arg.buffer
            args.append(buffer)
        if debug:
            device.synchronize()
            start = time.perf_counter()
        device.launch(step.program, args)
        if debug:
            device.synchronize()
            elapsed = (time.perf_counter() - start) * 1e6
            moved = sum(buffer.nbytes for buffer in args)
            print(f"[cudagrad] launch {step.kernel.name} on {device.name}: {elapsed:.1f} us, "
                  f"{moved} bytes", file=sys.stderr, flush=True)
    for index, buffer in buffers.items():
        nodes[index].realized = buffer


def plan_all(targets: list[Node]) -> list[tuple[KernelSpec, Kernel, list[Node]]]:
    """plan_kernels for targets on any mix of devices: (spec, Kernel, input nodes) per
    kernel, without compiling or running anything."""
    pending = [node for node in dict.fromkeys(targets) if not _is_input(node)]
    planned: list[tuple[KernelSpec, Kernel, list[Node]]] = []
    for device_name in dict.fromkeys(node.device for node in pending):
        group = [node for node in pending if node.device == device_name]
        planned.extend(plan_kernels(group, device_name))
    return planned


def kernels_for(targets: list[Node]) -> list[Kernel]:
    """The kernels realizing targets would run, in order, without running them."""
    return [kernel for _, kernel, _ in plan_all(targets)]
