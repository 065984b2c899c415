"""Adam, as torch.optim.Adam (bias-corrected moments, L2 weight decay)."""
from __future__ import annotations

import math

from cudagrad.optim.optimizer import Optimizer


class Adam(Optimizer):
    """m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;
    p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    The bias corrections are computed in double precision on the host, as
    PyTorch does, and reach the kernels as per-step scalar tensors.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, distributed: bool = False):
        super().__init__(params, lr, distributed)
        beta1, beta2 = betas
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise ValueError(f"Adam: betas must lie in [0, 1), got {betas}")
        if eps < 0 or weight_decay < 0:
            raise ValueError(f"Adam: eps ({eps}) and weight_decay ({weight_decay}) must be >= 0")
        self.betas = (float(beta1), float(beta2))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.step_count = 0
        self.exp_avgs = [self._zeros_like(p) for p in self.params]
        self.exp_avg_sqs = [self._zeros_like(p) for p in self.params]

    def _begin_step(self) -> None:
        self.step_count += 1

    def _update(self, index: int, param, grad) -> list:
        beta1, beta2 = self.betas
        if self.weight_decay:
            grad = grad + param * self.weight_decay
        exp_avg, exp_avg_sq = self.exp_avgs[index], self.exp_avg_sqs[index]
        new_exp_avg = exp_avg * beta1 + grad * (1.0 - beta1)
        new_exp_avg_sq = exp_avg_sq * beta2 + (grad * grad) * (1.0 - beta2)

        step_size = self._scalar("step_size", lambda: self.lr / (1.0 - beta1 ** self.step_count), param)
        correction2_sqrt = self._scalar("correction2_sqrt", lambda: math.sqrt(1.0 - beta2 ** self.step_count),
                                        param)
        denominator = new_exp_avg_sq.sqrt() / correction2_sqrt + self.eps

        exp_avg.assign(new_exp_avg)
        exp_avg_sq.assign(new_exp_avg_sq)
        param.assign(param - step_size * new_exp_avg / denominator)
        return [param, exp_avg, exp_avg_sq]
