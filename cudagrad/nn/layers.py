"""Layers: Linear, the activations, Sequential."""
from __future__ import annotations

import math

from cudagrad.nn.module import Module


def _uniform_parameter(shape, bound: float, dtype, device):
    """A leaf parameter drawn from U(-bound, bound) with cudagrad's own RNG.

    The draw goes through numpy so that the result is a leaf with its own
    storage (the optimizer writes into it in place), and so that
    cg.manual_seed makes initialisation reproducible.
    """
    import cudagrad as cg

    # Drawn on the CPU whatever the target device, so that a seed gives the
    # same initial weights on every device.
    with cg.no_grad():
        unit = cg.rand(list(shape), device="cpu", requires_grad=False).numpy().astype("float64")
    values = (unit * 2.0 - 1.0) * bound
    return cg.tensor(values, dtype=dtype if dtype is not None else cg.float32,
                     device=device if device is not None else cg.default_device(), requires_grad=True)


class Linear(Module):
    """y = x @ weight.T + bias, with weight of shape [out_features, in_features].

    Initialised as torch.nn.Linear: kaiming_uniform(a=sqrt(5)) for the weight
    and the bias both reduce to U(-1/sqrt(in_features), 1/sqrt(in_features)).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, device=None, dtype=None):
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Linear: {name} must be a positive int, got {value!r}")
        self.in_features = in_features
        self.out_features = out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight = _uniform_parameter((out_features, in_features), bound, dtype, device)
        self.bias = _uniform_parameter((out_features,), bound, dtype, device) if bias else None

    def forward(self, x):
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"Linear(in_features={self.in_features}, out_features={self.out_features}): "
                             f"input of shape {tuple(x.shape)} does not end in {self.in_features} features")
        if x.ndim == 1:   # a single sample: matmul needs a row
            return self.forward(x.reshape(1, self.in_features)).reshape(self.out_features)
        out = x @ self.weight.T
        if self.bias is not None:
            out = out + self.bias
        return out

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class ReLU(Module):
    def forward(self, x):
        return x.relu()


class Tanh(Module):
    def forward(self, x):
        return x.tanh()


class Sigmoid(Module):
    def forward(self, x):
        return x.sigmoid()


class Flatten(Module):
    """Flattens every dimension after the batch dimension, as torch.nn.Flatten."""

    def forward(self, x):
        return x.flatten(1)


class Sequential(Module):
    """Applies its modules in order. They are stored as attributes named
    "0", "1", ... so that parameter names match PyTorch's ("0.weight")."""

    def __init__(self, *modules: Module):
        for index, module in enumerate(modules):
            if not isinstance(module, Module):
                raise TypeError(f"Sequential: argument {index} is a {type(module).__name__}, not a Module")
            setattr(self, str(index), module)

    def __len__(self) -> int:
        return len(vars(self))

    def __getitem__(self, index: int) -> Module:
        modules = list(vars(self).values())
        return modules[index]

    def __iter__(self):
        return iter(list(vars(self).values()))

    def forward(self, x):
        for module in self:
            x = module(x)
        return x
