"""A data-parallel training run, for tests/test_distributed.py (started by the launcher).

    python distributed_worker.py DEVICE MODE STEPS BATCH OUT.npz
MODE "dp": cudagrad.distributed.init(), this rank trains on its shard of the batch;
MODE "dp-jit" / "dp-jit-plain": the same, the step under cg.jit (its collectives recorded
and replayed), on fixed buffers (a CUDA graph on the GPU) / on fresh buffers;
MODE "single": one process trains on the whole batch (world_size * BATCH rows),
with WORLD_SIZE read from the environment only to size that batch.
Every rank draws the same full batches from one seed and keeps its rows.
Writes the global loss of every step and the final parameters (rank 0 only in dp).
"""
from __future__ import annotations

import os
import sys

import numpy as np

import cudagrad as cg
import cudagrad.nn.functional as F


def main() -> None:
    device, mode, steps, batch, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    distributed = mode in ("dp", "dp-jit", "dp-jit-plain")
    jit = mode.startswith("dp-jit")
    if distributed:
        cg.distributed.init("nccl" if device == "cuda" else "socket")
        rank, world = cg.distributed.rank(), cg.distributed.world_size()
    else:
        world = int(os.environ.get("CG_TEST_WORLD", world))
        rank = 0
    widths = [13, 33, 7]
    # every rank builds different initial weights: DataParallel must broadcast rank 0's
    cg.manual_seed(1234 + (rank if distributed else 0))
    net = cg.nn.Sequential(cg.nn.Linear(widths[0], widths[1], device=device), cg.nn.ReLU(),
                           cg.nn.Linear(widths[1], widths[2], device=device))
    model = cg.nn.DataParallel(net, bucket_mb=0.001) if distributed else net   # ~1 KB: several buckets
    opt = cg.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    data = np.random.default_rng(7)
    losses = []

    def step(x, y):
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        if distributed:
            model.reduce_gradients(loss)
            loss = cg.distributed.all_reduce(loss, "mean")
        opt.step()
        return loss
    if jit:
        step = cg.jit(step, graph=mode == "dp-jit")
    for _ in range(steps):
        x_all = data.standard_normal((world * batch, widths[0])).astype(np.float32)
        y_all = data.standard_normal((world * batch, widths[-1])).astype(np.float32)
        rows = slice(rank * batch, (rank + 1) * batch) if distributed else slice(None)
        x = cg.tensor(x_all[rows], device=device, requires_grad=False)
        y = cg.tensor(y_all[rows], device=device, requires_grad=False)
        losses.append(step(x, y).item())
    if jit:
        # on GPUs a step with collectives replays one launch at a time (jit.py)
        kind = "graph" if mode == "dp-jit" and device == "cpu" else "plain"
        assert step.replays[kind] == steps - 2, step.replays
    if rank == 0:
        np.savez(out, losses=np.array(losses), **{name: p.numpy() for name, p in net.named_parameters()})
    if distributed:
        cg.distributed.destroy()


if __name__ == "__main__":
    main()
