"""The disk compile cache seen from outside: shared across processes, robust to corrupt entries,
to concurrent writers and to an unusable directory; cg.clear_cache() empties it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent("""
    import json, sys, warnings
    warnings.simplefilter("ignore")
    import cudagrad as cg
    x = cg.tensor([2, 3], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], device=sys.argv[1])
    y = (x * 0.5 + 1.0).tanh().sum(axis=1)
    print(json.dumps({"value": y.data, "stats": cg.stats()}))
""")
EXPECTED = [2.85579013, 2.99256195]     # tanh(x/2 + 1) summed over rows


def run_script(tmp_path, device, cache_dir):
    # one file per call: threads of the concurrency test must not truncate each other's script
    handle, name = tempfile.mkstemp(prefix="cache_graph_", suffix=".py", dir=tmp_path)
    with os.fdopen(handle, "w") as file:
        file.write(SCRIPT)
    script = Path(name)
    env = dict(os.environ, CUDAGRAD_CACHE_DIR=str(cache_dir))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("CUDAGRAD_DEBUG", None)
    result = subprocess.run([sys.executable, str(script), device], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines, f"no output (rc={result.returncode}); stderr:\n{result.stderr}"
    out = json.loads(lines[-1])
    assert out["value"] == pytest.approx(EXPECTED, rel=1e-5)
    return out["stats"], result.stderr


def entries(cache_dir):
    return [p for p in Path(cache_dir).rglob("*") if p.is_file()]


def test_cache_is_used_by_a_second_process(device, tmp_path):
    first, _ = run_script(tmp_path, device, tmp_path / "cache")
    assert first["kernels_compiled"] >= 1
    assert entries(tmp_path / "cache"), "compiling must write the disk cache"
    second, _ = run_script(tmp_path, device, tmp_path / "cache")
    assert second["kernels_compiled"] == 0 and second["cache_hits_disk"] >= 1


@pytest.mark.parametrize("damage", ["garbage", "truncate", "empty", "everything"])
def test_corrupt_entries_are_recompiled(device, tmp_path, damage):
    cache = tmp_path / "cache"
    run_script(tmp_path, device, cache)
    files = entries(cache)
    assert files
    for path in files:
        if damage == "garbage" and not path.name.endswith(".sha256"):
            path.write_bytes(b"not a binary" * 10)
        elif damage == "truncate" and path.stat().st_size > 64:
            with open(path, "r+b") as handle:
                handle.truncate(path.stat().st_size // 2)
        elif damage == "empty":
            path.write_bytes(b"")
        elif damage == "everything":
            path.write_bytes(b"zz")
    stats, _ = run_script(tmp_path, device, cache)          # must not crash, must be right
    assert stats["kernels_compiled"] >= 1, "a damaged entry must be rebuilt, not trusted"
    again, _ = run_script(tmp_path, device, cache)
    assert again["kernels_compiled"] == 0, "the rebuilt entry is used next time"


def test_concurrent_processes_share_the_cache(device, tmp_path):
    cache = tmp_path / "cache"
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: run_script(tmp_path, device, cache), range(6)))
    assert sum(s["kernels_compiled"] for s, _ in results) >= 1
    leftovers = [p for p in entries(cache) if "tmp" in p.name.lower()]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    stats, _ = run_script(tmp_path, device, cache)
    assert stats["kernels_compiled"] == 0


def test_unusable_cache_dir_still_works(device, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    stats, stderr = run_script(tmp_path, device, blocker / "cache")
    assert stats["kernels_compiled"] >= 1


def test_clear_cache(device, tmp_path):
    cache = tmp_path / "cache"
    run_script(tmp_path, device, cache)
    assert entries(cache)
    env = dict(os.environ, CUDAGRAD_CACHE_DIR=str(cache))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    subprocess.run([sys.executable, "-c", "import cudagrad as cg; cg.clear_cache()"], env=env, check=True,
                   timeout=120)
    assert not entries(cache)
    stats, _ = run_script(tmp_path, device, cache)
    assert stats["kernels_compiled"] >= 1
