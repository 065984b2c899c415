"""Where a training step's GPU time goes, kernel by kernel (PyTorch's profiler, CUPTI).

    python scripts/profile_step.py [--widths 512,512,512,10] [--batch 512] [--steps 50]
                                   [--no-jit] [--optimizer adam|sgd]

Builds the bench's overhead-bound MLP step (Linear layers with ReLU between, cross-entropy,
Adam), runs it under cg.jit (or as written), then profiles `--steps` steps with
torch.profiler: CUPTI sees every kernel of the process, cudagrad's included. Prints each
kernel's GPU time a step and its share, and the step's wall time against the GPU's busy
time (what launching costs beyond the kernels).
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

import cudagrad as cg
import cudagrad.nn.functional as F
from cudagrad.bench.fusion import relu_mlp
from cudagrad.tensor import kernels_for

DEVICE = "cuda"


def print_kernels(widths: list[int], batch: int, optimizer: str) -> None:
    """Each kernel of a step's schedule: name, launch shape and the header of its source."""
    step = build_step(widths, batch, optimizer, jit=False, parts=True)
    cg.realize(*step())                     # the first step's graph differs (no moments yet)
    targets = step()
    # the step's schedule realizes its targets together (t.kernels() plans one tensor alone)
    nodes = [t._pending if t._pending is not None else t._node for t in targets]
    for kernel in kernels_for(nodes):
        header = kernel.source.split("*/")[0].replace("/*", "").strip()
        print(f"{kernel.name} {getattr(kernel, 'launch', '')}\n  " + header.replace("\n", "\n  "))
    cg.realize(*targets)


def build_step(widths: list[int], batch: int, optimizer: str, jit: bool, parts: bool = False):
    cg.manual_seed(0)
    model = relu_mlp(widths, DEVICE)
    rng = np.random.default_rng(0)
    x = cg.tensor(rng.standard_normal((batch, widths[0]), dtype=np.float32), device=DEVICE,
                  requires_grad=False)
    y = cg.tensor(rng.integers(0, widths[-1], batch), dtype=cg.int32, device=DEVICE, requires_grad=False)
    opt: cg.optim.Optimizer = (cg.optim.Adam(model.parameters(), lr=1e-3) if optimizer == "adam"
                               else cg.optim.SGD(model.parameters(), lr=1e-3))

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        targets = [loss, *opt.schedule_step()]
        if parts:                           # the tensors a step realizes, not realized yet
            return targets
        cg.realize(*targets)
        return loss
    return cg.jit(step) if jit else step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", default="512,512,512,10")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--optimizer", default="adam", choices=("adam", "sgd"))
    parser.add_argument("--no-jit", dest="jit", action="store_false")
    parser.add_argument("--kernels", action="store_true",
                        help="also print what each kernel of the step fuses (its source's header)")
    args = parser.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    widths = [int(w) for w in args.widths.split(",")]
    if args.kernels:
        print_kernels(widths, args.batch, args.optimizer)
    step = build_step(widths, args.batch, args.optimizer, args.jit)
    for _ in range(5):                      # capture, warm-up
        step()
    step().item()                           # reading the loss waits for the GPU
    with profile(activities=[ProfilerActivity.CUDA]) as profiler:
        started = time.perf_counter()
        for _ in range(args.steps):
            step()
        step().item()
        wall = (time.perf_counter() - started) / (args.steps + 1)
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for event in profiler.events():
        if event.device_type == torch.autograd.DeviceType.CUDA and event.device_time > 0:
            totals[event.name] += event.device_time          # microseconds
            counts[event.name] += 1
    steps = args.steps + 1
    busy = sum(totals.values()) / steps
    print(f"{torch.cuda.get_device_name()}: a step {wall * 1e6:.0f} us wall, GPU busy "
          f"{busy:.0f} us ({len(totals)} kernels, {'cg.jit' if args.jit else 'as written'})")
    for name, total in sorted(totals.items(), key=lambda item: -item[1]):
        share = total / steps / busy
        print(f"  {total / steps:8.1f} us {share:6.1%}  x{counts[name] / steps:.0f}  {name[:90]}")


if __name__ == "__main__":
    main()
