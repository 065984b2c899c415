"""DLPack: share memory with numpy (cpu) and with PyTorch or CuPy (cuda), no copies.

Exports build a DLManagedTensor with ctypes and hand it out in a "dltensor"
capsule; the exported buffer stays alive until the consumer calls the deleter.
Imports read the producer's DLManagedTensor and wrap its memory as a buffer
that calls the producer's deleter when cudagrad no longer needs it.
"""
from __future__ import annotations

import ctypes

import numpy as np

from cudagrad import dtypes

KDL_CPU, KDL_CUDA = 1, 2
_CODES = {"float32": (2, 32), "float64": (2, 64), "float16": (2, 16), "bfloat16": (4, 16),
          "int32": (0, 32), "bool": (6, 8)}
_FROM_CODE = {code: dtypes.to_dtype(name) for name, code in _CODES.items()}


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class DLManagedTensor(ctypes.Structure):
    pass


_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensor))
DLManagedTensor._fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p),
                            ("deleter", _DELETER)]


class DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class DLManagedTensorVersioned(ctypes.Structure):
    pass


_VERSIONED_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensorVersioned))
DLManagedTensorVersioned._fields_ = [("version", DLPackVersion), ("manager_ctx", ctypes.c_void_p),
                                     ("deleter", _VERSIONED_DELETER), ("flags", ctypes.c_uint64),
                                     ("dl_tensor", DLTensor)]

_pythonapi = ctypes.pythonapi
_pythonapi.PyCapsule_New.restype = ctypes.py_object
_pythonapi.PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_pythonapi.PyCapsule_GetPointer.restype = ctypes.c_void_p
_pythonapi.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_pythonapi.PyCapsule_SetName.argtypes = [ctypes.py_object, ctypes.c_char_p]

# exported tensors alive until their consumer calls the deleter: address -> keep-alive
_EXPORTED: dict[int, tuple] = {}


@_DELETER
def _release_export(managed) -> None:
    _EXPORTED.pop(ctypes.addressof(managed.contents), None)


@_VERSIONED_DELETER
def _release_versioned_export(managed) -> None:
    _EXPORTED.pop(ctypes.addressof(managed.contents), None)


def dlpack_device(tensor) -> tuple[int, int]:
    return (KDL_CUDA, 0) if tensor.device == "cuda" else (KDL_CPU, 0)


def to_dlpack(tensor, stream=None, max_version=None, **_ignored):
    """A capsule over the tensor's own buffer: "dltensor_versioned" (DLPack 1.0) when
    the consumer asks for version 1 or later, else the legacy "dltensor"."""
    from cudagrad.device import get_device
    from cudagrad.realization import input_buffer
    tensor.realize()
    node = tensor.node
    buffer = input_buffer(node)
    if tensor.device == "cuda":
        get_device("cuda").synchronize()     # the consumer's stream may read at once
    versioned = max_version is not None and tuple(max_version)[0] >= 1
    return make_capsule(buffer, node.shape, node.dtype, dlpack_device(tensor), versioned)


_SHAPE_ARRAY_TYPES: dict[int, type] = {}


def _shape_array_type(length: int) -> type:
    """ctypes int64[length], made once per length: ctypes may build a fresh array type,
    which lives in reference cycles, on each `c_int64 * length`."""
    array_type = _SHAPE_ARRAY_TYPES.get(length)
    if array_type is None:
        array_type = _SHAPE_ARRAY_TYPES[length] = ctypes.c_int64 * length
    return array_type


def make_capsule(buffer, shape, dtype, device, versioned: bool = False):
    """The capsule has no destructor: a destructor runs while the consumer may hold
    an exception, where no ctypes call can run. Until the consumer calls the deleter,
    _EXPORTED keeps the buffer alive (a capsule never consumed keeps it for good)."""
    shape_array = _shape_array_type(max(len(shape), 1))(*shape)
    code, bits = _CODES[dtype.name]
    tensor = DLTensor(buffer.ptr, DLDevice(*device), len(shape), DLDataType(code, bits, 1),
                      shape_array, None, 0)
    managed: ctypes.Structure
    if versioned:
        managed = DLManagedTensorVersioned()
        managed.version = DLPackVersion(1, 0)
        managed.deleter = _release_versioned_export
        managed.flags = 0
        name = b"dltensor_versioned"
    else:
        managed = DLManagedTensor()
        managed.deleter = _release_export
        name = b"dltensor"
    managed.dl_tensor = tensor
    managed.manager_ctx = None
    address = ctypes.addressof(managed)
    _EXPORTED[address] = (managed, shape_array, buffer)
    return _pythonapi.PyCapsule_New(address, name, None)


class ImportedBuffer:
    """Memory owned by another library; its deleter runs when this is collected."""

    def __init__(self, ptr: int, nbytes: int, device: str, managed_address: int, owner):
        self.ptr = ptr
        self.nbytes = nbytes
        self.device = device
        self._managed_address = managed_address
        self._owner = owner                  # the producer's object, kept alive too
        self.array = None

    def __del__(self):
        managed = DLManagedTensor.from_address(self._managed_address)
        if managed.deleter:
            managed.deleter(ctypes.pointer(managed))


def from_dlpack(source, requires_grad: bool = False):
    """A tensor sharing source's memory (numpy arrays, PyTorch and CuPy tensors...)."""
    from cudagrad.capture import note_host_buffer
    from cudagrad.device import get_device
    from cudagrad.tensor import Tensor, buffer_node
    if isinstance(source, Tensor):
        return source.detach()
    device_type, _ = source.__dlpack_device__()
    if device_type == KDL_CPU:
        array = np.from_dlpack(source)
        dtype = dtypes.to_dtype(array.dtype) if array.dtype != np.uint16 else dtypes.bfloat16
        if not array.flags.c_contiguous:
            raise ValueError(f"from_dlpack: only contiguous arrays can be shared; got strides "
                             f"{array.strides} for shape {list(array.shape)}")
        buffer = get_device("cpu").wrap_numpy(array)
        note_host_buffer(buffer)        # memory the caller may change: cg.jit refuses to freeze it
        return Tensor(buffer_node(buffer, array.shape, dtype, "cpu"), requires_grad, leaf=True)
    if device_type != KDL_CUDA:
        raise ValueError(f"from_dlpack: unsupported device type {device_type} (cpu=1, cuda=2)")
    device = get_device("cuda")
    capsule = source.__dlpack__(stream=device.stream_handle)
    address = _pythonapi.PyCapsule_GetPointer(capsule, b"dltensor")
    _pythonapi.PyCapsule_SetName(capsule, b"used_dltensor")     # we own it now
    tensor = DLManagedTensor.from_address(address).dl_tensor
    code = (tensor.dtype.code, tensor.dtype.bits)
    if code not in _FROM_CODE or tensor.dtype.lanes != 1:
        raise TypeError(f"from_dlpack: unsupported dtype code {code}")
    dtype = _FROM_CODE[code]
    shape = tuple(tensor.shape[i] for i in range(tensor.ndim))
    if tensor.strides:
        expected, running = [], 1
        for size in reversed(shape):
            expected.append(running)
            running *= size
        strides = tuple(tensor.strides[i] for i in range(tensor.ndim))
        if any(s != e for s, e, size in zip(strides, reversed(expected), shape) if size != 1):
            raise ValueError(f"from_dlpack: only contiguous tensors can be shared; got strides "
                             f"{list(strides)} for shape {list(shape)} (call .contiguous() first)")
    count = int(np.prod(shape)) if shape else 1
    buffer = ImportedBuffer(tensor.data + tensor.byte_offset, count * dtype.itemsize, "cuda",
                            address, source)
    note_host_buffer(buffer)
    return Tensor(buffer_node(buffer, shape, dtype, "cuda"), requires_grad, leaf=True)
