"""Optimizer: what SGD and Adam share.

A step never computes anything itself. It builds, for each parameter, the
new value (and new optimizer state) as lazy tensors from the parameter's lazy
gradient, schedules in-place writes with Tensor.assign, and realizes all of
them together. Forward, backward and update thus become one graph, fused
into few kernels, writing into the storage the parameters already have.
"""
from __future__ import annotations

import numpy as np

from cudagrad.capture import note_host_value, note_replay_hook


class Optimizer:
    def __init__(self, params, lr: float, distributed: bool = False):
        from cudagrad.tensor import Tensor

        unique, seen = [], set()
        for index, param in enumerate(params):
            if not isinstance(param, Tensor):
                raise TypeError(f"{type(self).__name__}: parameter {index} is a {type(param).__name__}, "
                                f"not a Tensor (pass module.parameters())")
            if not param.is_leaf or not param.requires_grad:
                raise ValueError(f"{type(self).__name__}: parameter {index} of shape {tuple(param.shape)} "
                                 f"is not a leaf that requires grad, so it cannot be optimized")
            if id(param) not in seen:
                seen.add(id(param))
                unique.append(param)
        if not unique:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not lr > 0:
            raise ValueError(f"{type(self).__name__}: lr must be positive, got {lr!r}")
        self.params = unique
        self.lr = float(lr)
        # distributed: average gradients over the ranks of cudagrad.distributed before each update
        self.distributed = bool(distributed)
        self._step_scalars: dict = {}

    def zero_grad(self) -> None:
        for param in self.params:
            param.zero_grad()

    def step(self) -> None:
        """Update every parameter that has a gradient, in one realization."""
        import cudagrad as cg

        written = self.schedule_step()
        if written:
            cg.realize(*written)

    def schedule_step(self) -> list:
        """Schedule the update without running it; returns the tensors to realize.

        Realize them together with anything else you need from this step
        (cg.realize(loss, *opt.schedule_step())) to read the loss from the same
        schedule instead of computing the forward pass twice.

        With distributed=True the gradients are first realized and averaged over
        the ranks (cudagrad.distributed.average_gradients), which cuts the step's
        graph in two; call model.reduce_gradients(loss) before to get the loss
        from the gradients' schedule.
        """
        import cudagrad as cg

        if self.distributed:
            from cudagrad.distributed.buckets import average_gradients
            average_gradients(self.params)
        self._step_scalars = {}
        self._begin_step()
        note_replay_hook(self._begin_step)      # cg.jit: a replayed step advances it too
        written = []
        with cg.no_grad():
            for index, param in enumerate(self.params):
                grad = param.grad_tensor
                if grad is None:   # unused by the loss: left alone, as in PyTorch
                    continue
                written.extend(self._update(index, param, grad))
        return written

    # --- for subclasses ------------------------------------------------------

    def _begin_step(self) -> None:
        """Advance per-step counters (Adam's step number)."""

    def _update(self, index: int, param, grad) -> list:
        """Assign the new value of param (and of its state); return what was assigned."""
        raise NotImplementedError

    def _scalar(self, name: str, compute, like):
        """A per-step scalar, compute(), as a 1-element tensor on like's device.

        Passing it as data rather than as a literal keeps the kernel source the
        same from step to step (lr schedules, Adam's bias corrections), so the
        compiled kernels are reused instead of rebuilt. compute is a function so
        that a step replayed by cg.jit can compute this step's value again.
        """
        import cudagrad as cg

        key = (name, like.dtype, like.device)
        if key not in self._step_scalars:
            scalar = cg.tensor(np.array([compute()], dtype=np.float64), dtype=like.dtype,
                               device=like.device, requires_grad=False)
            note_host_value(scalar, compute)
            self._step_scalars[key] = scalar
        return self._step_scalars[key]

    @staticmethod
    def _zeros_like(param):
        """State storage of its own (not a broadcast constant), so it can be assigned to."""
        import cudagrad as cg

        return cg.tensor(np.zeros(tuple(param.shape), dtype=np.float64), dtype=param.dtype,
                         device=param.device, requires_grad=False)
