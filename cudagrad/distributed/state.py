"""This process's place in a job: init(), destroy(), rank(), world_size(), barrier().

The job's shape comes from the environment variables torchrun also sets (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), so a script runs the same
under `python -m cudagrad.distributed.run` and under torchrun.
"""
from __future__ import annotations

import os

from cudagrad.distributed.communicator import Communicator, SocketCommunicator
from cudagrad.distributed.rendezvous import Rendezvous

_current: dict = {"communicator": None, "rendezvous": None, "local_rank": 0}

BACKENDS = ("nccl", "socket")


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"distributed.init: {name}={text!r} is not an integer") from None


def rendezvous_port() -> int:
    """MASTER_PORT, or the port after it under torchrun (whose own store listens on
    MASTER_PORT); CUDAGRAD_RENDEZVOUS_PORT overrides both."""
    explicit = os.environ.get("CUDAGRAD_RENDEZVOUS_PORT")
    if explicit:
        return int(explicit)
    port = _env_int("MASTER_PORT", 29500)
    return port + 1 if os.environ.get("TORCHELASTIC_RUN_ID") else port


def _default_backend() -> str:
    from cudagrad.device import default_device
    return "nccl" if default_device() == "cuda" else "socket"


def init(backend: str | None = None, *, communicator: Communicator | None = None,
         timeout: float = 300.0) -> Communicator:
    """Join the job: meet the other ranks, set up the communicator and bind this
    process to its GPU (LOCAL_RANK) before any cuda tensor is made.

    backend: "nccl" (cuda tensors; the default where a GPU is usable) or "socket"
    (cpu tensors, through the rendezvous sockets: tests and debugging). Passing a
    ready `communicator` (anything with the Communicator methods) uses it instead.
    """
    if _current["communicator"] is not None:
        raise RuntimeError("distributed.init: already initialized (call destroy() first)")
    # NVLink multicast (NVLS) off in this process before NCCL loads: on shared hosts
    # its setup has taken GPUs out of service; ring and tree all-reduce do not need it.
    os.environ["NCCL_NVLS_ENABLE"] = "0"
    if communicator is not None:
        _current.update(communicator=communicator, rendezvous=None,
                        local_rank=_env_int("LOCAL_RANK", communicator.rank))
        return communicator
    rank = _env_int("RANK", 0)
    world_size = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"distributed.init: RANK={rank} outside WORLD_SIZE={world_size}")
    backend = (backend or _default_backend()).lower()
    if backend not in BACKENDS:
        raise ValueError(f"distributed.init: unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    made: Communicator
    if backend == "nccl":
        # Bind first: the rendezvous can take long, a stray cuda tensor must not pick GPU 0 meanwhile.
        from cudagrad.device import bind_cuda_device, get_device
        bind_cuda_device(local_rank)
        cuda = get_device("cuda")
        from cudagrad.distributed.nccl import NcclCommunicator, load_library
        library = load_library()
        rendezvous = Rendezvous(rank, world_size, os.environ.get("MASTER_ADDR", "127.0.0.1"),
                                rendezvous_port(), timeout)
        unique_id = rendezvous.broadcast(library.unique_id() if rank == 0 else None, root=0)
        made = NcclCommunicator(rank, world_size, unique_id, cuda, library)
    else:
        rendezvous = Rendezvous(rank, world_size, os.environ.get("MASTER_ADDR", "127.0.0.1"),
                                rendezvous_port(), timeout)
        made = SocketCommunicator(rendezvous)
    _current.update(communicator=made, rendezvous=rendezvous, local_rank=local_rank)
    return made


def communicator_or_none() -> Communicator | None:
    return _current["communicator"]


def get_communicator() -> Communicator:
    communicator = _current["communicator"]
    if communicator is None:
        raise RuntimeError("distributed: not initialized (call cudagrad.distributed.init())")
    return communicator


def is_initialized() -> bool:
    return _current["communicator"] is not None


def rank() -> int:
    """This process's rank; 0 before init() (a single process is rank 0 of 1)."""
    communicator = _current["communicator"]
    return 0 if communicator is None else communicator.rank


def world_size() -> int:
    """The number of processes in the job; 1 before init()."""
    communicator = _current["communicator"]
    return 1 if communicator is None else communicator.world_size


def local_rank() -> int:
    """This process's index on its host (its GPU); 0 before init()."""
    return _current["local_rank"]


def barrier() -> None:
    """Wait until every rank reaches here (on a GPU, with its queued work done)."""
    from cudagrad.capture import forbid
    forbid("a barrier between ranks")
    communicator = _current["communicator"]
    if communicator is not None:
        communicator.barrier()


def destroy() -> None:
    """Leave the job: free the communicator and close the rendezvous (idempotent)."""
    communicator, rendezvous = _current["communicator"], _current["rendezvous"]
    _current.update(communicator=None, rendezvous=None, local_rank=0)
    if communicator is not None:
        communicator.destroy()
    if rendezvous is not None:
        rendezvous.close()
