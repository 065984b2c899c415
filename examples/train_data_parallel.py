"""Data-parallel training: one process per GPU, gradients averaged over NCCL.

    python -m cudagrad.distributed.run --nproc 4 examples/train_data_parallel.py
    torchrun --standalone --nproc-per-node 4 examples/train_data_parallel.py      # the same
    python examples/train_data_parallel.py                                        # one process
    CUDAGRAD_DEVICE=cpu python -m cudagrad.distributed.run --nproc 2 examples/train_data_parallel.py

Every rank draws the same synthetic regression problem and trains on its own
slice of each global batch; rank 0 prints the loss averaged over all ranks. The
result does not depend on the number of processes (up to float32 rounding):
N ranks with a batch of B each take the same steps as one process with N * B.
"""
from __future__ import annotations

import argparse

import numpy as np

import cudagrad as cg
import cudagrad.nn.functional as F


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--global-batch", type=int, default=256, help="rows a step, over all ranks")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.05)
    options = parser.parse_args()

    cg.distributed.init()          # NCCL on GPUs (each rank binds its LOCAL_RANK's), sockets on the CPU
    rank, world = cg.distributed.rank(), cg.distributed.world_size()
    if options.global_batch % world:
        raise SystemExit(f"--global-batch {options.global_batch} does not split over {world} ranks")
    batch = options.global_batch // world

    problem = np.random.default_rng(0)            # the same data on every rank
    true_weights = problem.standard_normal((32, 8)).astype(np.float32)

    cg.manual_seed(rank)                          # different on each rank: DataParallel must broadcast
    net = cg.nn.Sequential(cg.nn.Linear(32, options.hidden), cg.nn.ReLU(),
                           cg.nn.Linear(options.hidden, 8))
    model = cg.nn.DataParallel(net)               # every rank starts from rank 0's weights
    opt = cg.optim.SGD(model.parameters(), lr=options.lr, momentum=0.9)

    for step in range(options.steps):
        x_all = problem.standard_normal((options.global_batch, 32)).astype(np.float32)
        y_all = np.tanh(x_all @ true_weights)
        mine = slice(rank * batch, (rank + 1) * batch)
        x = cg.tensor(x_all[mine], requires_grad=False)
        y = cg.tensor(y_all[mine], requires_grad=False)

        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        model.reduce_gradients(loss)              # the loss and the averaged gradients, one schedule
        opt.step()
        if step % 50 == 0 or step == options.steps - 1:
            mean_loss = cg.distributed.all_reduce(loss, "mean").item()
            if rank == 0:
                print(f"step {step:4d}  loss {mean_loss:.5f}  ({world} rank(s), batch {batch} each)",
                      flush=True)
    cg.distributed.destroy()


if __name__ == "__main__":
    main()
