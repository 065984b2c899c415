"""cg.save / cg.load: dicts of arrays (state dicts) in numpy's .npz format.

.npz is a zip of .npy files: portable, readable without cudagrad, and loaded
with allow_pickle=False, so opening a checkpoint never runs code.
"""
from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np


def save(obj: dict, path) -> None:
    """Write a dict of name -> numpy array (or Tensor) to path, as .npz.

    The file is written exactly at path (numpy would append ".npz" to a bare
    name); it is written to a temporary name first and renamed, so a crash
    never leaves half a checkpoint behind.
    """
    from cudagrad.tensor import Tensor

    if not isinstance(obj, dict):
        raise TypeError(f"save: expected a dict of arrays (a state_dict), got a {type(obj).__name__}")
    arrays = OrderedDict()
    for name, value in obj.items():
        if not isinstance(name, str):
            raise TypeError(f"save: keys must be str, got {name!r}")
        if isinstance(value, Tensor):
            value = value.numpy()
        elif not isinstance(value, (np.ndarray, np.generic, int, float, bool)):
            raise TypeError(f"save: '{name}' is a {type(value).__name__}; only arrays, tensors and numbers "
                            f"can be saved")
        arrays[name] = np.asarray(value)
    path = os.fspath(path)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "wb") as file:
        np.savez(file, **arrays)  # type: ignore[arg-type]
    os.replace(temporary, path)


def load(path) -> "OrderedDict[str, np.ndarray]":
    """Read a file written by save(): name -> numpy array, in the saved order."""
    with np.load(os.fspath(path), allow_pickle=False) as archive:
        return OrderedDict((name, archive[name]) for name in archive.files)
