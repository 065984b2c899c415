#!/bin/bash
# Issue 9 on a multi-GPU host, in one call: NCCL smoke (nccl4py, ctypes, under
# torchrun), tests/test_distributed.py (with 2 and 4 ranks against one GPU with the
# whole batch), the example, then the scaling run (1, 2, 4 GPUs; cudagrad
# DataParallel and PyTorch DDP, same machine).
# Usage: scripts/dp_gpu_round.sh OUTDIR [WIDTH BATCH]
OUT=${1:-/tmp/dp-out}; WIDTH=${2:-4096}; BATCH=${3:-8192}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1 NCCL_DEBUG=${NCCL_DEBUG:-WARN}
LOG="$OUT/log.txt"
say() { echo "== $* ($(date -u +%H:%M:%S))" | tee -a "$LOG"; }
GPUS=$(nvidia-smi -L | wc -l)
say "GPUs: $GPUS"; nvidia-smi -L >>"$LOG"; nvidia-smi topo -m >>"$LOG" 2>&1
python3 -c "import torch, nccl.bindings.nccl as b; print('torch', torch.__version__, 'nccl', torch.cuda.nccl.version(), 'nccl4py sees', b.get_version())" >>"$LOG" 2>&1
for binding in nccl4py ctypes; do
  say "smoke $binding"
  CUDAGRAD_NCCL=$binding timeout 120 python3 -m cudagrad.distributed.run --nproc "$GPUS" scripts/nccl_smoke.py >>"$LOG" 2>&1 || say "smoke $binding FAILED rc=$?"
done
if ! grep -q "ok: nccl (nccl4py)" "$LOG"; then export CUDAGRAD_NCCL=ctypes; say "nccl4py failed: ctypes from here on"; fi
say "torchrun smoke (the same script under torchrun: rendezvous on MASTER_PORT + 1)"
timeout 120 python3 -m torch.distributed.run --standalone --nproc-per-node "$GPUS" scripts/nccl_smoke.py >>"$LOG" 2>&1 || say "torchrun smoke FAILED rc=$?"
say "pytest"
timeout 240 python3 -m pytest tests/test_distributed.py -q -rs 2>&1 | tee "$OUT/pytest.txt" >>"$LOG"
say "example on $GPUS GPUs, then on 1"
timeout 120 python3 -m cudagrad.distributed.run --nproc "$GPUS" examples/train_data_parallel.py --steps 100 >>"$LOG" 2>&1 || say "example FAILED rc=$?"
timeout 120 python3 examples/train_data_parallel.py --steps 100 >>"$LOG" 2>&1 || say "example x1 FAILED rc=$?"
say "scaling (width $WIDTH, batch $BATCH per GPU)"
for n in 1 2 4; do
  [ "$n" -gt "$GPUS" ] && continue
  for fw in cudagrad torch; do
    timeout 150 python3 -m cudagrad.distributed.run --nproc $n -m cudagrad.bench.data_parallel \
      --framework $fw --width "$WIDTH" --batch "$BATCH" --json "$OUT/scaling.jsonl" >>"$LOG" 2>&1 || say "$fw x$n FAILED rc=$?"
  done
done
say "done"
grep -E "ms/step|passed|failed|FAILED|ok: nccl|skipped|^step" "$LOG"
