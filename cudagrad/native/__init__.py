"""An optional C accelerator for the tiny-op hot path (issue 5).

In pure Python, a realized 2x2 matmul is some sixty interpreted calls and attribute
reads of 50 to 200 ns each: that, not the kernel, is its time. _accel.c does the
busiest of them in C, with the same objects and the same results:

    ir.node.make_node           hash-consed node building (matmul, sum, ... short paths)
    realization.canonicalize    the structural key walk of every realize
    Plan.replay (cpu)           allocate, call the kernels' C functions, hand out outputs
    Tensor.data (cpu float32)   realize through a known plan and read the values
    Tensor.grad                 the same, after PendingBackward.realize
    PendingBackward.realize     a known GradientPlan run, the leaves given their gradients
    defer_backward              a backward() of a small graph recorded
    tensor(shape, list)         a float32 cpu leaf straight from the list

It is compiled at first import by the C compiler the cpu device uses, against this
Python's headers, and cached beside the kernels, in the cache's native/ folder (key:
the source, the Python version and ABI, the compiler and the flags). Without a compiler
or headers, when the build fails, or with CUDAGRAD_NATIVE=0, none of it is installed
and the Python paths run unchanged; `reason()` says why. Whatever the C side does not
handle (another device or dtype, a cg.jit capture, CUDAGRAD_DEBUG, deep graphs) it
hands to the Python function it replaces.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import platform
import shutil
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

from cudagrad.runtime import cache

SOURCE = Path(__file__).with_name("_accel.c")
# -O1: the code is calls into the CPython API, as fast as with -O2 (the tiny bench within
# noise), and it builds in 0.23 s instead of 0.38 s on a cold cache
FLAGS = ("-O1", "-fPIC", "-shared", "-fno-strict-aliasing")
_MODULE_NAME = "cudagrad.native._accel"     # its init function: PyInit__accel
CACHE_FOLDER = "native"     # beside the kernels, in a folder of its own: it is no kernel

_state: dict = {"accel": None, "reason": "not loaded yet"}


def enabled() -> bool:
    return os.environ.get("CUDAGRAD_NATIVE", "1").strip() not in ("0", "false", "no", "off")


def reason() -> str:
    """Why the accelerator is not in use ('' when it is)."""
    return _state["reason"]


def accel() -> ModuleType | None:
    """The installed accelerator, or None (the Python paths run)."""
    return _state["accel"]


def python_function(name: str):
    """The Python function the accelerator replaced (make_node, canonicalize, data)."""
    return _state["python"][name]


def _compiler() -> tuple[str, str] | None:
    """The C compiler's path and an identity of its binary (changes when it is replaced;
    cheaper at import than running `cc --version`)."""
    path = shutil.which(os.environ.get("CC", "cc"))
    if path is None:
        return None
    real = os.path.realpath(path)
    stat = os.stat(real)
    return path, f"{real}|{stat.st_size}|{stat.st_mtime_ns}"


def _include_dirs() -> list[str]:
    paths = sysconfig.get_paths()
    found = [paths[name] for name in ("include", "platinclude") if paths.get(name)]
    return [path for path in dict.fromkeys(found) if (Path(path) / "Python.h").exists()]


def _load_module(path: Path) -> ModuleType:
    loader = importlib.machinery.ExtensionFileLoader(_MODULE_NAME, str(path))
    spec = importlib.util.spec_from_file_location(_MODULE_NAME, str(path), loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def build() -> ModuleType | None:
    """The compiled module, from the disk cache or freshly built; None (with reason())
    where it cannot be."""
    found = _compiler()
    includes = _include_dirs()
    if found is None:
        _state["reason"] = "no C compiler (set CC or install gcc)"
        return None
    if not includes:
        _state["reason"] = "no Python headers (Python.h) for this interpreter"
        return None
    compiler, identity = found
    source = SOURCE.read_text()
    key = cache.make_key(source, identity, sys.version, sysconfig.get_config_var("SOABI") or "",
                         str(sysconfig.get_config_var("EXT_SUFFIX")), " ".join(FLAGS),
                         platform.machine(), "native")
    entry = cache.load(key, ".so", CACHE_FOLDER)
    if entry is not None:
        try:
            return _load_module(entry)
        except (ImportError, OSError):      # a bad entry is rebuilt, never trusted
            pass
    # only to build: `import cudagrad` with a warm cache needs neither
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory(prefix="cudagrad-native-") as work:
        output = Path(work) / "_accel.so"
        command = [compiler, *FLAGS, *(f"-I{path}" for path in includes), "-o", str(output),
                   str(SOURCE)]
        try:
            result = subprocess.run(command, capture_output=True, text=True)
        except OSError as error:
            _state["reason"] = f"the C compiler did not run: {error}"
            return None
        if result.returncode != 0:
            _state["reason"] = f"the build failed: {result.stderr.strip()[-2000:]}"
            return None
        cache.store(key, ".so", output.read_bytes(), CACHE_FOLDER)
        try:
            # the fresh file, not the entry's path: a bad entry of that path may be loaded
            return _load_module(output)
        except (ImportError, OSError) as error:
            _state["reason"] = f"the built module did not load: {error}"
            return None


def install() -> ModuleType | None:
    """Build or load the accelerator and put its functions in place of the Python ones
    (once, at `import cudagrad`). None where it is off or cannot be built."""
    if _state["accel"] is not None:
        return _state["accel"]
    if not enabled():
        _state["reason"] = "CUDAGRAD_NATIVE=0"
        return None
    try:
        module = build()
    except OSError as error:       # an unreadable source or compiler: run without it
        _state["reason"] = f"unavailable: {error}"
        return None
    if module is None:
        return None
    import importlib

    from cudagrad import backward_cache, creation, environment, realization, reductions
    from cudagrad.capture import ACTIVE
    from cudagrad.device import get_device
    from cudagrad.dtypes import float32
    from cudagrad.ir import node as node_module
    from cudagrad.ir import ops
    from cudagrad.runtime import cpu
    from cudagrad.runtime.stats import STATS
    tensor_module = importlib.import_module("cudagrad.tensor")   # cg.tensor is the constructor
    Tensor = tensor_module.Tensor
    python_data = Tensor.__dict__["data"].fget
    python_grad = Tensor.__dict__["grad"].fget
    configuration = {
        "Node": node_module.Node, "Tensor": Tensor, "Storage": node_module.Storage,
        "CpuBuffer": cpu.CpuBuffer, "Slot": backward_cache._Slot,
        "PendingBackward": backward_cache.PendingBackward,
        "BUFFER": node_module.Op.BUFFER, "CONST": node_module.Op.CONST,
        "float32": float32, "array": cpu.array, "zero_bytes": cpu._ZERO_BYTES,
        "nodes": node_module._NODES, "node_globals": vars(node_module),
        "plans": realization._PLANS, "stats": STATS, "active": ACTIVE,
        # CUDAGRAD_DEBUG is looked up in os.environ's own dict (environment.py); None: always
        # take the Python path, which checks it
        "environ": environment._DATA if environment._FAST else None,
        "canonicalize": realization.canonicalize, "realize_node": realization.realize_node,
        "data": python_data, "allocate": get_device("cpu").allocate,
        "make_node": node_module.make_node, "grad": python_grad,
    }
    try:
        module.configure(configuration)
    except (TypeError, KeyError) as error:     # the classes are not laid out as it expects
        _state["reason"] = f"not configured: {error}"
        return None
    # the replaced functions (tests compare)
    _state["python"] = {"make_node": node_module.make_node, "canonicalize": realization.canonicalize,
                        "data": python_data, "grad": python_grad}
    # modules that imported make_node or canonicalize by name get the C ones too
    for holder in (node_module, ops, reductions, tensor_module):
        setattr(holder, "make_node", module.make_node)
    for holder in (realization, backward_cache):
        setattr(holder, "canonicalize", module.canonicalize)
    setattr(creation, "_native_leaf", module.float32_leaf)
    setattr(Tensor, "data", property(module.tensor_data, doc=python_data.__doc__))
    setattr(Tensor, "grad", property(module.tensor_grad, doc=python_grad.__doc__))
    setattr(backward_cache, "_native_gradients", module.realize_gradients)
    setattr(backward_cache, "_native_defer", module.defer_backward)
    _state["accel"] = module
    _state["reason"] = ""
    return module
