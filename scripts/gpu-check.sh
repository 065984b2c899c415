#!/usr/bin/env bash
# Run the whole test suite (cpu and cuda cases) and the examples on a GPU machine.
# Usage: scripts/gpu-check.sh [log-dir]
# Installs what it needs: from wheels in .whl/ when present (machines without an
# index), else from PyPI with the test extra.
set -uo pipefail
cd "$(dirname "$0")/.."
logs="${1:-${OUT:-/tmp}}"
mkdir -p "$logs"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/cudagrad-site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/cudagrad-site:$PWD"
else
  python3 -m pip install -q ".[test,examples]" || exit 1
fi
export CUDAGRAD_CACHE_DIR="${CUDAGRAD_CACHE_DIR:-$(mktemp -d)}"
status=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$logs/gpu.txt"
python3 -c "import cudagrad as cg; print('cuda available:', cg.cuda_available(), 'default:', cg.default_device())"
# Single-process, the whole suite takes longer than one 10-minute device call. With
# pytest-xdist (the GPU image has it), the files that fill the GPU's memory run alone first,
# then the rest in 4 processes, a file each at a time.
heavy="tests/test_device_errors.py tests/test_reliability_large.py"
if python3 -c "import xdist" 2>/dev/null; then
  { python3 -m pytest $heavy -q -p no:cacheprovider
    python3 -m pytest tests -q -p no:cacheprovider -n 4 --dist loadfile \
      --ignore=tests/test_device_errors.py --ignore=tests/test_reliability_large.py
  } 2>&1 | tee "$logs/pytest.txt" | tail -n 25 || status=1
else
  python3 -m pytest tests -q -p no:cacheprovider 2>&1 | tee "$logs/pytest.txt" | tail -n 25 || status=1
fi
grep -qE "^(FAILED|ERROR)" "$logs/pytest.txt" && status=1
echo "== CUDAGRAD_DEVICE=cuda python3 examples/example.py" | tee -a "$logs/examples.txt"
CUDAGRAD_DEVICE=cuda python3 examples/example.py 2>&1 | tee -a "$logs/examples.txt" || status=1
echo "== python3 examples/train_digits.py --device cuda" | tee -a "$logs/examples.txt"
python3 examples/train_digits.py --device cuda 2>&1 | tr '\r' '\n' | grep -v "it/s" | tail -n 8 | tee -a "$logs/examples.txt" || status=1
python3 -m cudagrad info > "$logs/info.txt" 2>&1 || status=1
exit $status
