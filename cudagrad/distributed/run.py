"""Start one process per GPU: python -m cudagrad.distributed.run --nproc N script.py [args]

Each process gets the variables torchrun sets (RANK, LOCAL_RANK, WORLD_SIZE,
LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so a script runs the same under
either launcher, and NCCL_NVLS_ENABLE=0: NVLink multicast stays off (on shared
hosts its setup has taken GPUs out of service; ring and tree all-reduce do not
need it); OMP_NUM_THREADS, where unset, shares the cores among the processes'
cpu kernels. SIGINT and SIGTERM are passed on to every process. If one process
fails, the others are stopped at once (a survivor would wait forever in its next
collective) and the launcher exits non-zero, naming the rank.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

_GRACE_SECONDS = 5.0       # after SIGTERM, before SIGKILL


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def rank_environment(rank: int, nproc: int, master_addr: str, master_port: int, base=None) -> dict:
    env = dict(os.environ if base is None else base)
    env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc),
               GROUP_RANK="0", MASTER_ADDR=master_addr, MASTER_PORT=str(master_port),
               NCCL_NVLS_ENABLE="0")
    if nproc > 1 and "OMP_NUM_THREADS" not in env:
        # cpu kernels use OpenMP: N processes each spinning on every core would fight over them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    return env


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m cudagrad.distributed.run",
        description="Run a training script as NPROC processes, one per GPU (as torchrun --standalone).")
    parser.add_argument("--nproc", "--nproc-per-node", dest="nproc", type=int, default=None,
                        help="processes to start (default: the number of GPUs, else 1)")
    parser.add_argument("--master-addr", default="127.0.0.1")
    parser.add_argument("--master-port", type=int, default=None, help="default: a free port")
    parser.add_argument("-m", dest="module", action="store_true",
                        help="run the target as a module (python -m), not a script file")
    parser.add_argument("target", help="the script (or, with -m, the module) to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    options = parser.parse_args(argv)
    if options.nproc is None:
        options.nproc = _gpu_count() or 1
    if options.nproc < 1:
        parser.error(f"--nproc must be at least 1, got {options.nproc}")
    return options


def _gpu_count() -> int:
    from cudagrad.device import cuda_available
    usable, why = cuda_available()
    if not usable:
        return 0
    try:                     # "N CUDA device(s), driver ..."
        return int(why.split()[0])
    except (ValueError, IndexError):
        return 1


def _stop(processes: dict[int, subprocess.Popen]) -> None:
    """SIGTERM every process still running, then SIGKILL those that outlive the grace period."""
    for process in processes.values():
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + _GRACE_SECONDS
    for process in processes.values():
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def launch(target: list[str], nproc: int, master_addr: str = "127.0.0.1", master_port: int | None = None,
           poll_seconds: float = 0.05) -> int:
    """Run `python target...` as nproc ranks; the exit code (0, or the first failure's)."""
    port = master_port or free_port(master_addr)
    processes: dict[int, subprocess.Popen] = {}
    received: list[int] = []

    def forward(signum, _frame):
        received.append(signum)
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        for rank in range(nproc):
            processes[rank] = subprocess.Popen([sys.executable, *target],
                                               env=rank_environment(rank, nproc, master_addr, port))
        while True:
            running = False
            for rank, process in processes.items():
                code = process.poll()
                if code is None:
                    running = True
                elif code != 0:
                    _stop(processes)
                    if received:
                        print(f"cudagrad.distributed.run: stopped by {signal.Signals(received[0]).name}",
                              file=sys.stderr)
                        return 128 + received[0]
                    print(f"cudagrad.distributed.run: rank {rank} {_describe(code)}; stopped the "
                          f"other {nproc - 1} rank(s)", file=sys.stderr, flush=True)
                    return code if code > 0 else 128 - code
            if not running:        # all exited 0 (after a forwarded signal too: say it was one)
                return 128 + received[0] if received else 0
            time.sleep(poll_seconds)
    finally:
        _stop(processes)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    options = _parse(sys.argv[1:] if argv is None else argv)
    target = (["-m", options.target] if options.module else [options.target]) + list(options.args)
    return launch(target, options.nproc, options.master_addr, options.master_port)


if __name__ == "__main__":
    sys.exit(main())
