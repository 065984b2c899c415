"""Stateless functions on tensors: activations and losses (torch.nn.functional)."""
from __future__ import annotations

import numpy as np

from cudagrad.capture import ACTIVE as _CAPTURING
from cudagrad.capture import current as current_capture
from cudagrad.capture import forget_host_buffer
from cudagrad.tensor import Tensor

_REDUCTIONS = ("mean", "sum", "none")


def relu(x):
    return x.relu()


def softmax(x, axis: int = -1):
    return x.softmax(axis)


def log_softmax(x, axis: int = -1):
    return x.log_softmax(axis)


def linear(x, weight, bias=None):
    """x @ weight.T + bias, weight of shape [out_features, in_features]."""
    out = x @ weight.T
    return out if bias is None else out + bias


def _labels_to_numpy(labels) -> np.ndarray:
    """Class ids as a 1-D int64 array, from a list, a numpy array or a Tensor.

    A Tensor of labels is read back to the host: the ids must be checked
    against the number of classes now, at build time, and the one-hot mask
    below is built on the host anyway (exact, and one small copy).
    """
    if isinstance(labels, Tensor):
        if labels.dtype.is_float:
            raise TypeError(f"cross_entropy: labels must be int class ids, got a {labels.dtype.name} tensor")
        array = labels.numpy()
    else:
        array = np.asarray(labels)
        if array.size == 0:
            array = array.astype(np.int64)
        if array.dtype.kind not in "iu":
            raise TypeError(f"cross_entropy: labels must be int class ids, got {array.dtype} values")
    if array.ndim != 1:
        raise ValueError(f"cross_entropy: labels must be 1-D, got shape {tuple(array.shape)}")
    return array.astype(np.int64)


def cross_entropy(logits, labels, reduction: str = "mean"):
    """-log softmax(logits)[i, labels[i]], averaged over the batch (PyTorch's default).

    logits: [N, C] tensor of unnormalised scores; labels: N int class ids.
    log_softmax subtracts the row maximum first, so large logits do not
    overflow. The label's entry is picked with a 0/1 mask (there is no
    gather op): the product leaves only that entry in each row's sum.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"cross_entropy: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy: logits must have shape [N, C], got {tuple(logits.shape)}")
    batch, classes = logits.shape
    if _CAPTURING[0] is not None and isinstance(labels, Tensor) and current_capture() is not None:
        mask = _one_hot_on_device(labels, batch, classes, logits)
    else:
        mask = _one_hot_on_host(labels, batch, classes, logits)
    picked = logits.log_softmax(-1) * mask
    if reduction == "none":
        return -picked.sum(axis=1)
    total = picked.sum()
    if reduction == "sum":
        return -total
    return total * (-1.0 / batch)


def _one_hot_on_host(labels, batch: int, classes: int, logits):
    """The 0/1 mask of the labels' entries, built on the host after checking every id."""
    import cudagrad as cg

    ids = _labels_to_numpy(labels)
    if ids.shape[0] != batch:
        raise ValueError(f"cross_entropy: {ids.shape[0]} labels for logits of shape {tuple(logits.shape)} "
                         f"(expected {batch})")
    bad = (ids < 0) | (ids >= classes)
    if bad.any():
        raise ValueError(f"cross_entropy: label {int(ids[bad][0])} is out of range for {classes} classes "
                         f"(logits of shape {tuple(logits.shape)})")

    one_hot = np.zeros((batch, classes), dtype=np.float64)
    one_hot[np.arange(batch), ids] = 1.0
    return cg.tensor(one_hot, dtype=logits.dtype, device=logits.device, requires_grad=False)


_CLASS_IDS: dict = {}      # (classes, device) -> the row 0..classes-1 as int32, made once


def _one_hot_on_device(labels, batch: int, classes: int, logits):
    """The mask as a comparison on the device, for a step captured by cg.jit: the labels
    stay there (a replay cannot read them back), so ids outside [0, classes) are not
    caught here; they pick nothing and add 0 to the loss."""
    import cudagrad as cg

    if labels.dtype.is_float or labels.dtype is cg.bool:
        raise TypeError(f"cross_entropy: labels must be int class ids, got a {labels.dtype.name} tensor")
    if tuple(labels.shape) != (batch,):
        raise ValueError(f"cross_entropy: labels of shape {tuple(labels.shape)} for logits of shape "
                         f"{tuple(logits.shape)} (expected ({batch},))")
    if labels.device != logits.device:
        raise ValueError(f"cross_entropy: labels on {labels.device}, logits on {logits.device}")
    key = (classes, logits.device)
    class_ids = _CLASS_IDS.get(key)
    if class_ids is None:
        class_ids = cg.arange(classes, dtype=cg.int32, device=logits.device)
        forget_host_buffer(class_ids)          # the same values at every replay: a constant
        _CLASS_IDS[key] = class_ids
    ids = labels.cast(cg.int32).reshape(batch, 1)
    return (ids == class_ids.reshape(1, classes)).cast(logits.dtype).detach()


def mse_loss(pred, target, reduction: str = "mean"):
    """Mean of (pred - target)^2; target a tensor or array of pred's shape."""
    import cudagrad as cg
    from cudagrad.tensor import Tensor

    if reduction not in _REDUCTIONS:
        raise ValueError(f"mse_loss: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if not isinstance(target, Tensor):
        target = cg.tensor(np.asarray(target, dtype=np.float64), dtype=pred.dtype, device=pred.device,
                           requires_grad=False)
    # PyTorch only warns here; a silent broadcast of [N] against [N, 1] is a
    # classic bug, so refuse it.
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"mse_loss: pred of shape {tuple(pred.shape)} and target of shape "
                         f"{tuple(target.shape)} differ")
    diff = pred - target
    squared = diff * diff
    if reduction == "none":
        return squared
    if reduction == "sum":
        return squared.sum()
    return squared.mean()
