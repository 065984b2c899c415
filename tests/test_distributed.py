"""cudagrad.distributed: buckets, collectives, DataParallel and the launcher.

On the CPU the collectives go through the socket communicator (several processes
started by the launcher) or a loopback fake (one process standing for identical
ranks); the NCCL tests need a machine with 2 GPUs and NCCL and skip elsewhere.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import cudagrad as cg
import cudagrad.distributed as dist
import cudagrad.nn.functional as F
from cudagrad.distributed import run as launcher
from cudagrad.distributed.communicator import SocketCommunicator
from cudagrad.distributed.rendezvous import Rendezvous

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "distributed_worker.py"


def _env(tmp_path, device="cpu"):
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                CUDAGRAD_DEVICE=device, CUDAGRAD_CACHE_DIR=os.environ.get("CUDAGRAD_CACHE_DIR",
                                                                          str(tmp_path / "cache")))


def _launch(tmp_path, nproc, *args, device="cpu", timeout=300):
    return subprocess.run([sys.executable, "-m", "cudagrad.distributed.run", "--nproc", str(nproc), *args],
                          env=_env(tmp_path, device), cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout)


# ---- buckets ------------------------------------------------------------------------------------
def _params(*shapes, dtype=None):
    return [cg.zeros(shape, dtype=dtype) for shape in shapes]


def test_buckets_fill_up_to_the_cap_from_the_last_parameter():
    params = _params((10,), (20,), (30,), (5,))           # 40, 80, 120, 20 bytes
    buckets = dist.assign_buckets(params, bucket_bytes=150)
    assert [b.indices for b in buckets] == [(3, 2), (1, 0)]
    assert [b.offsets for b in buckets] == [(0, 5), (0, 20)]
    assert [b.numel for b in buckets] == [35, 30]


def test_a_parameter_larger_than_the_cap_is_a_bucket_of_its_own():
    params = _params((4, 4), (100,), (3,))
    buckets = dist.assign_buckets(params, bucket_bytes=64)
    assert [b.indices for b in buckets] == [(1,), (0,), (2,)]
    assert sorted(i for b in buckets for i in b.indices) == [0, 1, 2]


def test_biases_between_large_weights_share_one_bucket():
    # the compute-bound MLP's shapes, scaled down: 4 weights over the cap, 4 small biases
    params = [p for _ in range(4) for p in _params((64, 64), (64,))]
    buckets = dist.assign_buckets(params, bucket_bytes=4096)
    assert [b.indices for b in buckets] == [(6,), (4,), (2,), (0,), (7, 5, 3, 1)]
    assert buckets[-1].offsets == (0, 64, 128, 192) and buckets[-1].numel == 256


def test_buckets_never_mix_dtypes():
    params = [cg.zeros((3,)), cg.zeros((3,), dtype=cg.float64), cg.zeros((2,))]
    buckets = dist.assign_buckets(params, bucket_bytes=1 << 20)
    assert {(b.dtype.name, b.indices) for b in buckets} == {("float32", (2, 0)), ("float64", (1,))}


def test_bucket_cap_must_be_positive():
    with pytest.raises(ValueError, match="bucket_bytes"):
        dist.assign_buckets(_params((3,)), bucket_bytes=0)


# ---- the socket communicator, ranks as threads ------------------------------------------------------
def _run_ranks(world, body):
    port = launcher.free_port()
    results, errors = [None] * world, []

    def one(rank):
        try:
            rendezvous = Rendezvous(rank, world, "127.0.0.1", port, timeout=30)
            try:
                results[rank] = body(SocketCommunicator(rendezvous), rank)
            finally:
                rendezvous.close()
        except Exception as error:       # reported below, with the rank
            errors.append((rank, error))
    threads = [threading.Thread(target=one, args=(rank,)) for rank in range(world)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results


def _cpu_buffer(values, dtype=np.float32):
    from cudagrad.runtime.cpu import CpuBuffer
    return CpuBuffer.of_array(np.ascontiguousarray(values, dtype=dtype).reshape(-1).view(np.uint8).copy())


@pytest.mark.parametrize("op", ["sum", "mean", "max", "min"])
def test_socket_all_reduce(op, rng):
    world, count = 3, 37
    inputs = [rng.standard_normal(count).astype(np.float32) for _ in range(world)]

    def body(comm, rank):
        recv = _cpu_buffer(np.zeros(count))
        comm.all_reduce(_cpu_buffer(inputs[rank]), recv, count, cg.float32, op)
        return recv.array.view(np.float32).copy()
    stacked = np.stack(inputs).astype(np.float64)
    expected = {"sum": stacked.sum(0), "mean": stacked.mean(0), "max": stacked.max(0), "min": stacked.min(0)}[op]
    for result in _run_ranks(world, body):
        np.testing.assert_allclose(result, expected, rtol=1e-6, atol=1e-6)


def test_socket_broadcast_and_all_gather(rng):
    world, count = 3, 11
    inputs = [rng.standard_normal(count).astype(np.float32) for _ in range(world)]

    def body(comm, rank):
        received = _cpu_buffer(np.zeros(count))
        comm.broadcast(_cpu_buffer(inputs[rank]), received, count, cg.float32, 2)
        gathered = _cpu_buffer(np.zeros(world * count))
        comm.all_gather(_cpu_buffer(inputs[rank]), gathered, count, cg.float32)
        return received.array.view(np.float32).copy(), gathered.array.view(np.float32).copy()
    for received, gathered in _run_ranks(world, body):
        np.testing.assert_array_equal(received, inputs[2])
        np.testing.assert_array_equal(gathered, np.concatenate(inputs))


# ---- collectives and DataParallel in one process, with a loopback communicator --------------------------
class Loopback:
    """Stands for `world_size` ranks that all hold this process's data (so a mean is the
    value itself), counting calls: the flow of gradient averaging, without a second process."""
    name = "loopback"
    device = "cpu"
    rank = 0

    def __init__(self, world_size=2):
        self.world_size = world_size
        self.calls: list[tuple] = []

    def _values(self, buffer, count, dtype):
        return buffer.array.view(dtype.numpy)[:count]

    def all_reduce(self, send, recv, count, dtype, op):
        self.calls.append(("all_reduce", count, op))
        values = self._values(send, count, dtype)
        self._values(recv, count, dtype)[:] = values * self.world_size if op == "sum" else values

    def broadcast(self, send, recv, count, dtype, root):
        self.calls.append(("broadcast", count, root))
        self._values(recv, count, dtype)[:] = self._values(send, count, dtype)

    def all_gather(self, send, recv, count, dtype):
        self.calls.append(("all_gather", count))
        self._values(recv, count * self.world_size, dtype)[:] = np.tile(self._values(send, count, dtype),
                                                                        self.world_size)

    def barrier(self):
        self.calls.append(("barrier",))

    def destroy(self):
        pass


@pytest.fixture(autouse=True)
def _cpu_by_default(monkeypatch):
    """In-process tests use cpu tensors (the loopback and socket communicators move host
    memory), also on a GPU machine; the launched runs choose their device themselves."""
    monkeypatch.setenv("CUDAGRAD_DEVICE", "cpu")


@pytest.fixture
def loopback():
    comm = Loopback()
    dist.init(communicator=comm)
    try:
        yield comm
    finally:
        dist.destroy()


def test_rank_and_world_size_before_and_after_init(loopback):
    assert dist.is_initialized() and dist.world_size() == 2 and dist.rank() == 0
    dist.barrier()
    assert loopback.calls == [("barrier",)]


def test_not_initialized_is_a_single_process():
    assert not dist.is_initialized() and dist.rank() == 0 and dist.world_size() == 1
    t = cg.tensor([1.0, 2.0])
    assert dist.all_reduce(t) is t
    assert dist.all_gather(t).shape == (1, 2)
    with pytest.raises(RuntimeError, match="not initialized"):
        dist.get_communicator()


def test_all_reduce_on_a_leaf_rebinds_it_and_keeps_earlier_graphs(loopback):
    leaf = cg.tensor([1.0, -2.0, 3.0], requires_grad=False)
    doubled_before = leaf * 2                 # built on the old value, not yet realized
    result = dist.all_reduce(leaf, "sum")
    assert result is leaf
    assert leaf.tolist() == [2.0, -4.0, 6.0]
    assert doubled_before.tolist() == [2.0, -4.0, 6.0]      # 2 * the old value, not of the sum


def test_all_reduce_of_a_lazy_result_returns_a_new_tensor(loopback):
    base = cg.tensor([1.0, 2.0], requires_grad=False)
    lazy = base + 1
    reduced = dist.all_reduce(lazy, "sum")
    assert reduced is not lazy
    assert reduced.tolist() == [4.0, 6.0] and lazy.tolist() == [2.0, 3.0]
    assert dist.all_reduce(lazy, "mean").tolist() == [2.0, 3.0]


def test_all_gather_and_broadcast_shapes(loopback):
    t = cg.tensor([[1.0, 2.0, 3.0]], requires_grad=False)
    gathered = dist.all_gather(t)
    assert gathered.shape == (2, 1, 3) and gathered.tolist() == [[[1.0, 2.0, 3.0]]] * 2
    assert dist.broadcast(t, 1) is t and t.tolist() == [[1.0, 2.0, 3.0]]
    with pytest.raises(ValueError, match="src 5"):
        dist.broadcast(t, 5)


def test_collective_errors_name_the_problem(loopback):
    with pytest.raises(ValueError, match="unknown op"):
        dist.all_reduce(cg.tensor([1.0]), "prod")
    with pytest.raises(TypeError, match="bool"):
        dist.all_reduce(cg.tensor([1.0]).cast(cg.bool))
    with pytest.raises(TypeError, match="mean"):
        dist.all_reduce(cg.tensor([1, 2], dtype=cg.int32), "mean")
    with pytest.raises(TypeError, match="Tensor"):
        dist.all_reduce([1.0, 2.0])


def _mlp(seed):
    cg.manual_seed(seed)
    return cg.nn.Sequential(cg.nn.Linear(5, 9), cg.nn.ReLU(), cg.nn.Linear(9, 3))


def test_data_parallel_averages_in_buckets_and_matches_a_plain_step(loopback, rng):
    x = rng.standard_normal((6, 5)).astype(np.float32)
    y = rng.standard_normal((6, 3)).astype(np.float32)
    plain, wrapped = _mlp(3), cg.nn.DataParallel(_mlp(3), bucket_mb=100 / 2**20)   # 100-byte buckets
    assert [c[0] for c in loopback.calls] == ["broadcast"] * 4     # every parameter, from rank 0
    loopback.calls.clear()
    optimizers = [cg.optim.SGD(plain.parameters(), lr=0.1, momentum=0.5),
                  cg.optim.SGD(wrapped.parameters(), lr=0.1, momentum=0.5)]
    for _ in range(3):
        losses = []
        for model, opt in zip((plain, wrapped), optimizers):
            opt.zero_grad()
            loss = F.mse_loss(model(cg.tensor(x, requires_grad=False)), cg.tensor(y, requires_grad=False))
            loss.backward()
            if model is wrapped:
                assert model.reduce_gradients(loss) == len(model.buckets)
            opt.step()
            losses.append(loss.item())
        assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    # 4 parameters (45, 9, 27, 3 floats) in 100-byte buckets: [3 bias + 27 weight... ] per the cap
    sizes = [b.numel for b in wrapped.buckets]
    assert sum(sizes) == 45 + 9 + 27 + 3 and len(sizes) < 4 + 1
    assert loopback.calls == [("all_reduce", n, "mean") for n in sizes] * 3
    for a, b in zip(plain.parameters(), wrapped.parameters()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


def test_distributed_optimizer_reduces_once(loopback, rng):
    model = cg.nn.DataParallel(_mlp(4))
    opt = cg.optim.Adam(model.parameters(), lr=0.01, distributed=True)
    loopback.calls.clear()
    x = cg.tensor(rng.standard_normal((4, 5)).astype(np.float32), requires_grad=False)
    loss = model(x).sum()
    loss.backward()
    opt.step()                                   # the optimizer averages: one bucket (25 MB cap)
    assert loopback.calls == [("all_reduce", 84, "mean")]
    opt.zero_grad()
    loss = model(x).sum()
    loss.backward()
    model.reduce_gradients(loss)
    opt.step()                                   # already averaged by DataParallel: not again
    assert len(loopback.calls) == 2


def test_data_parallel_in_a_single_process_is_transparent(rng):
    model = cg.nn.DataParallel(_mlp(5))
    x = cg.tensor(rng.standard_normal((4, 5)).astype(np.float32), requires_grad=False)
    loss = model(x).sum()
    loss.backward()
    assert model.reduce_gradients(loss) == 0
    assert list(model.state_dict()) == ["module.0.weight", "module.0.bias", "module.2.weight",
                                        "module.2.bias"]


def test_data_parallel_checks_its_arguments():
    with pytest.raises(TypeError, match="Module"):
        cg.nn.DataParallel(lambda x: x)
    with pytest.raises(ValueError, match="bucket_mb"):
        cg.nn.DataParallel(_mlp(1), bucket_mb=0)


def test_importing_cudagrad_loads_no_distributed_code():
    code = ("import sys, cudagrad as cg; "
            "print(sorted(m for m in ('cudagrad.distributed', 'nccl', 'cuda.bindings') if m in sys.modules)); "
            "cg.distributed.rank(); print('nccl' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, CUDAGRAD_DEVICE="cpu",
                         PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "False"]


# ---- the launcher --------------------------------------------------------------------------------
ENV_SCRIPT = """
import os, sys
names = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NCCL_NVLS_ENABLE")
with open(f"env{os.environ['RANK']}.txt", "w") as out:
    out.write(" ".join(os.environ[n] for n in names) + " " + " ".join(sys.argv[1:]))
"""

FAILING_SCRIPT = """
import os, sys, time
if os.environ["RANK"] == "1":
    sys.exit(3)
time.sleep(120)        # would hold the job for two minutes if the launcher did not stop it
"""


def test_launcher_sets_the_torchrun_variables(tmp_path):
    (tmp_path / "show_env.py").write_text(ENV_SCRIPT)
    result = _launch(tmp_path, 3, "show_env.py", "--lr", "0.1")
    assert result.returncode == 0, result.stderr
    lines = [(tmp_path / f"env{rank}.txt").read_text().split() for rank in range(3)]
    ports = {line[5] for line in lines}
    assert len(ports) == 1 and int(ports.pop()) > 0
    for rank, line in enumerate(lines):
        assert line[:5] == [str(rank), str(rank), "3", "3", "127.0.0.1"]
        assert line[6:] == ["0", "--lr", "0.1"]


def test_launcher_stops_the_others_when_a_rank_fails_and_names_it(tmp_path):
    import time
    (tmp_path / "fail.py").write_text(FAILING_SCRIPT)
    started = time.monotonic()
    result = _launch(tmp_path, 3, "fail.py", timeout=100)
    assert time.monotonic() - started < 60
    assert result.returncode == 3
    assert "rank 1 exited with code 3" in result.stderr


SIGNALLED_SCRIPT = """
import os, signal, sys, time
def stop(signum, frame):
    open(f"got{os.environ['RANK']}.txt", "w").write(str(signum))
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
open(f"ready{os.environ['RANK']}.txt", "w").close()
time.sleep(120)
"""


def test_launcher_forwards_sigterm_to_every_rank(tmp_path):
    import signal
    import time
    (tmp_path / "wait.py").write_text(SIGNALLED_SCRIPT)
    process = subprocess.Popen([sys.executable, "-m", "cudagrad.distributed.run", "--nproc", "2", "wait.py"],
                               env=_env(tmp_path), cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready{rank}.txt").exists() for rank in range(2)):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 128 + signal.SIGTERM
    for rank in range(2):
        assert (tmp_path / f"got{rank}.txt").read_text() == str(int(signal.SIGTERM))


def test_launcher_runs_modules_and_checks_nproc(tmp_path):
    result = _launch(tmp_path, 2, "-m", "json.tool", "--help")
    assert result.returncode == 0, result.stderr
    result = _launch(tmp_path, 0, "x.py")
    assert result.returncode == 2 and "--nproc" in result.stderr


def test_rank_environment_forces_nvls_off():
    env = launcher.rank_environment(1, 2, "127.0.0.1", 1234, base={"NCCL_NVLS_ENABLE": "1"})
    assert env["NCCL_NVLS_ENABLE"] == "0" and env["RANK"] == "1" and env["MASTER_PORT"] == "1234"


# ---- whole runs: N ranks with batch B against one process with batch N*B -------------------------------
def _compare_runs(tmp_path, nproc, device, steps=20, batch=8, mode="dp"):
    dp = _launch(tmp_path, nproc, str(WORKER), device, mode, str(steps), str(batch), "dp.npz", device=device)
    assert dp.returncode == 0, dp.stderr[-3000:]
    env = dict(_env(tmp_path, device), CG_TEST_WORLD=str(nproc))
    single = subprocess.run([sys.executable, str(WORKER), device, "single", str(steps), str(batch), "single.npz"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    ours, reference = np.load(tmp_path / "dp.npz"), np.load(tmp_path / "single.npz")
    assert ours["losses"].shape == (steps,)
    for name in reference.files:
        np.testing.assert_allclose(ours[name], reference[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_two_cpu_ranks_match_one_process_with_the_doubled_batch(tmp_path):
    _compare_runs(tmp_path, 2, "cpu")


@pytest.mark.parametrize("mode", ["dp-jit", "dp-jit-plain"])
def test_a_jit_step_replays_its_collectives_on_two_cpu_ranks(tmp_path, mode):
    """The data-parallel step under cg.jit: the gradient buckets' all-reduces and the loss's
    are recorded with the kernels and run again by every replay (on fixed buffers and on
    fresh ones)."""
    _compare_runs(tmp_path, 2, "cpu", mode=mode)


def _gpu_count():
    ok, why = cg.cuda_available()
    if not ok:
        return 0, why
    try:
        return int(why.split()[0]), why
    except (ValueError, IndexError):
        return 1, why


def _nccl_missing():
    try:
        from cudagrad.distributed.nccl import load_library
        load_library()
    except Exception as error:
        return str(error)
    return None


@pytest.mark.gpu
@pytest.mark.parametrize("nproc", [2, 4])
def test_gpu_ranks_match_one_gpu_with_the_whole_batch(tmp_path, nproc):
    count, why = _gpu_count()
    if count < nproc:
        pytest.skip(f"needs {nproc} GPUs: {why if count == 0 else f'{count} found'}")
    missing = _nccl_missing()
    if missing:
        pytest.skip(f"NCCL is not usable here: {missing}")
    _compare_runs(tmp_path, nproc, "cuda")
    _compare_runs(tmp_path, nproc, "cuda", mode="dp-jit")     # recorded NCCL calls in a CUDA graph


def test_the_example_gives_the_same_losses_on_one_and_two_cpu_ranks(tmp_path):
    example = str(ROOT / "examples" / "train_data_parallel.py")
    two = _launch(tmp_path, 2, example, "--steps", "12")
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, example, "--steps", "12"], env=_env(tmp_path), cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]

    def losses(output):
        return [float(line.split()[3]) for line in output.splitlines() if line.startswith("step")]
    assert len(losses(one.stdout)) == 2
    np.testing.assert_allclose(losses(two.stdout), losses(one.stdout), rtol=1e-4)
