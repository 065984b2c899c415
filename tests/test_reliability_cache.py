"""Reliability, part 2: the disk compile cache under stress.

- 8 processes compiling the same new kernels at once into one fresh cache all
  get correct results and leave only verified entries (every sidecar sha256
  matches its entry, no temporary file left);
- truncated, garbage, checksum-valid garbage and checksum-valid wrong-kernel
  entries are detected and recompiled;
- a read-only, an uncreatable (its parent is a regular file) and a missing
  cache directory still work, with at most one warning;
- an entry made by another compiler version, another processor (cpu) or
  another NVRTC (cuda) is never used: those are part of the key.

Everything runs in subprocesses, so each has a fresh in-memory cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
PROCESSES = 8

# The graph: an elementwise prologue, a matmul, a reduction, a max and a
# gradient, so several different kernels are compiled. `salt` makes the kernel
# sources new (the constant is baked into the source).
SCRIPT = textwrap.dedent("""
    import json, os, sys, time, warnings
    caught = warnings.catch_warnings(record=True)
    log = caught.__enter__()
    warnings.simplefilter("always")
    import numpy as np
    import cudagrad as cg
    device, salt, go, patch = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
    if patch == "compiler":
        import cudagrad.runtime.cpu as cpu
        path, version = cpu.compiler()
        cpu.compiler = lambda: (path, version + " (another build)")
    elif patch == "processor":
        import cudagrad.runtime.cpu as cpu
        cpu.processor_identity = lambda: "another-machine|model name: Imaginary CPU|flags: none"
    elif patch == "nvrtc":
        import cudagrad.runtime.cuda as cuda
        cuda.nvrtc_version = lambda: (99, 9)
    while go != "-" and not os.path.exists(go):     # start all processes at once
        time.sleep(0.002)
    rng = np.random.default_rng(0)
    a = cg.tensor(rng.standard_normal((5, 7)), dtype=cg.float64, device=device)
    b = cg.tensor(rng.standard_normal((7, 3)), dtype=cg.float64, device=device)
    y = ((a * salt).tanh() @ b).relu().sum(0) + salt
    z = (a.exp() * salt).max(1)
    y.sum().backward()
    cg.realize(y, z, a.grad_tensor, b.grad_tensor)
    cache_warnings = [str(w.message) for w in log if "cache" in str(w.message).lower()]
    print(json.dumps({"y": y.numpy().tolist(), "z": z.numpy().tolist(),
                      "ga": a.grad_tensor.numpy().tolist(), "gb": b.grad_tensor.numpy().tolist(),
                      "stats": cg.stats(), "warnings": cache_warnings}))
""")


def reference(salt: float) -> dict:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 7))
    b = rng.standard_normal((7, 3))
    t = np.tanh(a * salt)
    pre = t @ b
    y = np.maximum(pre, 0).sum(0) + salt
    z = (np.exp(a) * salt).max(1)
    g_pre = (pre > 0).astype(float)                  # d y.sum() / d pre
    gb = t.T @ g_pre
    ga = (g_pre @ b.T) * (1 - t * t) * salt
    return {"y": y, "z": z, "ga": ga, "gb": gb}




def _env(cache_dir) -> dict:
    env = dict(os.environ, CUDAGRAD_CACHE_DIR=str(cache_dir))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("CUDAGRAD_DEBUG", None)
    return env


def _script(tmp_path) -> Path:
    path = tmp_path / "cache_stress.py"
    if not path.exists():
        path.write_text(SCRIPT)
    return path


def start(tmp_path, device, cache_dir, salt, go="-", patch="none") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(_script(tmp_path)), device, repr(salt), str(go), patch],
                            env=_env(cache_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, salt: float) -> dict:
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    out = json.loads(stdout.strip().splitlines()[-1])
    expected = reference(salt)
    for name, value in expected.items():
        np.testing.assert_allclose(np.asarray(out[name]), value, rtol=1e-10, atol=1e-12, err_msg=name)
    return out


def run(tmp_path, device, cache_dir, salt, patch="none") -> dict:
    return finish(start(tmp_path, device, cache_dir, salt, patch=patch), salt)


def fresh_salt() -> float:
    """A constant no earlier run has baked into a kernel."""
    return 1.0 + (time.time_ns() % 10**9) / 10**10


def binaries(cache_dir) -> list[Path]:
    return sorted(p for p in Path(cache_dir).iterdir() if p.is_file() and not p.name.endswith(".sha256"))


def verify_cache(cache_dir) -> int:
    """Every entry has a matching sidecar, every sidecar an entry; nothing temporary remains."""
    files = [p for p in Path(cache_dir).iterdir()]
    leftovers = [p.name for p in files if p.name.startswith(".tmp") or "tmp" in p.name]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    entries = binaries(cache_dir)
    for entry in entries:
        sidecar = Path(f"{entry}.sha256")
        assert sidecar.exists(), f"{entry.name} has no checksum"
        assert hashlib.sha256(entry.read_bytes()).hexdigest() == sidecar.read_text().strip(), \
            f"{entry.name}: corrupt entry (checksum mismatch)"
    for sidecar in Path(cache_dir).glob("*.sha256"):
        assert Path(str(sidecar)[: -len(".sha256")]).exists(), f"orphan checksum {sidecar.name}"
    return len(entries)


# ------------------------------------------------------------ concurrency -----------

def test_eight_processes_compile_the_same_new_kernels_at_once(device, tmp_path):
    cache = tmp_path / "cache"
    salt = fresh_salt()
    go = tmp_path / "go"
    processes = [start(tmp_path, device, cache, salt, go=go) for _ in range(PROCESSES)]
    time.sleep(1.0)                  # let every process import cudagrad and wait at the line
    go.write_text("go")
    results = [finish(p, salt) for p in processes]       # all correct
    compiled = [r["stats"]["kernels_compiled"] for r in results]
    assert sum(compiled) >= 1
    count = verify_cache(cache)
    assert count >= 3, "several kernels must have been written"
    again = run(tmp_path, device, cache, salt)
    assert again["stats"]["kernels_compiled"] == 0, "the entries the 8 processes wrote are used"
    assert again["stats"]["cache_hits_disk"] == count or again["stats"]["cache_hits_disk"] >= 3


# ------------------------------------------------------------ corrupt entries -------

def _damage(entry: Path, how: str, other: Path | None) -> None:
    sidecar = Path(f"{entry}.sha256")
    if how == "truncate":
        data = entry.read_bytes()
        entry.write_bytes(data[: len(data) // 3])
    elif how == "garbage":
        entry.write_bytes(os.urandom(4096))
    elif how == "garbage-with-valid-checksum":
        data = b"\x7fELF" + os.urandom(4096)
        entry.write_bytes(data)
        sidecar.write_text(hashlib.sha256(data).hexdigest())
    elif how == "other-kernel-with-valid-checksum":
        data = other.read_bytes()
        entry.write_bytes(data)
        sidecar.write_text(hashlib.sha256(data).hexdigest())
    elif how == "empty-and-no-checksum":
        entry.write_bytes(b"")
        sidecar.unlink()


@pytest.mark.parametrize("how", ["truncate", "garbage", "garbage-with-valid-checksum",
                                 "other-kernel-with-valid-checksum", "empty-and-no-checksum"])
def test_corrupt_entry_is_detected_and_recompiled(device, tmp_path, how):
    if device == "cuda" and how == "other-kernel-with-valid-checksum":
        pytest.skip("cpu only: a checksum-valid CUBIN of another kernel (see RELIABILITY.md)")
    cache = tmp_path / "cache"
    salt = fresh_salt()
    first = run(tmp_path, device, cache, salt)
    entries = binaries(cache)
    assert len(entries) == first["stats"]["kernels_compiled"] >= 2
    for index, entry in enumerate(entries):
        _damage(entry, how, entries[(index + 1) % len(entries)])
    second = run(tmp_path, device, cache, salt)             # correct results (checked in run)
    assert second["stats"]["kernels_compiled"] == len(entries), "every damaged entry is rebuilt"
    assert second["stats"]["cache_hits_disk"] == 0
    verify_cache(cache)
    third = run(tmp_path, device, cache, salt)
    assert third["stats"]["kernels_compiled"] == 0, "the rebuilt entries are used next time"


# ------------------------------------------------------------ unusable directories --

def test_read_only_cache_directory_still_works(device, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o500)
    try:
        out = run(tmp_path, device, cache, fresh_salt())
    finally:
        cache.chmod(0o700)
    assert out["stats"]["kernels_compiled"] >= 1
    assert len(out["warnings"]) <= 1, out["warnings"]
    if os.geteuid() != 0:            # root writes through 0o500; anyone else gets one warning
        assert len(out["warnings"]) == 1, out["warnings"]
        assert not binaries(cache)


def test_cache_directory_under_a_regular_file_still_works_with_one_warning(device, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    out = run(tmp_path, device, blocker / "cache", fresh_salt())
    assert out["stats"]["kernels_compiled"] >= 2, "several kernels, each one compiled"
    assert len(out["warnings"]) == 1, out["warnings"]      # one warning, not one per kernel
    assert "cache" in out["warnings"][0].lower()
    assert blocker.read_text() == "not a directory"


def test_cache_directory_that_is_a_regular_file_still_works(device, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    out = run(tmp_path, device, blocker, fresh_salt())
    assert len(out["warnings"]) == 1, out["warnings"]
    assert blocker.read_text() == "not a directory"


def test_missing_cache_directory_is_created(device, tmp_path):
    cache = tmp_path / "does" / "not" / "exist"
    out = run(tmp_path, device, cache, fresh_salt())
    assert out["warnings"] == []
    assert verify_cache(cache) == out["stats"]["kernels_compiled"] >= 2


# ------------------------------------------------------------ foreign entries -------

@pytest.mark.parametrize("patch", ["compiler", "processor", "nvrtc"])
def test_entry_from_another_compiler_or_processor_is_never_used(device, tmp_path, patch):
    if (device == "cpu") != (patch in ("compiler", "processor")):
        pytest.skip(f"{patch} is not part of the {device} key")
    cache = tmp_path / "cache"
    salt = fresh_salt()
    native = run(tmp_path, device, cache, salt)
    assert native["stats"]["kernels_compiled"] >= 2
    foreign = run(tmp_path, device, cache, salt, patch=patch)
    assert foreign["stats"]["cache_hits_disk"] == 0, f"an entry of another {patch} was used"
    assert foreign["stats"]["kernels_compiled"] == native["stats"]["kernels_compiled"]
    # both sets of entries live side by side, and each is used by its own kind
    assert len(binaries(cache)) == 2 * native["stats"]["kernels_compiled"]
    assert run(tmp_path, device, cache, salt)["stats"]["kernels_compiled"] == 0
    assert run(tmp_path, device, cache, salt, patch=patch)["stats"]["kernels_compiled"] == 0
