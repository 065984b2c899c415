"""Data-parallel scaling of the compute-bound MLP step, cudagrad against PyTorch DDP.

    python -m cudagrad.distributed.run --nproc N -m cudagrad.bench.data_parallel \
        --framework cudagrad|torch [--width 4096] [--batch 8192] [--steps 10] [--json PATH]

The step is bench/gpu.py's compute-bound one: 4 Linear layers of WIDTH, ReLU
between them, MSE loss, SGD, float32 (TF32 off on both sides), BATCH rows on
every GPU (weak scaling: N GPUs train on N * BATCH rows a step). Run with one
process it is the plain single-GPU step (no communicator, no DataParallel);
with several, cudagrad uses cg.nn.DataParallel over NCCL (gradients averaged in
25 MB buckets) and PyTorch DistributedDataParallel over NCCL (its default 25 MB
buckets, overlapping communication with backward). Every rank times WARMUP
steps untimed, then ROUNDS rounds of STEPS steps between device synchronizations;
rank 0 reports the median round, as seconds a step and samples a second (all
GPUs together). Append each result as one JSON line to PATH.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np


def _mlp_widths(width: int) -> list[int]:
    return [width] * 5


def cudagrad_step_factory(width: int, batch: int, rank: int, world: int, device: str = "cuda"):
    import cudagrad as cg
    import cudagrad.nn.functional as F
    from cudagrad.bench.fusion import relu_mlp
    from cudagrad.device import get_device
    if world > 1:
        cg.distributed.init("nccl" if device == "cuda" else "socket")
    cg.manual_seed(0)
    widths = _mlp_widths(width)
    net = relu_mlp(widths, device)
    model = cg.nn.DataParallel(net) if world > 1 else net
    rng = np.random.default_rng(100 + rank)
    x = cg.tensor(rng.standard_normal((batch, width), dtype=np.float32), device=device, requires_grad=False)
    y = cg.tensor(rng.standard_normal((batch, width), dtype=np.float32), device=device, requires_grad=False)
    opt = cg.optim.SGD(model.parameters(), lr=1e-3)
    backend = get_device(device)

    def step():
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        if world > 1:
            model.reduce_gradients(loss)
            cg.realize(*opt.schedule_step())
        else:
            cg.realize(loss, *opt.schedule_step())
        return loss

    def finish():
        if world > 1:
            cg.distributed.destroy()

    def all_reduce_seconds(nbytes: int = 64 << 20, repeats: int = 20) -> float | None:
        """The communicator alone: seconds of one float32 all-reduce of nbytes."""
        if world == 1:
            return None
        communicator = cg.distributed.get_communicator()
        source, target = backend.allocate(nbytes), backend.allocate(nbytes)
        count = nbytes // 4
        for _ in range(3):
            communicator.all_reduce(source, target, count, cg.float32, "sum")
        cg.distributed.barrier()
        begin = time.perf_counter()
        for _ in range(repeats):
            communicator.all_reduce(source, target, count, cg.float32, "sum")
        backend.synchronize()
        return (time.perf_counter() - begin) / repeats

    card = getattr(backend, "device_name", "cpu")
    step.all_reduce_seconds = all_reduce_seconds      # type: ignore[attr-defined]
    return step, backend.synchronize, (cg.distributed.barrier if world > 1 else backend.synchronize), \
        card, finish


def torch_step_factory(width: int, batch: int, rank: int, world: int, device: str = "cuda"):
    import torch
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local_rank)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if world > 1:
        import torch.distributed as dist
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
    torch.manual_seed(0)
    widths = _mlp_widths(width)
    layers: list = []
    for index, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(torch.nn.Linear(fan_in, fan_out))
        if index < len(widths) - 2:
            layers.append(torch.nn.ReLU())
    model: torch.nn.Module = torch.nn.Sequential(*layers).cuda()
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank])
    rng = np.random.default_rng(100 + rank)
    x = torch.from_numpy(rng.standard_normal((batch, width), dtype=np.float32)).cuda()
    y = torch.from_numpy(rng.standard_normal((batch, width), dtype=np.float32)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        return loss

    def barrier():
        torch.cuda.synchronize()
        if world > 1:
            torch.distributed.barrier()

    def finish():
        if world > 1:
            torch.distributed.destroy_process_group()

    return step, torch.cuda.synchronize, barrier, torch.cuda.get_device_name(), finish


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cudagrad.bench.data_parallel")
    parser.add_argument("--framework", choices=("cudagrad", "torch"), default="cudagrad")
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=8192, help="rows per GPU")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda", help="cudagrad's device (cpu: a quick check of the code)")
    parser.add_argument("--json", default=None, help="append the result as a JSON line here")
    options = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    factory = cudagrad_step_factory if options.framework == "cudagrad" else torch_step_factory
    started = time.perf_counter()
    step, synchronize, barrier, card, finish = factory(options.width, options.batch, rank, world,
                                                       options.device)
    losses = [float(step().item()) for _ in range(options.warmup)]
    setup_s = time.perf_counter() - started
    rounds = []
    for _ in range(options.rounds):
        barrier()
        begin = time.perf_counter()
        for _ in range(options.steps):
            step()
        synchronize()
        rounds.append((time.perf_counter() - begin) / options.steps)
    barrier()
    measure = getattr(step, "all_reduce_seconds", None)
    all_reduce_s = measure() if measure is not None else None
    finish()
    step_s = statistics.median(rounds)
    widths = _mlp_widths(options.width)
    per_layer = [a * b for a, b in zip(widths[:-1], widths[1:])]
    flops = 2 * options.batch * (2 * sum(per_layer) + sum(per_layer[1:]))     # per GPU, per step
    result = {"framework": options.framework, "gpus": world, "card": card, "width": options.width,
              "batch_per_gpu": options.batch, "step_s": step_s, "rounds_s": rounds,
              "samples_per_s": world * options.batch / step_s,
              "tflops_per_gpu": flops / step_s / 1e12, "first_losses": losses, "setup_s": setup_s,
              "date": time.strftime("%Y-%m-%d", time.gmtime())}
    if all_reduce_s is not None:     # NCCL's bus bandwidth convention: 2 (n - 1) / n of the bytes
        result["all_reduce_64MiB_s"] = all_reduce_s
        result["all_reduce_bus_GBps"] = (64 << 20) * 2 * (world - 1) / world / all_reduce_s / 1e9
    if rank == 0:
        extra = (f"  (all-reduce of 64 MiB: {all_reduce_s * 1e3:.2f} ms, "
                 f"{result['all_reduce_bus_GBps']:.0f} GB/s bus)" if all_reduce_s is not None else "")
        print(f"{options.framework:8s} {world} GPU(s) {card}: {step_s * 1e3:8.2f} ms/step  "
              f"{result['samples_per_s']:10.0f} samples/s  {result['tflops_per_gpu']:.1f} TFLOP/s per GPU"
              + extra, flush=True)
        if options.json:
            with open(options.json, "a") as out:
                out.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
