"""CUDA C to CUBIN with NVRTC, through cuda-python.

Always CUBIN for one exact architecture, never PTX: PTX made by an NVRTC newer
than the driver is refused at load time, while a CUBIN loads and runs.

cuda-python is imported inside the functions, so `import cudagrad` stays fast
and works on machines without it.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from .errors import CompileError

# Flags every compile gets; they are part of the disk-cache key (see cuda.py).
BASE_OPTIONS = ("-default-device", "--std=c++17")


def _nvrtc():
    try:
        from cuda.bindings import nvrtc
    except ImportError as error:
        raise CompileError("nvrtc: cuda-python is not installed (pip install cuda-python)",
                           "", str(error)) from None
    return nvrtc


def _check(result, what: str):
    """cuda-python returns (status, *values); raise on a non-success status."""
    status, values = result[0], result[1:]
    if status:  # NVRTC_SUCCESS is 0
        raise CompileError(f"nvrtc: {what} failed ({status.name})", "", "")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


@functools.cache
def nvrtc_version() -> tuple[int, int]:
    """(major, minor) of the NVRTC library that cuda-python loaded."""
    major, minor = _check(_nvrtc().nvrtcVersion(), "nvrtcVersion")
    return int(major), int(minor)


def nvrtc_library() -> str:
    """Where the loaded NVRTC library lives, for `python -m cudagrad info`."""
    nvrtc_version()  # make sure the library is loaded before looking for it
    maps = Path("/proc/self/maps")
    if maps.exists():
        # The process's own memory map is the ground truth of what got loaded.
        for line in maps.read_text().splitlines():
            path = line.split()[-1]
            if "libnvrtc" in os.path.basename(path) and "builtins" not in path:
                return path
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib
        return load_nvidia_dynamic_lib("nvrtc").abs_path
    except Exception as error:  # pathfinder missing or changed: say so, do not fail
        return f"unknown ({error})"


@functools.cache
def cuda_include_dirs() -> tuple[str, ...]:
    """Directories holding cuda_fp16.h / cuda_bf16.h (the CUDA runtime headers).

    NVRTC has no default include path, so kernels using __half or
    __nv_bfloat16 need one. cuda.pathfinder knows the wheels, conda and the
    system toolkit; the environment variables and /usr/local/cuda cover
    older cuda-python versions without it.
    """
    candidates = []
    try:
        from cuda.pathfinder import find_nvidia_header_directory
        candidates.append(find_nvidia_header_directory("cudart"))
    except Exception:
        pass
    for variable in ("CUDA_PATH", "CUDA_HOME"):
        if os.environ.get(variable):
            candidates.append(os.path.join(os.environ[variable], "include"))
    candidates.append("/usr/local/cuda/include")
    for directory in candidates:
        if directory and os.path.isfile(os.path.join(directory, "cuda_fp16.h")):
            return (directory,)
    return ()


def compile_options(arch: str, options: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Every option NVRTC gets for `arch`: the cache key holds exactly these."""
    if not (arch.startswith("sm_") and arch[3:].rstrip("af").isdigit()):
        raise ValueError(f"nvrtc: arch must look like 'sm_90', got {arch!r}")
    includes = tuple(f"-I{directory}" for directory in cuda_include_dirs())
    return (f"--gpu-architecture={arch}", *BASE_OPTIONS, *includes, *options)


def _program_log(nvrtc, program) -> str:
    size = _check(nvrtc.nvrtcGetProgramLogSize(program), "nvrtcGetProgramLogSize")
    if size <= 1:
        return ""
    log = b" " * size
    _check(nvrtc.nvrtcGetProgramLog(program, log), "nvrtcGetProgramLog")
    return log.rstrip(b"\0").decode(errors="replace").strip()


def compile_cuda(source: str, name: str, arch: str, options: tuple[str, ...] = ()) -> bytes:
    """Compile one CUDA C translation unit to a CUBIN for `arch` (e.g. "sm_90").

    `name` names the program in NVRTC's messages ("name.cu(12): error ...").
    Raises CompileError carrying NVRTC's log on any failure.
    """
    nvrtc = _nvrtc()
    all_options = [option.encode() for option in compile_options(arch, options)]
    try:
        program = _check(nvrtc.nvrtcCreateProgram(source.encode(), f"{name}.cu".encode(),
                                                  0, [], []), "nvrtcCreateProgram")
        try:
            return _compile_program(nvrtc, program, name, arch, all_options, source)
        finally:
            nvrtc.nvrtcDestroyProgram(program)
    except CompileError as error:
        if error.source:
            raise
        # A failing NVRTC call other than the compile itself: still show the source.
        raise CompileError(str(error).split("\n")[0], source, error.log) from None


def _compile_program(nvrtc, program, name, arch, all_options, source) -> bytes:
    (status,) = nvrtc.nvrtcCompileProgram(program, len(all_options), all_options)
    log = _program_log(nvrtc, program)
    if status:
        raise CompileError(f"nvrtc: compiling {name} for {arch} failed ({status.name})",
                           source, log)
    size = _check(nvrtc.nvrtcGetCUBINSize(program), "nvrtcGetCUBINSize")
    if size == 0:
        raise CompileError(f"nvrtc: no CUBIN for {name} ({arch} is not a real architecture?)",
                           source, log)
    cubin = b" " * size
    _check(nvrtc.nvrtcGetCUBIN(program, cubin), "nvrtcGetCUBIN")
    return cubin
