"""Gradient averaging in a few large buckets.

A training step in cudagrad is one lazy graph (forward, backward, update). Data
parallelism has to cut it in two: the gradients must exist, summed over ranks,
before the update reads them. So average_gradients
1. realizes, in one schedule, each bucket's gradients flattened into one buffer
   (a bucket: parameters of one dtype and device, up to bucket_bytes together;
   a parameter larger than that is a bucket of its own and costs no copy),
2. all-reduces each bucket (op "mean") into a fresh buffer: one collective per
   bucket, not one per parameter, so a few large transfers run at full bandwidth,
3. gives every parameter, as its gradient, a lazy view (slice and reshape) of its
   bucket's reduced buffer. The optimizer's update then reads those views; they
   fuse into its kernels as plain loads, so the update costs what it did before.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from functools import partial

from cudagrad import dtypes
from cudagrad.capture import note_collective
from cudagrad.distributed import state
from cudagrad.distributed.collectives import result_tensor
from cudagrad.realization import input_buffer

DEFAULT_BUCKET_BYTES = 25 * 2**20      # as PyTorch DDP's bucket_cap_mb=25

# id(param) -> (param, the gradient tensor we gave it), both weak: a gradient still
# being ours means it is already averaged (DataParallel and a distributed optimizer
# may both ask), so it is not reduced twice.
_AVERAGED: dict[int, tuple[weakref.ref, weakref.ref]] = {}


@dataclass(frozen=True)
class Bucket:
    indices: tuple[int, ...]       # positions in the parameter list, in bucket order
    offsets: tuple[int, ...]       # each one's first element in the flat buffer
    numel: int
    dtype: dtypes.DType
    device: str

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


def assign_buckets(params, bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> list[Bucket]:
    """Group parameters into buckets of at most bucket_bytes (one dtype and device
    each), walking from the last parameter to the first, as DDP does (the last
    layers' gradients are the first ones backward produces). A parameter of
    bucket_bytes or more is a bucket of its own; the smaller ones between such
    parameters (the biases between large weights) still share buckets."""
    if bucket_bytes <= 0:
        raise ValueError(f"assign_buckets: bucket_bytes must be positive, got {bucket_bytes}")
    buckets: list[Bucket] = []
    open_buckets: dict[tuple, list[int]] = {}      # (dtype, device) -> indices being filled

    def close(key: tuple) -> None:
        indices = open_buckets.pop(key)
        offsets, total = [], 0
        for index in indices:
            offsets.append(total)
            total += params[index].numel()
        buckets.append(Bucket(tuple(indices), tuple(offsets), total, key[0], key[1]))

    for index in reversed(range(len(params))):
        param = params[index]
        key = (param.dtype, param.device)
        size = param.numel() * param.dtype.itemsize
        if size >= bucket_bytes:       # alone, leaving the small ones around it to share a bucket
            buckets.append(Bucket((index,), (0,), param.numel(), param.dtype, param.device))
            continue
        if key in open_buckets:
            filled = sum(params[i].numel() for i in open_buckets[key]) * param.dtype.itemsize
            if filled + size > bucket_bytes:
                close(key)
        open_buckets.setdefault(key, []).append(index)
    for key in list(open_buckets):
        close(key)
    return buckets


def _already_averaged(param) -> bool:
    current = param.grad_tensor
    entry = _AVERAGED.get(id(param))
    if entry is None or entry[0]() is not param:       # unknown, or another tensor at that id
        return False
    grad = entry[1]()
    return grad is not None and grad is current


def _flat_gradient(bucket: Bucket, params):
    import cudagrad as cg
    pieces = []
    for index in bucket.indices:
        param = params[index]
        grad = param.grad_tensor
        if grad is None:       # unused here, maybe used on another rank: contributes zeros
            grad = cg.zeros(param.shape, dtype=param.dtype, device=param.device, requires_grad=False)
        pieces.append(grad.reshape(-1))
    return pieces[0] if len(pieces) == 1 else cg.cat(pieces, 0)


def _average(communicator, bucket: Bucket, send, recv, stream=None) -> None:
    """A bucket's all-reduce again (a step replayed by cg.jit)."""
    communicator.all_reduce(send, recv, bucket.numel, bucket.dtype, "mean", stream)


def average_gradients(params, bucket_bytes: int = DEFAULT_BUCKET_BYTES, also_realize=(),
                      communicator=None, buckets: list[Bucket] | None = None) -> int:
    """Average the parameters' gradients over all ranks; returns the collectives run.

    also_realize: tensors to compute in the same schedule as the gradients (the
    loss: realized separately, it would recompute the forward pass). In a single
    process (no init) they are realized and the gradients left as they are.
    """
    import cudagrad as cg
    params = list(params)
    communicator = communicator or state.communicator_or_none()
    if communicator is None or communicator.world_size == 1:
        if also_realize:
            cg.realize(*also_realize)
        return 0
    if any(param.grad_tensor is not None for param in params) and all(
            param.grad_tensor is None or _already_averaged(param) for param in params):
        if also_realize:
            cg.realize(*also_realize)
        return 0
    if buckets is None:
        buckets = assign_buckets(params, bucket_bytes)
    with cg.no_grad():
        flats = [_flat_gradient(bucket, params) for bucket in buckets]
        cg.realize(*also_realize, *flats)
        for bucket, flat in zip(buckets, flats):
            from cudagrad.device import get_device
            reduced_buffer = get_device(bucket.device).allocate(bucket.nbytes)
            flat_buffer = input_buffer(flat.node)
            communicator.all_reduce(flat_buffer, reduced_buffer, bucket.numel, bucket.dtype, "mean")
            note_collective(partial(_average, communicator, bucket), flat_buffer, flat.node, reduced_buffer)
            reduced = result_tensor(reduced_buffer, (bucket.numel,), bucket.dtype, bucket.device)
            for index, offset in zip(bucket.indices, bucket.offsets):
                param = params[index]
                view = reduced if len(bucket.indices) == 1 else reduced[offset:offset + param.numel()]
                grad = view.reshape(param.shape)
                param.grad_tensor = grad
                _AVERAGED[id(param)] = (weakref.ref(param), weakref.ref(grad))
    if len(_AVERAGED) > 4 * len(params) + 1024:      # forget parameters that died
        for key in [key for key, (owner, _) in _AVERAGED.items() if owner() is None]:
            del _AVERAGED[key]
    return len(buckets)
