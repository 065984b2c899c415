"""`python -m cudagrad info`: the environment, as a user pastes it into a bug report.

Every probe is wrapped: a machine without a GPU, without cuda-python or without
a C compiler still gets a full report, with each missing piece said plainly.
Everything heavy is imported inside the functions, so `import cudagrad` stays fast.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import warnings
from typing import Any


def _package_version(distribution: str) -> str:
    from importlib import metadata
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    import cudagrad
    result = {"cudagrad": cudagrad.__version__,
              "python": f"{platform.python_version()} ({sys.executable})",
              "platform": platform.platform()}
    for name in ("numpy", "jinja2"):
        result[name] = _package_version(name)
    for name in ("cuda-python", "cuda-bindings"):
        result[name] = _package_version(name)
    return result


def driver_version() -> str:
    """The CUDA version the installed NVIDIA driver supports, e.g. "13.0"."""
    try:
        from cuda.bindings import driver
    except ImportError:
        return "unknown (cuda-python is not installed)"
    try:
        status, version = driver.cuDriverGetVersion()
    except Exception as error:  # libcuda missing: the call itself fails
        return f"unknown ({error})"
    if status:
        return f"unknown ({getattr(status, 'name', status)})"
    return f"{version // 1000}.{version % 1000 // 10}"


def cuda_devices() -> dict[str, Any]:
    from cudagrad.device import cuda_available, get_device
    usable, reason = cuda_available()
    report: dict[str, Any] = {"usable": usable, "reason": reason, "devices": []}
    if not usable:
        return report
    report["driver"] = driver_version()
    try:
        device = get_device("cuda")
    except Exception as error:
        report["usable"] = False
        report["reason"] = f"a GPU was found but could not be opened: {error}"
        return report
    target = dict(getattr(device, "target", {}) or {})
    report["devices"].append({
        "ordinal": getattr(device, "ordinal", 0),
        "name": getattr(device, "device_name", "unknown"),
        "compute_capability": target.get("compute_capability"),
        "arch": target.get("arch"),
        "multiprocessor_count": target.get("multiprocessor_count"),
        "total_memory": getattr(device, "total_memory", None),
        "target": {key: value for key, value in target.items()
                   if isinstance(value, (int, float, str, bool, list, tuple))},
    })
    return report


def nvrtc() -> dict[str, Any]:
    try:
        from cudagrad.runtime.nvrtc import nvrtc_library, nvrtc_version
        major, minor = nvrtc_version()
        return {"found": True, "version": f"{major}.{minor}", "library": nvrtc_library()}
    except Exception as error:
        message = str(error).split("\n")[0]
        return {"found": False, "reason": message or type(error).__name__}


def c_compiler() -> dict[str, Any]:
    try:
        from cudagrad.runtime.cpu import compiler
        path, version = compiler()
        return {"found": True, "path": path, "version": version}
    except Exception as error:
        return {"found": False, "reason": str(error)}


def cache() -> dict[str, Any]:
    from cudagrad.runtime.cache import cache_dir
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        root = cache_dir()
    if root is None:
        reason = str(caught[0].message) if caught else "the cache directory cannot be used"
        return {"path": os.environ.get("CUDAGRAD_CACHE_DIR") or "~/.cache/cudagrad",
                "usable": False, "reason": reason}
    entries, total = 0, 0
    for path in root.iterdir():
        if not path.is_file():
            continue
        try:
            total += path.stat().st_size
        except OSError:
            continue
        # an entry is a binary plus its .sha256 sidecar; temp files are half-written entries
        if not path.name.endswith(".sha256") and not path.name.startswith(".tmp-"):
            entries += 1
    return {"path": str(root), "usable": True, "entries": entries, "bytes": total}


def default_device(cuda: dict[str, Any]) -> dict[str, str]:
    chosen = os.environ.get("CUDAGRAD_DEVICE")
    if chosen:
        from cudagrad.device import canonical_device
        try:
            device = canonical_device(chosen)
        except ValueError as error:
            return {"device": "invalid", "why": f"CUDAGRAD_DEVICE={chosen} is set: {error}"}
        why = f"CUDAGRAD_DEVICE={chosen} is set"
        if device == "cuda" and not cuda["usable"]:
            why += "; but there is no usable GPU, so tensors made there will fail"
        return {"device": device, "why": why}
    if cuda["usable"]:
        return {"device": "cuda", "why": "a usable GPU was found and CUDAGRAD_DEVICE is not set"}
    return {"device": "cpu", "why": "no usable GPU, and CUDAGRAD_DEVICE is not set"}


def collect() -> dict[str, Any]:
    """Everything `python -m cudagrad info` reports, as plain data (JSON-ready)."""
    cuda = cuda_devices()
    return {"versions": versions(), "cuda": cuda, "nvrtc": nvrtc(), "c_compiler": c_compiler(),
            "cache": cache(), "default_device": default_device(cuda),
            "environment": {name: value for name, value in sorted(os.environ.items())
                            if name.startswith("CUDAGRAD_") or name == "CC"}}


def _size(nbytes: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024  # type: ignore[assignment]
    return str(nbytes)


def format_text(report: dict[str, Any]) -> str:
    lines = ["cudagrad environment", ""]
    width = 15
    for name, version in report["versions"].items():
        lines.append(f"{name + ':':<{width}} {version}")
    lines.append("")
    cuda = report["cuda"]
    if cuda["usable"]:
        lines.append(f"{'GPU:':<{width}} yes ({cuda['reason']})")
        lines.append(f"{'driver:':<{width}} CUDA {cuda.get('driver', 'unknown')}")
        for device in cuda["devices"]:
            memory = device["total_memory"]
            memory_text = _size(memory) if isinstance(memory, int) else "unknown"
            capability = device["compute_capability"]
            if isinstance(capability, (list, tuple)):
                capability = ".".join(str(part) for part in capability)
            lines.append(f"{'cuda:' + str(device['ordinal']):<{width}} {device['name']}, "
                         f"compute capability {capability} ({device['arch']}), "
                         f"{device['multiprocessor_count']} SMs, {memory_text}")
    else:
        lines.append(f"{'GPU:':<{width}} none: {cuda['reason']}")
    nvrtc_report = report["nvrtc"]
    if nvrtc_report["found"]:
        lines.append(f"{'NVRTC:':<{width}} {nvrtc_report['version']} ({nvrtc_report['library']})")
    else:
        lines.append(f"{'NVRTC:':<{width}} not found: {nvrtc_report['reason']}")
    compiler = report["c_compiler"]
    if compiler["found"]:
        lines.append(f"{'C compiler:':<{width}} {compiler['path']} ({compiler['version']})")
    else:
        lines.append(f"{'C compiler:':<{width}} not found: {compiler['reason']}")
    cache_report = report["cache"]
    if cache_report["usable"]:
        lines.append(f"{'cache:':<{width}} {cache_report['path']} ({cache_report['entries']} "
                     f"entries, {_size(cache_report['bytes'])})")
    else:
        lines.append(f"{'cache:':<{width}} {cache_report['path']}: disabled ({cache_report['reason']})")
    default = report["default_device"]
    lines.append(f"{'default device:':<{width}} {default['device']} ({default['why']})")
    if report["environment"]:
        lines.append("")
        lines.append("environment:")
        lines.extend(f"  {name}={value}" for name, value in report["environment"].items())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m cudagrad info",
                                     description="Report cudagrad's environment (for bug reports).")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    options = parser.parse_args(argv)
    report = collect()
    if options.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(format_text(report))
    return 0
