"""Tensor: the user's handle on a lazy graph node.

Ops build nodes (checking their input here, at the user's line); reading
.data, .grad, numpy() and friends realizes. Autograd state (requires_grad, the
accumulated gradient) lives here; the gradient rules live in cudagrad/ir.
"""
from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager

import numpy as np

from cudagrad import dtypes
from cudagrad.checks import GradientError
from cudagrad.device import canonical_device, get_device
from cudagrad.ir import ops as ir
from cudagrad.ir.autograd import gradients
from cudagrad.ir.node import Node, Op, Storage, make_node, prod
from cudagrad.realization import input_buffer, kernels_for, realize_nodes
from cudagrad.tensor_api import TensorOps

_grad_mode = threading.local()
# leaf nodes -> the tensor that owns them, so backward() can find where to accumulate
_LEAF_OWNERS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def grad_enabled() -> bool:
    return getattr(_grad_mode, "enabled", True)


@contextmanager
def no_grad():
    """Ops inside build no gradient graph: their results do not require grad."""
    previous = grad_enabled()
    _grad_mode.enabled = False
    try:
        yield
    finally:
        _grad_mode.enabled = previous


def buffer_node(buffer, shape, dtype, device: str) -> Node:
    return make_node(Op.BUFFER, (), Storage(buffer, device), tuple(shape), dtype, device)


def host_to_storage(dtype: dtypes.DType, array: np.ndarray) -> np.ndarray:
    """numpy values -> the bits a buffer of dtype holds."""
    if dtype.name == "bfloat16":
        bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
        rounded = bits + 0x7FFF + ((bits >> 16) & 1)
        return (rounded >> 16).astype(np.uint16)
    return np.ascontiguousarray(array, dtype=dtype.numpy)


def storage_to_host(dtype: dtypes.DType, array: np.ndarray) -> np.ndarray:
    if dtype.name == "bfloat16":
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array


class Tensor(TensorOps):    # TensorOps: the types of the operators methods.py binds
    __slots__ = ("_node", "requires_grad", "_grad", "_pending", "_is_leaf", "__weakref__")
    __array_priority__ = 1000     # numpy scalars on the left defer to our operators

    def __init__(self, node: Node, requires_grad: bool = False, leaf: bool = False):
        self._node = node
        self.requires_grad = requires_grad
        self._grad: Tensor | None = None
        self._pending: Node | None = None      # a value assign() will store here
        self._is_leaf = leaf
        if leaf:
            assert node.op == Op.BUFFER
            _LEAF_OWNERS[id(node)] = self

    @staticmethod
    def from_numpy_array(array: np.ndarray, dtype: dtypes.DType, device: str,
                         requires_grad: bool) -> Tensor:
        device = canonical_device(device)
        buffer = get_device(device).from_numpy(host_to_storage(dtype, array))
        return Tensor(buffer_node(buffer, array.shape, dtype, device), requires_grad, leaf=True)

    # ---- attributes --------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self._node.shape

    @property
    def size(self) -> list[int]:
        return list(self._node.shape)

    @property
    def ndim(self) -> int:
        return len(self._node.shape)

    def numel(self) -> int:
        return prod(self._node.shape)

    def dim(self) -> int:
        return self.ndim

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    @property
    def dtype(self) -> dtypes.DType:
        return self._node.dtype

    @property
    def device(self) -> str:
        return self._node.device

    @property
    def is_leaf(self) -> bool:
        """Made by a constructor (or detach), or an op result that needs no gradient."""
        return self._is_leaf or not self.requires_grad

    @property
    def node(self) -> Node:
        return self._node

    # ---- realization and conversion ----------------------------------------------
    def realize(self) -> Tensor:
        realize(self)
        return self

    def numpy(self) -> np.ndarray:
        self.realize()
        node = self._node
        buffer = input_buffer(node)
        flat = get_device(node.device).to_numpy(buffer, node.dtype.numpy, node.numel)
        return storage_to_host(node.dtype, flat).reshape(node.shape)

    @property
    def data(self) -> list:
        return self.numpy().reshape(-1).tolist()

    def tolist(self):
        return self.numpy().tolist()

    def item(self):
        if self.numel() != 1:
            raise ValueError(f"item: only one-element tensors convert to a Python number, "
                             f"this one has shape {list(self.shape)}")
        return self.numpy().reshape(-1)[0].item()

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __bool__(self) -> bool:
        return bool(self.item())

    def __repr__(self) -> str:
        """Like PyTorch's (realizes); lazy under a debugger or CUDAGRAD_LAZY_REPR=1 (see printing.py)."""
        from cudagrad.printing import tensor_repr
        return tensor_repr(self)

    __str__ = __repr__

    def __dlpack__(self, *, stream=None, **kwargs):
        from cudagrad.interop import to_dlpack
        return to_dlpack(self, stream, **kwargs)

    def __dlpack_device__(self):
        from cudagrad.interop import dlpack_device
        return dlpack_device(self)

    def detach(self) -> Tensor:
        node = self._node
        if node.realized is not None or node.op == Op.BUFFER:
            return Tensor(buffer_node(input_buffer(node), node.shape, node.dtype, node.device),
                          leaf=True)
        return Tensor(ir.detach(node))

    def to(self, target) -> Tensor:
        """A dtype converts (differentiably); a device copies the data across."""
        if isinstance(target, dtypes.DType) or target in dtypes.DTYPE_NAMES:
            return self.cast(target)
        device = canonical_device(target)
        if device == self.device:
            return self
        array = self.numpy()
        return Tensor.from_numpy_array(array, self.dtype, device, self.requires_grad)

    def cuda(self) -> Tensor:
        return self.to("cuda")

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def cast(self, dtype) -> Tensor:
        dtype = dtypes.to_dtype(dtype)
        if dtype == self.dtype:
            return self
        return result_tensor(ir.cast(self._node, dtype), self)

    def float(self) -> Tensor:
        return self.cast(dtypes.float32)

    def double(self) -> Tensor:
        return self.cast(dtypes.float64)

    # ---- autograd ----------------------------------------------------------------
    @property
    def grad_tensor(self) -> Tensor | None:
        return self._grad

    @grad_tensor.setter
    def grad_tensor(self, value: Tensor | None) -> None:
        self._grad = value

    @property
    def grad(self) -> list | None:
        if self._grad is None:
            return None
        return self._grad.data

    def zero_grad(self) -> None:
        self._grad = None

    def backward(self, gradient: Tensor | None = None) -> None:
        if not self.requires_grad:
            raise GradientError(f"backward: this tensor (shape {list(self.shape)}) does not "
                                "require grad: no input requires grad, or it was built under no_grad")
        if gradient is None:
            if self.numel() != 1:
                raise GradientError(f"backward: a gradient can be implied only for a one-element "
                                    f"output; this one has shape {list(self.shape)}: pass "
                                    "backward(gradient) with a tensor of that shape")
            seed = ir.const(1, self.shape, self.dtype, self.device)
        else:
            if not isinstance(gradient, Tensor):
                gradient = tensor_like(gradient, self)
            if tuple(gradient.shape) != tuple(self.shape):
                raise ValueError(f"backward: gradient shape {list(gradient.shape)} does not match "
                                 f"the output's shape {list(self.shape)}")
            seed = ir.cast(gradient._node, self.dtype)
        leaves = _leaves_requiring_grad(self._node)
        grads = gradients(self._node, [leaf._node for leaf in leaves], seed)
        for leaf, grad in zip(leaves, grads):
            if grad is None:
                continue
            if grad.op == Op.BUFFER or grad.realized is not None:
                grad = ir.detach(grad)       # a gradient owns its buffer, never aliases data
            if leaf._grad is not None:
                grad = ir.add(leaf._grad._node, grad)
            leaf._grad = Tensor(grad)

    # ---- in-place update (optimizers) ----------------------------------------------
    def assign(self, value: Tensor) -> Tensor:
        """Make this leaf hold value's elements from its next realization on.
        Buffers are never written twice: the result lands in a buffer from the
        allocator's free list (the old one goes back to it once nothing reads it),
        and graphs built before the assignment keep the old value, as in PyTorch."""
        if not self._is_leaf:
            raise ValueError("assign: only a leaf tensor (one made by a constructor) can be assigned")
        if not isinstance(value, Tensor):
            value = tensor_like(value, self)
        if tuple(value.shape) != tuple(self.shape):
            raise ValueError(f"assign: value shape {list(value.shape)} does not match {list(self.shape)}")
        if value.device != self.device:
            raise ValueError(f"assign: value is on {value.device}, the tensor on {self.device}")
        self._pending = ir.cast(value._node, self.dtype)
        return self

    # ---- inspection --------------------------------------------------------------
    def kernels(self) -> list:
        target = self._pending if self._pending is not None else self._node
        return kernels_for([target])


def _leaves_requiring_grad(output: Node) -> list[Tensor]:
    leaves, seen, stack = [], set(), [output]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.op == Op.BUFFER:
            owner = _LEAF_OWNERS.get(id(node))
            if owner is not None and owner.requires_grad and owner._node is node:
                leaves.append(owner)
        elif node.op != Op.DETACH:
            stack.extend(node.srcs)
    return leaves


def result_tensor(node: Node, *inputs: Tensor) -> Tensor:
    """Wrap an op's node: it requires grad when an input does (outside no_grad)."""
    wants_grad = any(t.requires_grad for t in inputs)
    if wants_grad and not grad_enabled():
        return Tensor(ir.detach(node), False)
    return Tensor(node, wants_grad)


def tensor_like(value, like: Tensor) -> Tensor:
    array = np.asarray(value, dtype=storage_to_host(like.dtype, np.zeros(0, like.dtype.numpy)).dtype)
    return Tensor.from_numpy_array(array, like.dtype, like.device, False)


def realize(*tensors: Tensor) -> None:
    """Realize several tensors in one schedule, so shared work is done once.
    Pending assignments land here too."""
    targets, assigned = [], []
    for tensor in tensors:
        if not isinstance(tensor, Tensor):
            raise TypeError(f"realize: expected tensors, got {type(tensor).__name__}")
        if tensor._pending is not None:
            targets.append(tensor._pending)
            assigned.append(tensor)
        else:
            targets.append(tensor._node)
    realize_nodes(targets)
    for tensor in assigned:
        # A fresh leaf node for the new value: graphs built on the old value (lazy
        # results, gradients, cached realizations) keep reading the old buffer.
        value = tensor._pending
        assert value is not None
        tensor._pending = None
        old_node = tensor._node
        tensor._node = buffer_node(input_buffer(value), old_node.shape, old_node.dtype,
                                   old_node.device)
        if _LEAF_OWNERS.get(id(old_node)) is tensor:
            del _LEAF_OWNERS[id(old_node)]    # the tensor lives on: its old entry would leak
        _LEAF_OWNERS[id(tensor._node)] = tensor
