"""Data-parallel training over several processes (one per GPU), through NCCL.

    python -m cudagrad.distributed.run --nproc 4 train.py     # or torchrun --nproc-per-node 4

    import cudagrad as cg
    cg.distributed.init()                      # NCCL on cuda, sockets on cpu; binds LOCAL_RANK's GPU
    model = cg.nn.DataParallel(net)            # parameters broadcast from rank 0
    ...
    loss.backward()
    model.reduce_gradients(loss)               # gradients averaged over ranks, in buckets
    opt.step()

Importing this package loads neither NCCL nor cuda-python: init() does, for the
nccl backend. See docs/guide.md, "Several GPUs".
"""
from cudagrad.distributed.buckets import Bucket, assign_buckets, average_gradients
from cudagrad.distributed.collectives import all_gather, all_reduce, broadcast
from cudagrad.distributed.communicator import Communicator, SocketCommunicator
from cudagrad.distributed.state import (
    barrier,
    destroy,
    get_communicator,
    init,
    is_initialized,
    local_rank,
    rank,
    world_size,
)

__all__ = ["init", "destroy", "is_initialized", "rank", "world_size", "local_rank", "barrier",
           "get_communicator", "all_reduce", "broadcast", "all_gather", "average_gradients",
           "assign_buckets", "Bucket", "Communicator", "SocketCommunicator"]
