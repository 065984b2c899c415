"""Timing helpers shared by the benchmarks: plans replayed without graph building,
medians of many runs after a warm-up."""
from __future__ import annotations

import statistics
import time

from cudagrad.realization import _PLANS, canonicalize, run_plan


class _Slot:
    """Stands in for a node the replay writes, so it never overwrites a user's result."""
    __slots__ = ("realized", "numel", "dtype", "op", "arg", "shape")

    def __init__(self, node):
        self.realized = None
        self.numel, self.dtype, self.op, self.arg, self.shape = (node.numel, node.dtype, node.op,
                                                                 node.arg, node.shape)


def replay_plan(*tensors):
    """(plan, run): run() re-launches the kernels that realize tensors, into fresh
    buffers, skipping graph building and planning (a training loop's steady state)."""
    import cudagrad as cg
    targets = [t.node for t in tensors]
    key, nodes = canonicalize(targets)
    cg.realize(*tensors)                      # plans and compiles once
    plan = _PLANS[(targets[0].device, key)]
    written = {index for step in plan.steps for index in step.outputs}
    view = [_Slot(node) if index in written else node for index, node in enumerate(nodes)]
    return plan, lambda: run_plan(plan, view)


def median_seconds(function, synchronize, warmup: int = 3, repeats: int = 20,
                   min_seconds: float = 0.2) -> float:
    """Median wall time of function() with the device synchronized after each run."""
    for _ in range(warmup):
        function()
    synchronize()
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < repeats or (time.perf_counter() - started < min_seconds
                                     and len(samples) < 10 * repeats):
        start = time.perf_counter()
        function()
        synchronize()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def event_median_seconds(function, torch, stream, warmup: int = 3, repeats: int = 20) -> float:
    """Median GPU time of function(), from CUDA events recorded on stream between
    back-to-back runs: the queue stays full, so a run's time is the GPU's time for
    it, or the host's where the host is slower (an overhead-bound step)."""
    for _ in range(warmup):
        function()
    stream.synchronize()
    return statistics.median(event_seconds(function, torch, stream, repeats))


def event_seconds(function, torch, stream, repeats: int) -> list[float]:
    """Seconds of each of `repeats` back-to-back calls of function(), from a CUDA event
    recorded on stream between every two."""
    events = [torch.cuda.Event(enable_timing=True) for _ in range(repeats + 1)]
    events[0].record(stream)
    for index in range(repeats):
        function()
        events[index + 1].record(stream)
    events[-1].synchronize()
    return [events[index].elapsed_time(events[index + 1]) / 1e3 for index in range(repeats)]
