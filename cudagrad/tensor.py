"""Tensor: the user's handle on a lazy graph node.

Ops build nodes (checking their input here, at the user's line); reading
.data, .grad, numpy() and friends realizes. Autograd state (requires_grad, the
accumulated gradient) lives here; the gradient rules live in cudagrad/ir.
"""
from __future__ import annotations

import gc
import threading
import weakref
from contextlib import contextmanager

import numpy as np

from cudagrad import dtypes
from cudagrad.capture import ACTIVE as _CAPTURING
from cudagrad.capture import current as current_capture
from cudagrad.capture import forbid, note_gradient_read, note_gradients, note_host_buffer
from cudagrad.checks import GradientError
from cudagrad.device import canonical_device, get_device
from cudagrad.ir import ops as ir
from cudagrad.ir.autograd import gradients, topological_order
from cudagrad.ir.node import Node, Op, Storage, drop_dead_entries, make_node, prod
from cudagrad.realization import input_buffer, kernels_for, realize_node, realize_nodes
from cudagrad.tensor_api import TensorOps

_grad_mode = threading.local()
_BUFFER = Op.BUFFER     # a module name: Op.BUFFER costs 50 ns on Python 3.11
# A leaf's owner (where backward() accumulates) is a weak reference in its node's
# Storage. This table lists the leaves that have received a gradient (draw() marks
# gradient nodes with it): id -> weak reference, dead entries dropped as it doubles
# and at every full collection.
_LEAF_OWNERS: dict[int, weakref.ref] = {}
_leaf_sweep_at = [1024]


def _sweep_leaf_owners(phase: str = "stop", info: dict | None = None) -> None:
    if phase == "stop" and (info is None or info.get("generation") == 2):
        drop_dead_entries(_LEAF_OWNERS)
        _leaf_sweep_at[0] = max(1024, 2 * len(_LEAF_OWNERS))


gc.callbacks.append(_sweep_leaf_owners)


def leaves_with_gradients() -> list[Tensor]:
    return [leaf for leaf in (ref() for ref in list(_LEAF_OWNERS.values())) if leaf is not None]


# How many no_grad blocks are open, in all threads: while none is (nearly always), every
# op knows grad mode is on without reading the thread-local (a third of a microsecond).
_open_no_grad_blocks = [0]
_no_grad_lock = threading.Lock()


def grad_enabled() -> bool:
    if not _open_no_grad_blocks[0]:
        return True
    return getattr(_grad_mode, "enabled", True)


@contextmanager
def no_grad():
    """Ops inside build no gradient graph: their results do not require grad."""
    previous = grad_enabled()
    with _no_grad_lock:
        _open_no_grad_blocks[0] += 1
    _grad_mode.enabled = False
    try:
        yield
    finally:
        _grad_mode.enabled = previous
        with _no_grad_lock:
            _open_no_grad_blocks[0] -= 1


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
    __slots__ = ("_node", "requires_grad", "_grad", "_pending_backward", "_pending", "_is_leaf",
                 "_accumulated", "__weakref__")
    __array_priority__ = 1000     # numpy scalars on the left defer to our operators
    _accumulated: int             # backward() calls summed in _grad since it was last computed

    def __init__(self, node: Node, requires_grad: bool = False, leaf: bool = False):
        self._node = node
        self.requires_grad = requires_grad
        self._grad: Tensor | None = None
        self._pending_backward = None          # a backward() whose gradient is not built yet
        self._pending: Node | None = None      # a value assign() will store here
        self._is_leaf = leaf
        if leaf:
            assert node.op == Op.BUFFER
            node.arg.owner = weakref.ref(self)

    @staticmethod
    def from_numpy_array(array: np.ndarray, dtype: dtypes.DType, device: str,
                         requires_grad: bool) -> Tensor:
        device = canonical_device(device)
        buffer = get_device(device).from_numpy(host_to_storage(dtype, array))
        if _CAPTURING[0] is not None:
            note_host_buffer(buffer)
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

    def _realized_node(self) -> Node:
        """This tensor's node, computed (a pending assignment landed first)."""
        if self._pending is not None:
            realize(self)
            return self._node
        node = self._node
        if node.realized is None and node.op is not Op.BUFFER:
            realize_node(node)
        return node

    def numpy(self) -> np.ndarray:
        if _CAPTURING[0] is not None:
            forbid("reading a tensor's values on the host (.numpy(), .item(), .tolist())")
        node = self._realized_node()
        buffer = input_buffer(node)
        flat = get_device(node.device).to_numpy(buffer, node.dtype.numpy, node.numel)
        return storage_to_host(node.dtype, flat).reshape(node.shape)

    @property
    def data(self) -> list:
        if _CAPTURING[0] is not None:
            forbid("reading a tensor's values on the host (.data)")
        node = self._node
        if self._pending is not None:
            node = self._realized_node()
        elif node.realized is None and node.op is not _BUFFER:
            realize_node(node)
        if node.device == "cpu" and node.dtype is not dtypes.bfloat16:
            # a cpu buffer is host memory: read it in place, without numpy()'s copy
            dtype = node.dtype
            buffer = node.realized if node.realized is not None else node.arg.buffer
            return buffer.tolist(dtype.name, dtype.numpy, prod(node.shape))
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
        """The gradient as a lazy tensor (nothing runs until it is read)."""
        if _CAPTURING[0] is not None:
            note_gradient_read(self)
        if self._pending_backward is not None:
            self._pending_backward.materialize()
        return self._grad

    @grad_tensor.setter
    def grad_tensor(self, value: Tensor | None) -> None:
        self._pending_backward = None
        self._grad = value
        if value is not None:
            _LEAF_OWNERS[id(self)] = weakref.ref(self)

    @property
    def grad(self) -> list | None:
        if self._pending_backward is not None:
            self._pending_backward.realize()
        if self._grad is None:
            return None
        return self._grad.data

    def zero_grad(self) -> None:
        self._pending_backward = None
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
            if defer_backward(self._node, _LEAF_OWNERS):      # a small graph: see backward_cache.py
                return
            seed = ir.const(1, self.shape, self.dtype, self.device)
        else:
            if not isinstance(gradient, Tensor):
                gradient = tensor_like(gradient, self)
            if tuple(gradient.shape) != tuple(self.shape):
                raise ValueError(f"backward: gradient shape {list(gradient.shape)} does not match "
                                 f"the output's shape {list(self.shape)}")
            seed = ir.cast(gradient._node, self.dtype)
        order = topological_order(self._node)
        leaves = _leaves_requiring_grad(order)
        if _CAPTURING[0] is not None:
            note_gradients(leaves)
        for leaf in leaves:
            if leaf._pending_backward is not None:      # accumulate onto its gradient's nodes
                leaf._pending_backward.materialize()
        grads = gradients(self._node, [leaf._node for leaf in leaves], seed, order)
        for leaf, grad in zip(leaves, grads):
            if grad is None:
                continue
            if grad.op == Op.BUFFER or grad.realized is not None:
                grad = ir.detach(grad)       # a gradient owns its buffer, never aliases data
            if leaf._grad is not None:
                grad = ir.add(_accumulation_base(leaf), grad)
            else:
                leaf._accumulated = 0
            leaf._grad = Tensor(grad)
            _LEAF_OWNERS[id(leaf)] = weakref.ref(leaf)
        if len(_LEAF_OWNERS) >= _leaf_sweep_at[0]:
            _sweep_leaf_owners()

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
        if _CAPTURING[0] is not None and (capture := current_capture()) is not None:
            capture.assigned.append(self)      # cg.jit realizes it at the end of the call
        return self

    # ---- inspection --------------------------------------------------------------
    def kernels(self) -> list:
        target = self._pending if self._pending is not None else self._node
        return kernels_for([target])


# A gradient summed over many backward() calls and never read (an input tensor that
# requires grad, reused every step) would grow a chain of lazy additions, each holding its
# step's whole graph alive. Every this many additions the sum is computed and the chain cut.
REALIZE_ACCUMULATED_EVERY = 8


def _accumulation_base(leaf: Tensor) -> Node:
    """The node a new gradient of leaf is added to: its gradient so far, computed and held
    as a plain buffer once it sums REALIZE_ACCUMULATED_EVERY backward() calls."""
    grad = leaf._grad
    assert grad is not None
    count = getattr(leaf, "_accumulated", 0) + 1
    node = grad._node
    if count >= REALIZE_ACCUMULATED_EVERY and node.op is not Op.BUFFER:
        node = grad._realized_node()
        node = buffer_node(input_buffer(node), node.shape, node.dtype, node.device)
        count = 0
    leaf._accumulated = count
    return node


def _leaves_requiring_grad(order: list[Node]) -> list[Tensor]:
    """The tensors owning the leaves among order's nodes, where they require grad.
    (A leaf only under a DETACH is listed too; no gradient reaches it.)"""
    leaves = []
    for node in order:
        if node.op is Op.BUFFER:
            owner_ref = node.arg.owner
            owner = owner_ref() if owner_ref is not None else None
            if owner is not None and owner.requires_grad and owner._node is node:
                leaves.append(owner)
    return leaves


def result_tensor(node: Node, *inputs: Tensor) -> Tensor:
    """Wrap an op's node: it requires grad when an input does (outside no_grad)."""
    for tensor in inputs:
        if tensor.requires_grad:
            if _open_no_grad_blocks[0] and not grad_enabled():
                return Tensor(ir.detach(node), False)
            return Tensor(node, True)
    return Tensor(node, False)


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
        value = tensor._pending
        assert value is not None
        tensor._pending = None
        rebind_leaf(tensor, input_buffer(value))
        if _CAPTURING[0] is not None and (capture := current_capture()) is not None:
            capture.rebind(tensor)       # cg.jit replays the rebinding too


def rebind_leaf(tensor: Tensor, buffer) -> None:
    """A fresh leaf node for tensor's new value: graphs built on the old value (lazy
    results, gradients, cached realizations) keep reading the old buffer."""
    old_node = tensor._node
    tensor._node = buffer_node(buffer, old_node.shape, old_node.dtype, old_node.device)
    old_owner = old_node.arg.owner
    if old_owner is not None and old_owner() is tensor:
        old_node.arg.owner = None     # graphs on the old node no longer accumulate here
    tensor._node.arg.owner = weakref.ref(tensor)


from cudagrad.backward_cache import defer_backward  # noqa: E402 (it builds Tensors: import last)
