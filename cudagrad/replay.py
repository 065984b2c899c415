"""Replaying a plan: its launches as straight-line Python, generated once per plan.

A cached plan still has to fetch each input's buffer, allocate each output, launch
each kernel and hand the outputs to their nodes. Written as a loop over steps
with dictionaries, that bookkeeping cost more than the kernels of a tiny graph.
Here each plan gets a small function, generated and compiled when the plan is
built, that does exactly its work and nothing else; for the plan of `a @ b`:

    def replay(nodes):
        node_0 = nodes[0]
        in_0 = node_0.realized if node_0.realized is not None else node_0.arg.buffer
        node_1 = nodes[1]
        in_1 = node_1.realized if node_1.realized is not None else node_1.arg.buffer
        out_2 = allocate(16)
        kernel_0(out_2.ptr, in_0.ptr, in_1.ptr)      # E_matmul_2x2x2
        nodes[2].realized = out_2
        STATS["kernels_launched"] += 1

(`repr(plan.replay)` shows nothing; `plan.replay.source` holds the text.) Devices
that launch through ctypes (the cpu) get the C function called directly;
others go through device.launch, which counts its own launches.
"""
from __future__ import annotations

import ctypes
import functools
from typing import Any

from cudagrad import native
from cudagrad.runtime.stats import STATS


def replay_source(plan) -> tuple[str, dict[str, Any]]:
    """The replay function's source and the names it uses."""
    device = plan.device
    direct = hasattr(device, "c_function")     # the cpu: call the ctypes function itself
    names: dict[str, Any] = {"allocate": device.allocate, "launch": device.launch, "STATS": STATS}
    lines = ["def replay(nodes):"]
    known: dict[int, str] = {}       # node number -> the local holding its buffer
    outputs: list[int] = []
    for step_number, step in enumerate(plan.steps):
        for index in step.inputs:
            if index in known:
                continue
            lines.append(f"    node_{index} = nodes[{index}]")
            lines.append(f"    in_{index} = node_{index}.realized if node_{index}.realized is not None "
                         f"else node_{index}.arg.buffer")
            known[index] = f"in_{index}"
        for index, nbytes in zip(step.outputs, step.output_bytes):
            lines.append(f"    out_{index} = allocate({nbytes})")
            known[index] = f"out_{index}"
            outputs.append(index)
        buffers = [known[index] for index in step.outputs + step.inputs]
        if direct:
            names[f"kernel_{step_number}"] = device.c_function(step.program)
            arguments = ", ".join(f"{buffer}.ptr" for buffer in buffers)
            lines.append(f"    kernel_{step_number}({arguments})      # {step.kernel.name}")
        else:
            names[f"program_{step_number}"] = step.program
            lines.append(f"    launch(program_{step_number}, [{', '.join(buffers)}])      "
                         f"# {step.kernel.name}")
    for index in outputs:
        lines.append(f"    nodes[{index}].realized = out_{index}")
    if direct and plan.steps:
        lines.append(f'    STATS["kernels_launched"] += {len(plan.steps)}')
    if len(lines) == 1:
        lines.append("    pass")
    return "\n".join(lines) + "\n", names


def native_replay(plan, accel):
    """The same replay run by the C accelerator (cudagrad/native): a partial of its
    replay() on the plan's steps as plain data, or None where it does not apply."""
    device = plan.device
    if accel is None or not hasattr(device, "c_function"):
        return None
    steps = []
    for step in plan.steps:
        if len(step.outputs) + len(step.inputs) > MAX_NATIVE_ARGS:
            return None
        function = device.c_function(step.program)
        address = ctypes.cast(function, ctypes.c_void_p).value
        outputs = tuple(zip(step.outputs, step.output_bytes))
        # the program rides along: it keeps the shared object (and so the address) loaded
        steps.append((address, outputs, tuple(step.inputs), step.program))
    return functools.partial(accel.replay, (tuple(steps), len(plan.steps)))


MAX_NATIVE_ARGS = 16       # _accel.c's MAX_ARGS


def compile_replay(plan):
    source, names = replay_source(plan)
    replay = native_replay(plan, native.accel())
    if replay is None:
        code = compile(source, "<cudagrad replay>", "exec")
        exec(code, names)           # noqa: S102 (our own generated text, from plan data alone)
        replay = names["replay"]
    replay.source = source
    return replay
