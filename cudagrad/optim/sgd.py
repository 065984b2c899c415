"""Stochastic gradient descent with momentum, as torch.optim.SGD."""
from __future__ import annotations

from cudagrad.optim.optimizer import Optimizer


class SGD(Optimizer):
    """p -= lr * buf, with buf = momentum * buf + grad (buf = grad on the first step).

    The momentum buffer starts at zero, which makes the first step's
    momentum * 0 + grad exactly grad: one formula for every step, so one set
    of kernels.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, distributed: bool = False):
        super().__init__(params, lr, distributed)
        if momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: momentum ({momentum}) and weight_decay ({weight_decay}) must be >= 0")
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov momentum needs momentum > 0")
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.nesterov = nesterov
        self.momentum_buffers = [self._zeros_like(p) for p in self.params] if momentum else []

    def _update(self, index: int, param, grad) -> list:
        if self.weight_decay:
            grad = grad + param * self.weight_decay
        written = []
        direction = grad
        if self.momentum:
            buffer = self.momentum_buffers[index]
            new_buffer = buffer * self.momentum + grad
            buffer.assign(new_buffer)
            written.append(buffer)
            direction = grad + new_buffer * self.momentum if self.nesterov else new_buffer
        param.assign(param - self._scalar("lr", lambda: self.lr, param) * direction)
        written.append(param)
        return written
