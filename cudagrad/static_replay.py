"""A captured step (jit.py) replayed on buffers of its own: on CUDA, one graph launch.

The plain replay allocates fresh buffers every call, so every call launches its kernels
one by one from Python. Here the replay owns its buffers and uses the same addresses
every call, which lets the cuda device capture the launches once into a CUDA graph and
replay them with one cuGraphLaunch.

Buffers are never written twice in cudagrad: a tensor kept from an earlier step keeps its
value. A replay on fixed addresses keeps that promise this way:
- the values a call rebinds (parameters, optimizer state) alternate between two sets of
  buffers: a call reads the set the previous call wrote and writes the other (two graphs,
  one per parity);
- before writing a set it checks that nothing outside holds one of its buffers (a lazy
  graph or a tensor on an old parameter value): the reference counts must be those of the
  replay's own tables; else that call runs the plain replay instead. A parameter given a
  value from elsewhere (a load_state_dict) is copied into the set the call reads;
- the returned tensors are copied into fresh buffers, so a loss kept in a list pins
  nothing;
- arguments and the optimizer's per-step scalars are copied into buffers of the replay's
  own, on the device's stream, before the launch;
- values that never leave the call (activations, gradients) live in one set, shared.
On the cpu the same bookkeeping runs the launches in order (no graph); the tests use it
there.
"""
from __future__ import annotations

import sys
import threading
from typing import Any

from cudagrad.runtime.stats import STATS


def _references(buffer) -> int:
    return sys.getrefcount(buffer)


class StaticReplay:
    def __init__(self, capture, host_specs: dict, use_graph: bool):
        devices = {id(device): device for device, _, _ in capture.launches}
        if len(devices) != 1:
            raise ValueError("a static replay needs the launches of one device")
        device = self.device = next(iter(devices.values()))
        self.launches = [(program, names) for _, program, names in capture.launches]
        self.outputs = capture.output_names
        self.rebinds = capture.rebinds
        self.host_actions = capture.host_actions
        self.gradient_refs = [capture.names[ref] for ref in capture.gradient_refs]
        self.use_graph = use_graph and hasattr(device, "capture_graph")
        self.graphs: list[Any] = [None, None]
        self.parity = 0
        self.lock = threading.Lock()
        leaving = {name for _, name in self.rebinds}
        self.sets: list[dict[str, Any]] = [{}, {}]
        for name, nbytes in capture.allocations.items():
            if name in leaving:
                self.sets[0][name], self.sets[1][name] = device.allocate(nbytes), device.allocate(nbytes)
            else:
                self.sets[0][name] = self.sets[1][name] = device.allocate(nbytes)
        self.arguments = [device.allocate(nbytes) for nbytes in capture.argument_bytes]
        self.hosts = {name: device.allocate(nbytes) for name, nbytes in host_specs.items()}
        self.constants = {name: capture.names[name] for name in capture.names if name.startswith("const_")}
        # each state read: a tensor the step rebinds reads what the other parity wrote; one
        # it never rebinds must keep the buffer it had when the replay was built
        last_write = {id(ref): name for ref, name in self.rebinds}
        self.state: list[tuple[str, Any, Any]] = []
        for name, ref in capture.state.items():
            written = last_write.get(id(ref))
            tensor = ref()
            if written is not None:
                self.state.append((name, ref, (self.sets[1][written], self.sets[0][written])))
            elif tensor is not None:
                self.state.append((name, ref, tensor._node.arg.buffer))
        from cudagrad.jit import Collective
        self.kernel_count = sum(type(program) is not Collective for program, _ in self.launches)
        # what each parity overwrites, and the reference counts the replay's own tables give
        # each such buffer (more means something outside holds it)
        self.overwritten = [[self.sets[parity][name] for name in sorted(leaving)] for parity in (0, 1)]
        self.baseline: dict[int, int] = {}
        for buffers in self.overwritten:
            for buffer in buffers:
                self.baseline[id(buffer)] = _references(buffer)

    @staticmethod
    def eligible(capture) -> bool:
        """Only where every value leaving the call is a buffer the call itself wrote."""
        written = set(capture.allocations)
        devices = {id(device) for device, _, _ in capture.launches}
        return (len(devices) == 1 and all(name in written for _, name in capture.rebinds)
                and all(name in written for name in capture.output_names))

    def run(self, argument_buffers: list) -> list | None:
        """The outputs' buffers, or None where this call must take the plain replay."""
        if not self.lock.acquire(blocking=False):
            return None                      # another thread is replaying it
        try:
            return self._run(argument_buffers)
        finally:
            self.lock.release()

    def _run(self, argument_buffers: list) -> list | None:
        parity = self.parity
        adopt = []
        for _, ref, expected in self.state:
            tensor = ref()
            if tensor is None or tensor._pending is not None:
                return None
            current = tensor._node.arg.buffer
            if type(expected) is tuple:
                wanted = expected[parity]
                if current is not wanted:
                    if _references(wanted) > self.baseline[id(wanted)]:
                        return None          # held outside: its value must not change
                    adopt.append((tensor, current, wanted))
            elif current is not expected:
                return None
        baseline = self.baseline
        for buffer in self.overwritten[parity]:
            if _references(buffer) > baseline[id(buffer)]:
                return None                  # held outside: its value must not change
        # committed to this path from here on
        device = self.device
        from cudagrad.jit import clear_gradient, host_value, rebind
        from cudagrad.tensor import rebind_leaf
        for tensor, current, wanted in adopt:     # a parameter given a buffer of its own
            device.copy_buffer(wanted, current, current.nbytes)
            rebind_leaf(tensor, wanted)
        for static, buffer in zip(self.arguments, argument_buffers):
            if static.ptr != buffer.ptr:
                device.copy_buffer(static, buffer, buffer.nbytes)
        for action in self.host_actions:
            if action[0] == "hook":
                action[1]()
            else:
                _, name, compute, shape, dtype, _ = action
                device.copy_from_numpy(self.hosts[name], host_value(compute(), shape, dtype))
        if self.use_graph:
            graph = self.graphs[parity]
            if graph is None:
                graph = self.graphs[parity] = self._capture_graph(parity)
            device.launch_graph(graph)
            STATS["kernels_launched"] += self.kernel_count
        else:
            self._launch_all(parity)
        written = self.sets[parity]
        for ref, name in self.rebinds:
            rebind(ref, written[name])
        for ref in self.gradient_refs:
            clear_gradient(ref)
        self.parity = 1 - parity
        # the returned values get buffers of their own: a loss kept in a list must not
        # pin the replay's buffers (one small device copy each)
        results = []
        for name in self.outputs:
            source = written[name]
            result = device.allocate(source.nbytes)
            device.copy_buffer(result, source, source.nbytes)
            results.append(result)
        return results

    def _buffers(self, parity: int) -> dict[str, Any]:
        """Every name of the record -> the buffer it stands for in this parity."""
        buffers = dict(self.sets[parity])
        buffers.update({f"arg_{index}": buffer for index, buffer in enumerate(self.arguments)})
        buffers.update(self.hosts)
        buffers.update(self.constants)
        for name, _, expected in self.state:
            buffers[name] = expected[parity] if type(expected) is tuple else expected
        return buffers

    def _launch_all(self, parity: int, stream=None) -> None:
        """Every recorded launch and collective, in order (on stream: a graph's capture)."""
        from cudagrad.jit import Collective
        buffers = self._buffers(parity)
        launch = self.device.launch
        for program, names in self.launches:
            arguments = [buffers[name] for name in names]
            if type(program) is Collective:
                program.run(arguments[1], arguments[0], stream=stream)
            elif stream is None:
                launch(program, arguments)
            else:
                launch(program, arguments, stream)

    def _capture_graph(self, parity: int) -> Any:
        try:
            return self.device.capture_graph(lambda stream: self._launch_all(parity, stream))
        finally:
            STATS["kernels_launched"] -= self.kernel_count     # captured, not run
