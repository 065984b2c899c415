"""The on-disk compile cache: verified entries, atomic writes.

Each entry is a binary (a shared object or a CUBIN) plus a small sidecar holding
its sha256. A truncated or garbage entry fails the check, is deleted and is
rebuilt; it is never loaded.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

_disabled_reason: str | None = None


def cache_dir(folder: str = "") -> Path | None:
    """The cache directory (or a folder of it), created on first use; None when it cannot
    be used."""
    global _disabled_reason
    root = Path(os.environ.get("CUDAGRAD_CACHE_DIR") or Path.home() / ".cache" / "cudagrad")
    if folder:
        root = root / folder
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not os.access(root, os.W_OK | os.X_OK):
            raise PermissionError(f"{root} is not writable")
    except OSError as error:
        if _disabled_reason is None:
            _disabled_reason = str(error)
            warnings.warn(f"cudagrad: disk compile cache disabled ({error}); kernels are "
                          "compiled in every process", RuntimeWarning, stacklevel=3)
        return None
    return root


def make_key(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _paths(root: Path, key: str, suffix: str) -> tuple[Path, Path]:
    return root / f"{key}{suffix}", root / f"{key}{suffix}.sha256"


def load(key: str, suffix: str, folder: str = "") -> Path | None:
    """The verified entry's path, or None (missing or corrupt, and then deleted)."""
    root = cache_dir(folder)
    if root is None:
        return None
    entry, checksum = _paths(root, key, suffix)
    try:
        data = entry.read_bytes()
        expected = checksum.read_text().strip()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != expected:
        for path in (entry, checksum):
            try:
                path.unlink()
            except OSError:
                pass
        return None
    return entry


def _atomic_write(path: Path, data: bytes) -> None:
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def store(key: str, suffix: str, data: bytes, folder: str = "") -> Path | None:
    """Write an entry atomically; the checksum goes last, so a reader never trusts
    a half-written binary. Returns the entry's path, or None without a cache."""
    root = cache_dir(folder)
    if root is None:
        return None
    entry, checksum = _paths(root, key, suffix)
    try:
        _atomic_write(entry, data)
        _atomic_write(checksum, hashlib.sha256(data).hexdigest().encode())
    except OSError:
        return None
    return entry


def clear() -> None:
    root = cache_dir()
    if root is None:
        return
    for path in [*root.iterdir(), *(root / "native").glob("*")]:    # native/: cudagrad/native
        if path.is_file():
            try:
                path.unlink()
            except OSError:
                pass
