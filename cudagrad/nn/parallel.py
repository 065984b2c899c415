"""DataParallel: one model replica per process, gradients averaged across them.

As PyTorch's DistributedDataParallel, minus the hooks: cudagrad's backward is a
lazy graph, so there is no moment during backward to start communicating.
Instead, reduce_gradients() (or an optimizer made with distributed=True) realizes
the gradients, all-reduces them in a few large buckets, and hands the optimizer
views of the averaged buckets, which its fused update kernels read directly.
"""
from __future__ import annotations

from cudagrad.nn.module import Module

# cudagrad.distributed is imported on first use: `import cudagrad` stays lean.


class DataParallel(Module):
    """Wrap a model for data-parallel training (after cudagrad.distributed.init()).

    At construction every parameter and buffer is broadcast from rank 0, so all
    replicas start equal. Each step: forward your shard of the batch, backward,
    reduce_gradients(loss), then the optimizer's step(). In a single process
    (no init) it is a transparent wrapper.
    """

    def __init__(self, module: Module, bucket_mb: float = 25.0, broadcast_parameters: bool = True):
        if not isinstance(module, Module):
            raise TypeError(f"DataParallel: expected a cg.nn.Module, got {type(module).__name__}")
        if not bucket_mb > 0:
            raise ValueError(f"DataParallel: bucket_mb must be positive, got {bucket_mb!r}")
        self.module = module
        self.bucket_bytes = int(bucket_mb * 2**20)
        self._buckets: list | None = None
        from cudagrad.distributed import state
        if broadcast_parameters and state.world_size() > 1:
            self.broadcast_from(0)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def broadcast_from(self, src: int = 0) -> None:
        """Overwrite every parameter and buffer with rank src's values."""
        from cudagrad.distributed.collectives import broadcast
        for _, tensor in self.module.named_tensors():
            broadcast(tensor, src)

    @property
    def buckets(self) -> list:
        """The gradient buckets (built once: the parameters of a model do not change)."""
        if self._buckets is None:
            from cudagrad.distributed.buckets import assign_buckets
            self._buckets = assign_buckets(self.module.parameters(), self.bucket_bytes)
        return self._buckets

    def reduce_gradients(self, *also_realize) -> int:
        """Average every parameter's gradient over all ranks, in buckets; returns the
        number of collectives run. Pass the loss (and anything else you read this
        step) to compute it in the same schedule as the gradients."""
        from cudagrad.distributed.buckets import average_gradients
        return average_gradients(self.module.parameters(), self.bucket_bytes, also_realize,
                                          buckets=self.buckets)

    def extra_repr(self) -> str:
        from cudagrad.distributed import state
        return f"world_size={state.world_size()}, bucket_mb={self.bucket_bytes / 2**20:g}"
