"""Shared helpers for the cudagrad test suite (public API only: `import cudagrad as cg`).

Importable from any test module as `from helpers import ...` (tests/ has no
__init__.py, so pytest puts it on sys.path).
"""
from __future__ import annotations

import numpy as np

import cudagrad as cg

DTYPES = {"float32": cg.float32, "float64": cg.float64}

# (rtol, atol) per dtype, for values computed from O(1) random inputs.
TOLERANCES = {"float32": (1e-4, 1e-5), "float64": (1e-10, 1e-12)}


def dtype_of(name):
    return DTYPES[name] if isinstance(name, str) else name


def np_dtype_of(name):
    return {"float32": np.float32, "float64": np.float64}[name if isinstance(name, str) else name.name]


def make(array, device, dtype="float32", requires_grad=True):
    """A cudagrad leaf holding `array` (a numpy array or a number)."""
    array = np.asarray(array, dtype=np_dtype_of(dtype))
    return cg.tensor(array, device=device, dtype=dtype_of(dtype), requires_grad=requires_grad)


def const(array, device, dtype="float32"):
    """A cudagrad tensor that does not require grad."""
    return make(array, device, dtype, requires_grad=False)


def as_array(t):
    """The tensor's value as a float64 numpy array of its shape."""
    return np.asarray(t.numpy(), dtype=np.float64)


def grad_of(t):
    """The leaf's gradient as a float64 numpy array of its shape (None if no gradient)."""
    g = t.grad
    if g is None:
        return None
    return np.asarray(g, dtype=np.float64).reshape(t.shape)


def assert_close(actual, expected, dtype="float32", msg="", rtol=None, atol=None, check_shape=True):
    """Compare a cudagrad tensor (or array-like) to a float64 numpy reference."""
    default_rtol, default_atol = TOLERANCES[dtype if isinstance(dtype, str) else dtype.name]
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    expected = np.asarray(expected, dtype=np.float64)
    if hasattr(actual, "numpy") and not isinstance(actual, np.ndarray):
        actual = as_array(actual)
    actual = np.asarray(actual, dtype=np.float64)
    if check_shape:
        assert actual.shape == expected.shape, f"{msg}: shape {actual.shape} != expected {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=msg)


def numeric_grad(fn, arrays, index, eps=1e-6):
    """Central finite differences of scalar fn(*arrays) w.r.t. arrays[index] (float64)."""
    arrays = [np.array(a, dtype=np.float64, copy=True) for a in arrays]
    x = arrays[index]
    grad = np.zeros_like(x)
    flat = x.reshape(-1)
    gflat = grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = fn(*arrays)
        flat[i] = old - eps
        minus = fn(*arrays)
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def stats():
    return dict(cg.stats())


def launched():
    return cg.stats()["kernels_launched"]


def compiled():
    return cg.stats()["kernels_compiled"]
