"""cg.jit: capture a step function once, then replay its kernels without its Python.

A training step rebuilds the same graph every call: forward, gradient graph,
optimizer update, a few hundred nodes. Realizing it finds the cached plans, but
building the graph and walking it for the plans' keys is interpreted Python,
and for small layers that costs more than the kernels. cg.jit removes it:

    @cg.jit
    def train_step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

The first call runs the function as it is (plans are built and compiled). The
second runs it again while recording every kernel launch and where each
launch's buffers come from: an argument, a parameter or optimizer state
(re-read at each replay, since an update rebinds it to a new buffer), a value
an earlier launch of the call made, or a constant. From the third call on, a
generated straight-line function (`train_step.source`) launches the recorded
kernels on the new arguments, rebinds the updated tensors and returns the
results, without running train_step's body.

What a replay repeats and what it refuses (capture.py has the hooks):
- the function must compute the same graph on every call with the same argument
  shapes (as for a CUDA graph); other shapes, dtypes or Python argument values
  get a capture of their own;
- host data made inside the function (cg.tensor(...)) would be frozen at the
  captured values: it is refused, except an optimizer's per-step scalars, which
  are recomputed (Adam's bias corrections, a changed lr);
- reading values on the host inside the function (.item(), .numpy(), .data) and
  barriers are refused: pass data in as arguments and read the results; collectives
  (cg.distributed, DataParallel's gradient averaging) are recorded and run again;
- after a captured or replayed call, the parameters' .grad is None (the
  gradients live inside the step; return them to keep them).
"""
from __future__ import annotations

import functools
import threading
import weakref
from typing import Any

import numpy as np

from cudagrad import capture as hooks
from cudagrad.capture import JitError
from cudagrad.device import get_device
from cudagrad.ir.node import Op, prod
from cudagrad.runtime.stats import STATS

_BUFFER = Op.BUFFER
WARMUP_CALLS = 1       # calls run as they are before the capture (they build the plans)


def _buffer_of(node) -> Any:
    return node.realized if node.realized is not None else node.arg.buffer


class Collective:
    """A recorded collective among the launches: run(send, recv, stream=...) repeats it."""

    def __init__(self, run):
        self.run = run


class Capture:
    """The record of one call, turned into the replay function's source as it goes."""

    def __init__(self, arguments: list):
        self.host_buffers: dict[int, Any] = {}     # filled from host data during the call
        self.host_actions: list = []               # replay hooks and recomputed host values
        self.names: dict[str, Any] = {"STATS": STATS, "read_state": _read_state,
                                      "rebind": rebind, "upload": _upload,
                                      "clear_gradient": clear_gradient}
        self.local_of: dict[int, str] = {}         # id(buffer) -> the local holding it
        self.kept: list = []                       # every buffer seen: their ids stay unique
        self.state_lines: list[str] = []
        self.body: list[str] = []
        self.gradient_refs: list[str] = []         # state whose gradient a replay clears
        self.gradients: set[int] = set()           # leaves given a gradient during the call
        self.assigned: list = []                   # tensors assign()ed during the call
        self.counter = 0
        self.global_names: dict[int, str] = {}     # id(object) -> its name among the globals
        # the same record as data, for a replay on buffers of its own (static.py)
        self.launches: list = []                   # (device, program, buffer names)
        self.allocations: dict[str, int] = {}      # out name -> bytes
        self.rebinds: list = []                    # (weakref to the tensor, buffer name)
        self.state: dict[str, Any] = {}            # state name -> weakref to its tensor
        self.output_names: list[str] = []
        self.argument_bytes = [_buffer_of(tensor._node).nbytes for tensor in arguments]
        for index, tensor in enumerate(arguments):
            buffer = _buffer_of(tensor._node)
            self.kept.append(buffer)
            self.local_of.setdefault(id(buffer), f"arg_{index}")
        self.argument_count = len(arguments)

    def _new(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}_{self.counter}"

    # ---- where a buffer comes from ------------------------------------------------
    def source_of(self, buffer, node) -> str:
        name = self.local_of.get(id(buffer))
        if name is not None:
            return name
        if id(buffer) in self.host_buffers:
            raise JitError(f"cg.jit: the function reads a tensor of shape {list(node.shape)} "
                           f"({node.dtype.name}) made from host data during the call; a replay would "
                           "reuse the captured values. Pass it in as an argument, or make it outside "
                           "the function")
        owner_ref = node.arg.owner if getattr(node, "op", None) is _BUFFER else None
        owner = owner_ref() if owner_ref is not None else None
        if owner is not None and owner._node is node:
            # a parameter or optimizer state: an update rebinds it, so read it at each replay
            name = self._new("state")
            self.names[f"ref_{name}"] = self.state[name] = weakref.ref(owner)
            self.state_lines.append(f"    {name} = read_state(ref_{name})")
            if owner.requires_grad:
                self.gradient_refs.append(f"ref_{name}")
        else:
            # a value computed before the call and owned by no leaf: it can never change
            name = self._new("const")
            self.names[name] = buffer
        self.kept.append(buffer)
        self.local_of[id(buffer)] = name
        return name

    def add_host_value(self, tensor, compute) -> None:
        buffer = _buffer_of(tensor._node)
        name = self._new("host")
        self.kept.append(buffer)
        self.local_of[id(buffer)] = name
        self.host_actions.append(("value", name, compute, tensor.shape, tensor.dtype, tensor.device))

    # ---- events -------------------------------------------------------------------
    def run(self, plan, nodes: list) -> None:
        """Record a plan's launches on nodes, and run them."""
        produced = {index for step in plan.steps for index in step.outputs}
        local: dict[int, str] = {}
        for step in plan.steps:
            for index in step.inputs:
                if index not in produced and index not in local:
                    node = nodes[index]
                    local[index] = self.source_of(_buffer_of(node), node)
        plan.replay(nodes)
        device = plan.device
        direct = hasattr(device, "c_function")
        for step in plan.steps:
            for index, nbytes in zip(step.outputs, step.output_bytes):
                buffer = nodes[index].realized
                name = self._new("out")
                self.kept.append(buffer)
                self.local_of[id(buffer)] = name
                local[index] = name
                allocate = self._global(device, "device") + ".allocate"
                self.body.append(f"    {name} = {allocate}({nbytes})")
                self.allocations[name] = nbytes
            buffers = [local[index] for index in step.outputs + step.inputs]
            self.launches.append((device, step.program, buffers))
            if direct:
                kernel = self._global(device.c_function(step.program), "kernel")
                arguments = ", ".join(f"{buffer}.ptr" for buffer in buffers)
                self.body.append(f"    {kernel}({arguments})      # {step.kernel.name}")
                self.body.append('    STATS["kernels_launched"] += 1')
            else:
                launch = self._global(device, "device") + ".launch"
                program = self._global(step.program, "program")
                self.body.append(f"    {launch}({program}, [{', '.join(buffers)}])      "
                                 f"# {step.kernel.name}")

    def collective(self, run, send, send_node, recv) -> None:
        """Record a collective between ranks (it already ran): a replay runs it again into a
        buffer of its own, at the same point among the launches."""
        device = get_device(send_node.device)
        source = self.source_of(send, send_node)
        name = self._new("out")
        self.kept.append(recv)
        self.local_of[id(recv)] = name
        self.allocations[name] = recv.nbytes
        allocate = self._global(device, "device") + ".allocate"
        runner = self._global(run, "collective")
        self.body.append(f"    {name} = {allocate}({recv.nbytes})")
        self.body.append(f"    {runner}({source}, {name})      # a collective between ranks")
        self.launches.append((device, Collective(run), [name, source]))

    def rebind(self, tensor) -> None:
        """tensor (a leaf) now holds the value assigned to it: so will it after a replay."""
        node = tensor._node
        source = self.source_of(node.arg.buffer, node)
        ref = self._global(weakref.ref(tensor), "ref_assigned")
        self.body.append(f"    rebind({ref}, {source})")
        self.rebinds.append((self.names[ref], source))

    def _global(self, value, prefix: str) -> str:
        """A name for value in the replay function's globals (one per distinct object)."""
        name = self.global_names.get(id(value))
        if name is None:
            name = self.global_names[id(value)] = self._new(prefix)
            self.names[name] = value
            self.kept.append(value)
        return name

    # ---- the end of the call ----------------------------------------------------------
    def finish(self, result) -> list:
        """Realize what the call returns and what it assigned; the outputs' metadata."""
        from cudagrad.tensor import Tensor, realize
        outputs = _flatten(result)
        pending = [tensor for tensor in self.assigned if tensor._pending is not None]
        if outputs or pending:
            realize(*outputs, *pending)
        metadata = []
        for tensor in outputs:
            node = tensor._node
            name = self.source_of(_buffer_of(node), node)
            metadata.append((name, node.shape, node.dtype, node.device))
        assert all(isinstance(t, Tensor) for t in outputs)
        self.output_names = [name for name, *_ in metadata]
        return metadata

    def host_bytes(self) -> dict[str, int]:
        """Each recomputed host value's name -> its size in bytes."""
        return {action[1]: prod(action[3]) * action[4].itemsize
                for action in self.host_actions if action[0] == "value"}

    def source(self, metadata: list) -> str:
        arguments = ", ".join(f"arg_{index}" for index in range(self.argument_count))
        lines = [f"def replay({arguments}):"]
        for number, action in enumerate(self.host_actions):
            if action[0] == "hook":
                self.names[f"hook_{number}"] = action[1]
                lines.append(f"    hook_{number}()")
            else:
                _, name, compute, shape, dtype, device = action
                self.names[f"compute_{name}"] = compute
                self.names[f"spec_{name}"] = (shape, dtype, device)
                lines.append(f"    {name} = upload(compute_{name}(), spec_{name})")
        lines += self.state_lines + self.body
        lines += [f"    clear_gradient({ref})" for ref in self.gradient_refs]
        lines.append(f"    return ({''.join(name + ', ' for name, *_ in metadata)})")
        return "\n".join(lines) + "\n"


def _read_state(ref) -> Any:
    tensor = ref()
    if tensor is None:
        raise JitError("cg.jit: a tensor the captured function reads (a parameter or optimizer "
                       "state) has been freed; capture again with a new cg.jit")
    if tensor._pending is not None:        # assigned outside the function and not realized yet
        from cudagrad.tensor import realize
        realize(tensor)
    return tensor._node.arg.buffer


def rebind(ref, buffer) -> None:
    """The tensor behind ref (if alive) now holds buffer, as an assignment leaves it."""
    tensor = ref()
    if tensor is not None:
        from cudagrad.tensor import rebind_leaf
        rebind_leaf(tensor, buffer)


def host_value(value, shape, dtype) -> np.ndarray:
    """A recomputed host value (an optimizer's scalar) as the bits its buffer holds."""
    from cudagrad.tensor import host_to_storage
    return host_to_storage(dtype, np.asarray(value, dtype=np.float64).reshape(shape))


def _upload(value, spec) -> Any:
    shape, dtype, device = spec
    return get_device(device).from_numpy(host_value(value, shape, dtype))


def clear_gradient(ref) -> None:
    """After a captured or replayed call, the step's gradients stay inside it."""
    tensor = ref()
    if tensor is not None:
        tensor._grad = None
        tensor._pending_backward = None


def _flatten(result) -> list:
    from cudagrad.tensor import Tensor
    if result is None:
        return []
    if isinstance(result, Tensor):
        return [result]
    if isinstance(result, (tuple, list)) and all(isinstance(item, Tensor) for item in result):
        return list(result)
    raise JitError(f"cg.jit: the function must return a tensor, a tuple or list of tensors, or "
                   f"None; it returned a {type(result).__name__}")


def _signature(args: tuple, kwargs: dict) -> tuple[tuple, list]:
    """What selects a capture: tensor arguments by shape, dtype and device, the others by
    value (hashable ones only); and the tensor arguments in order."""
    from cudagrad.tensor import Tensor
    parts: list = []
    tensors: list = []
    for position, value in [*enumerate(args), *sorted(kwargs.items())]:
        if isinstance(value, Tensor):
            tensors.append(value)
            parts.append((position, "tensor", value.shape, value.dtype, value.device,
                          value.requires_grad))
            continue
        try:
            hash(value)
        except TypeError:
            raise TypeError(f"cg.jit: argument {position!r} is a {type(value).__name__}, which "
                            "cannot select a capture: pass tensors (cg.tensor(...)) or hashable "
                            "Python values") from None
        parts.append((position, type(value), value))
    return tuple(parts), tensors


class _Entry:
    """The calls of one signature: how many ran, and the replay once captured."""

    def __init__(self):
        self.calls = 0
        self.replay: Any = None
        self.source = ""
        self.outputs: list = []       # (shape, dtype, device) per returned tensor
        self.static: Any = None       # a StaticReplay, where the step qualifies
        self.shape_of_result: Any = None


def jit(function=None, *, graph: bool | None = None):
    """Capture a step function on its second call and replay its kernels from the third
    on (module docstring); as a decorator, @cg.jit or @cg.jit(graph=False).

    graph: replay on buffers of the replay's own, captured once into a CUDA graph and
    launched with one call (static_replay.py). None (the default): where the step runs
    on the cuda device; False: never (each kernel launched from Python, fresh buffers);
    True: also on the cpu, where the same fixed-buffer replay runs its launches in order.
    """
    if function is None:
        return lambda function: JitFunction(function, graph)
    return JitFunction(function, graph)


class JitFunction:
    """What cg.jit returns: call it as the function. `.source` shows the latest replay
    function, `.captures` counts the captured signatures, `.reset()` forgets them,
    `.replays` counts replays on fixed buffers ("graph") and fresh ones ("plain")."""

    def __init__(self, function, graph: bool | None = None):
        functools.update_wrapper(self, function)
        self.function = function
        self.graph = graph
        self._entries: dict[tuple, _Entry] = {}
        self._lock = threading.Lock()
        self.source = ""
        self.replays = {"graph": 0, "plain": 0}

    def __get__(self, instance, owner=None):      # as a method: bind the instance
        return self if instance is None else functools.partial(self.__call__, instance)

    def reset(self) -> None:
        """Forget every capture: the next calls warm up and capture again."""
        with self._lock:
            self._entries.clear()

    @property
    def captures(self) -> int:
        return sum(entry.replay is not None for entry in self._entries.values())

    def __call__(self, *args, **kwargs):
        if hooks.ACTIVE[0] is not None and hooks.current() is not None:
            # called inside another jit function's capture: run the body, so that the
            # outer capture records its launches (a replay here would bypass the record)
            return self.function(*args, **kwargs)
        signature, tensors = _signature(args, kwargs)
        entry = self._entries.get(signature)
        if entry is None:
            entry = self._entries.setdefault(signature, _Entry())
        if entry.replay is not None:
            return self._replay(entry, tensors)
        with self._lock:
            entry.calls += 1
            if entry.calls <= WARMUP_CALLS or entry.replay is not None:
                return self.function(*args, **kwargs)
            return self._capture(entry, tensors, args, kwargs)

    def _capture(self, entry: _Entry, tensors: list, args: tuple, kwargs: dict):
        for tensor in tensors:
            tensor._realized_node()
        capture = Capture(tensors)
        hooks.begin(capture)
        try:
            result = self.function(*args, **kwargs)
            metadata = capture.finish(result)
        finally:
            hooks.end()
        for ref in capture.gradient_refs:     # as after a replay
            clear_gradient(capture.names[ref])
        source = capture.source(metadata)
        names = dict(capture.names)
        filename = f"<cudagrad jit {getattr(self.function, '__name__', 'step')}>"
        exec(compile(source, filename, "exec"), names)  # noqa: S102 (generated from the record alone)
        entry.outputs = [(shape, dtype, device) for _, shape, dtype, device in metadata]
        entry.shape_of_result = (None if result is None else "tensor" if not isinstance(result, (tuple, list))
                                 else type(result))
        entry.source = self.source = source
        entry.replay = names["replay"]
        entry.static = self._static_replay(capture)
        return result

    def _static_replay(self, capture: Capture):
        from cudagrad.static_replay import StaticReplay
        if self.graph is False or not capture.launches or not StaticReplay.eligible(capture):
            return None
        on_cuda = all(device.name == "cuda" for device, _, _ in capture.launches)
        if self.graph is None and not on_cuda:
            return None
        if on_cuda and any(type(program) is Collective for _, program, _ in capture.launches):
            # NCCL inside our captured graph hung in its one GPU test (2 H100s): such a step
            # replays its kernels and collectives one by one instead
            return None
        return StaticReplay(capture, capture.host_bytes(), use_graph=on_cuda)

    def _replay(self, entry: _Entry, tensors: list):
        from cudagrad.tensor import Tensor, buffer_node
        buffers = [_buffer_of(tensor._realized_node()) for tensor in tensors]
        produced = entry.static.run(buffers) if entry.static is not None else None
        if produced is None:
            produced = entry.replay(*buffers)
            self.replays["plain"] += 1
        else:
            self.replays["graph"] += 1
        results = [Tensor(buffer_node(buffer, shape, dtype, device), False)
                   for buffer, (shape, dtype, device) in zip(produced, entry.outputs)]
        kind = entry.shape_of_result
        if kind is None:
            return None
        if kind == "tensor":
            return results[0]
        return kind(results)
