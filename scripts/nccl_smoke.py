"""Collectives over NCCL on every GPU of the host, checked against numpy (issue 9).

    python -m cudagrad.distributed.run --nproc 2 scripts/nccl_smoke.py
CUDAGRAD_NCCL=nccl4py|ctypes picks the binding; prints one line per rank.
"""
import numpy as np

import cudagrad as cg

communicator = cg.distributed.init("nccl")
rank, world = cg.distributed.rank(), cg.distributed.world_size()
values = [np.random.default_rng(r).standard_normal(1000).astype(np.float32) for r in range(world)]
mine = cg.tensor(values[rank], device="cuda", requires_grad=False)
lazy = mine * 1.0
summed = cg.distributed.all_reduce(lazy, "sum").numpy()
mean = cg.distributed.all_reduce(mine, "mean").numpy()          # a leaf: rebound in place
np.testing.assert_allclose(summed, np.sum(values, axis=0), rtol=1e-5, atol=1e-5)
np.testing.assert_allclose(mean, np.mean(values, axis=0), rtol=1e-5, atol=1e-6)
np.testing.assert_allclose(lazy.numpy(), values[rank])               # the input left as it was
shared = cg.tensor(values[rank][:7].astype(np.float64), dtype=cg.float64, device="cuda", requires_grad=False)
cg.distributed.broadcast(shared, world - 1)
np.testing.assert_array_equal(shared.numpy(), values[world - 1][:7].astype(np.float64))
gathered = cg.distributed.all_gather(cg.tensor(values[rank][:5], device="cuda", requires_grad=False))
np.testing.assert_array_equal(gathered.numpy(), np.stack([v[:5] for v in values]))
cg.distributed.barrier()
print(f"rank {rank}/{world} ok: {communicator.name}, GPU {cg.distributed.local_rank()}", flush=True)
cg.distributed.destroy()
