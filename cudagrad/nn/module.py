"""Module: the base class of layers and models.

A module's parameters are not registered explicitly (as with torch's
nn.Parameter): they are found by walking its attributes, and the lists,
tuples and dicts inside them, in definition order. A Tensor that requires
grad is a parameter; any other Tensor is a buffer, saved in the state_dict
but never handed to an optimizer.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Iterator

import numpy as np

if TYPE_CHECKING:
    from cudagrad.tensor import Tensor


def _is_tensor(value) -> bool:
    # Imported here, not at the top: cudagrad/__init__ imports nn while the
    # Tensor layer may itself still be importing.
    from cudagrad.tensor import Tensor
    return isinstance(value, Tensor)


def _walk(value, prefix: str, seen: set) -> Iterator[tuple[str, Tensor]]:
    """Yield (dotted name, tensor) for every Tensor reachable from value.

    Each object is visited once (by id), so a tensor or module shared by two
    attributes is reported under its first name only, and cycles end.
    """
    if id(value) in seen:
        return
    if _is_tensor(value):
        seen.add(id(value))
        yield prefix, value
    elif isinstance(value, Module):
        seen.add(id(value))
        for name, child in vars(value).items():
            yield from _walk(child, _join(prefix, name), seen)
    elif isinstance(value, (list, tuple)):
        seen.add(id(value))
        for index, child in enumerate(value):
            yield from _walk(child, _join(prefix, str(index)), seen)
    elif isinstance(value, dict):
        seen.add(id(value))
        for key, child in value.items():
            yield from _walk(child, _join(prefix, str(key)), seen)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


class Module:
    """Subclass it, create parameters in __init__ and define forward()."""

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} defines no forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # --- finding tensors -------------------------------------------------

    def named_tensors(self) -> Iterator[tuple[str, Tensor]]:
        """Every Tensor of the module tree: parameters and buffers."""
        return _walk(self, "", set())

    def named_parameters(self) -> Iterator[tuple[str, Tensor]]:
        for name, tensor in self.named_tensors():
            if tensor.requires_grad:
                yield name, tensor

    def parameters(self) -> list[Tensor]:
        return [tensor for _, tensor in self.named_parameters()]

    def zero_grad(self) -> None:
        for parameter in self.parameters():
            parameter.zero_grad()

    # --- saving and loading ----------------------------------------------

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """A copy of every tensor's values as numpy arrays, by dotted name."""
        return OrderedDict((name, np.array(tensor.numpy(), copy=True))
                           for name, tensor in self.named_tensors())

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Write the arrays of state into the module's existing tensors.

        The tensors are updated in place (not replaced), so an optimizer that
        already holds them keeps working. All names and shapes are checked
        before anything is written.
        """
        import cudagrad as cg

        own = OrderedDict(self.named_tensors())
        missing = [name for name in own if name not in state]
        unexpected = [name for name in state if name not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        targets = []
        for name, tensor in own.items():
            if name not in state:
                continue
            array = np.asarray(state[name])
            if tuple(array.shape) != tuple(tensor.shape):
                raise ValueError(f"load_state_dict: '{name}' has shape {tuple(array.shape)} "
                                 f"in the state dict but {tuple(tensor.shape)} in the module")
            targets.append((tensor, array))
        with cg.no_grad():
            for tensor, array in targets:
                value = cg.tensor(array, dtype=tensor.dtype, device=tensor.device, requires_grad=False)
                tensor.assign(value)
            if targets:
                cg.realize(*(tensor for tensor, _ in targets))

    # --- printing ----------------------------------------------------------

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = [(name, value) for name, value in vars(self).items() if isinstance(value, Module)]
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"  ({name}): {child!r}".replace("\n", "\n  ") for name, child in children]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"
