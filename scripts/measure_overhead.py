"""Python cost of one kernel launch and of one steady-state realize of a cached graph.

    python scripts/measure_overhead.py [--device cuda|cpu] [--json out.json]

Medians over many repetitions; the first iterations (compile, plan) are excluded.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import cudagrad as cg
from cudagrad.device import get_device
from cudagrad.realization import _PLANS


def median_us(function, repeats: int, inner: int = 100) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            function()
        samples.append((time.perf_counter() - start) / inner * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default=cg.default_device())
    parser.add_argument("--json")
    args = parser.parse_args()
    device = get_device(args.device)
    a = cg.tensor(np.random.rand(2, 2).astype(np.float32), device=args.device, requires_grad=False)
    b = cg.tensor(np.random.rand(2, 2).astype(np.float32), device=args.device, requires_grad=False)
    (a @ b).realize()
    plan = next(iter(p for key, p in _PLANS.items() if key[0] == args.device))
    step = plan.steps[0]
    output = device.allocate(16)
    buffers = [output, a.node.arg.buffer, b.node.arg.buffer]

    def launch():
        device.launch(step.program, buffers)

    def fresh_pairs(count: int):
        """New leaves each time: a realized node is never recomputed, so reusing
        inputs would time a no-op."""
        return [(cg.tensor(np.random.rand(2, 2).astype(np.float32), device=args.device),
                 cg.tensor(np.random.rand(2, 2).astype(np.float32), device=args.device))
                for _ in range(count)]

    def timed(body) -> float:
        pairs = fresh_pairs(100)
        start = time.perf_counter()
        for x, y in pairs:
            body(x, y)
        elapsed = (time.perf_counter() - start) / len(pairs) * 1e6
        device.synchronize()
        return elapsed

    def build_only(x, y):
        return x @ y

    def build_and_realize(x, y):
        (x @ y).realize()

    def realize_prebuilt() -> float:
        graphs = [x @ y for x, y in fresh_pairs(100)]
        start = time.perf_counter()
        for graph in graphs:
            graph.realize()
        elapsed = (time.perf_counter() - start) / len(graphs) * 1e6
        device.synchronize()
        return elapsed

    results = {
        "device": args.device,
        "device_name": getattr(device, "device_name", "cpu"),
        "launch_us": median_us(launch, 50),
        "build_matmul_graph_us": statistics.median(timed(build_only) for _ in range(30)),
        "build_and_realize_matmul_us": statistics.median(timed(build_and_realize) for _ in range(30)),
        "realize_cached_graph_us": statistics.median(realize_prebuilt() for _ in range(30)),
    }
    device.synchronize()
    for key, value in results.items():
        print(f"{key:32s} {value:.2f}" if isinstance(value, float) else f"{key:32s} {value}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()
