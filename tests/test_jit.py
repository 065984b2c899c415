"""cg.jit: a step captured on its second call and replayed from the third, against numpy
(hand-derived gradients) and against the same step run without cg.jit."""
import math
import tracemalloc

import numpy as np
import pytest

import cudagrad as cg
import cudagrad.nn.functional as F

# `device`, `rng` are fixtures of conftest.py: cpu, and cuda where a GPU is usable.


@pytest.fixture(params=[False, True], ids=["plain", "graph"])
def graph(request):
    """Each replay both ways: fresh buffers launched one by one, and the fixed-buffer
    replay (a CUDA graph on the cuda device; the same bookkeeping, launched in order, on
    the cpu)."""
    return request.param


def numpy_adam_step(p, m, v, g, t, lr, betas=(0.9, 0.999), eps=1e-8):
    m = betas[0] * m + (1 - betas[0]) * g
    v = betas[1] * v + (1 - betas[1]) * g * g
    p = p - lr / (1 - betas[0] ** t) * m / (np.sqrt(v) / math.sqrt(1 - betas[1] ** t) + eps)
    return p, m, v


def test_adam_step_matches_numpy_with_new_arguments_each_call(device, rng, graph):
    """loss = 0.5 sum(p^2) + sum(c p): gradient p + c, with a fresh c every call."""
    start = rng.normal(size=(5, 7))
    param = cg.tensor(start, dtype=cg.float64, device=device)
    opt = cg.optim.Adam([param], lr=0.05)
    bodies = []

    @cg.jit(graph=graph)
    def step(c):
        bodies.append(1)
        opt.zero_grad()
        loss = (param * param).sum() * 0.5 + (param * c).sum()
        loss.backward()
        opt.step()
        return loss

    p, m, v = start.copy(), np.zeros_like(start), np.zeros_like(start)
    for t in range(1, 9):
        c = rng.normal(size=(5, 7))
        loss = step(cg.tensor(c, dtype=cg.float64, device=device, requires_grad=False))
        expected_loss = 0.5 * (p * p).sum() + (c * p).sum()
        p, m, v = numpy_adam_step(p, m, v, p + c, t, lr=0.05)
        np.testing.assert_allclose(loss.item(), expected_loss, rtol=1e-12, err_msg=f"call {t}")
        np.testing.assert_allclose(param.numpy(), p, rtol=1e-11, atol=1e-12, err_msg=f"call {t}")
    assert len(bodies) == 2          # a warm-up and the capture; the other six were replays
    assert step.captures == 1
    assert opt.step_count == 8       # replays advance the optimizer's counter too
    assert param.grad is None        # the gradients stay inside a captured step


def test_sgd_momentum_regression_matches_numpy_and_follows_lr_changes(device, rng, graph):
    """y = x W + b, MSE, SGD with momentum; lr changed between calls takes effect."""
    w0, b0 = rng.normal(size=(4, 3)), rng.normal(size=3)
    w = cg.tensor(w0, dtype=cg.float64, device=device)
    b = cg.tensor(b0, dtype=cg.float64, device=device)
    opt = cg.optim.SGD([w, b], lr=0.1, momentum=0.9)

    @cg.jit(graph=graph)
    def step(x, y):
        opt.zero_grad()
        prediction = x @ w + b           # built before the update: it keeps the old weights
        loss = ((prediction - y) ** 2).mean()
        loss.backward()
        opt.step()
        return loss, prediction, x @ w + b      # the last one after it: the new weights

    wn, bn, mw, mb = w0.copy(), b0.copy(), np.zeros_like(w0), np.zeros_like(b0)
    for call in range(7):
        lr = 0.1 if call < 4 else 0.02
        opt.lr = lr
        x, y = rng.normal(size=(6, 4)), rng.normal(size=(6, 3))
        loss, prediction, after = step(cg.tensor(x, dtype=cg.float64, device=device, requires_grad=False),
                                       cg.tensor(y, dtype=cg.float64, device=device, requires_grad=False))
        out = x @ wn + bn
        np.testing.assert_allclose(prediction.numpy(), out, rtol=1e-12, atol=1e-12, err_msg=f"call {call}")
        np.testing.assert_allclose(loss.item(), ((out - y) ** 2).mean(), rtol=1e-12)
        grad_out = 2 * (out - y) / out.size
        mw, mb = 0.9 * mw + x.T @ grad_out, 0.9 * mb + grad_out.sum(axis=0)
        wn, bn = wn - lr * mw, bn - lr * mb
        np.testing.assert_allclose(after.numpy(), x @ wn + bn, rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(w.numpy(), wn, rtol=1e-11, atol=1e-12, err_msg=f"call {call}")
        np.testing.assert_allclose(b.numpy(), bn, rtol=1e-11, atol=1e-12, err_msg=f"call {call}")


def _mlp(device, seed):
    cg.manual_seed(seed)
    model = cg.nn.Sequential(cg.nn.Linear(12, 16, device=device), cg.nn.ReLU(),
                             cg.nn.Linear(16, 16, device=device), cg.nn.ReLU(),
                             cg.nn.Linear(16, 5, device=device))
    return model, cg.optim.Adam(model.parameters(), lr=1e-2)


def _train_step(model, opt):
    def step(x, labels):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()
        return loss
    return step


def test_mlp_cross_entropy_adam_matches_the_step_without_jit(device, rng, graph):
    plain_model, plain_opt = _mlp(device, 7)
    jit_model, jit_opt = _mlp(device, 7)
    plain_step = _train_step(plain_model, plain_opt)
    jit_step = cg.jit(_train_step(jit_model, jit_opt), graph=graph)

    for call in range(6):
        x_np, labels_np = rng.standard_normal((9, 12), dtype=np.float32), rng.integers(0, 5, 9)
        expected = plain_step(cg.tensor(x_np, device=device, requires_grad=False), labels_np).item()
        before = cg.stats()["kernels_launched"]
        got = jit_step(cg.tensor(x_np, device=device, requires_grad=False),
                       cg.tensor(labels_np, dtype=cg.int32, device=device, requires_grad=False))
        launched = cg.stats()["kernels_launched"] - before
        np.testing.assert_allclose(got.item(), expected, rtol=1e-6, err_msg=f"call {call}")
        if call == 1:
            captured_launches = launched
        elif call > 1:
            assert launched == captured_launches      # the replay launches exactly the capture's kernels
    for ours, theirs in zip(jit_model.parameters(), plain_model.parameters(), strict=True):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-6)
    assert "def replay(arg_0, arg_1):" in jit_step.source


def test_new_argument_shapes_get_a_capture_of_their_own(device, rng, graph):
    weight = cg.tensor(rng.normal(size=(3, 2)), dtype=cg.float64, device=device, requires_grad=False)

    @cg.jit(graph=graph)
    def project(x):
        return (x @ weight).relu()

    for batch in (4, 1, 4, 1, 4, 1, 4):
        x = rng.normal(size=(batch, 3))
        got = project(cg.tensor(x, dtype=cg.float64, device=device, requires_grad=False))
        np.testing.assert_allclose(got.numpy(), np.maximum(x @ weight.numpy(), 0), rtol=1e-12)
    assert project.captures == 2


def test_python_arguments_select_captures_and_methods_bind(device, rng, graph):
    class Scaler:
        @cg.jit(graph=graph)
        def apply(self, x, factor):
            return x * factor

    scaler = Scaler()
    for factor in (2.0, 3.0, 2.0, 3.0, 2.0, 3.0):
        x = rng.normal(size=5)
        got = scaler.apply(cg.tensor(x, dtype=cg.float64, device=device, requires_grad=False), factor)
        np.testing.assert_allclose(got.numpy(), x * factor, rtol=1e-15)
    assert Scaler.apply.captures == 2


def test_a_jit_function_called_inside_another_is_recorded_by_the_outer(device, rng, graph):
    weight = cg.tensor(rng.normal(size=(3, 3)), dtype=cg.float64, device=device, requires_grad=False)

    @cg.jit(graph=graph)
    def inner(x):
        return x @ weight

    @cg.jit(graph=graph)
    def outer(x):
        return inner(x).exp() + 1

    for call in range(5):
        x = rng.normal(size=(2, 3))
        if call == 3:                          # inner already replays on its own
            for _ in range(3):
                inner(cg.tensor(x, dtype=cg.float64, device=device, requires_grad=False))
        got = outer(cg.tensor(x, dtype=cg.float64, device=device, requires_grad=False))
        np.testing.assert_allclose(got.numpy(), np.exp(x @ weight.numpy()) + 1, rtol=1e-12)
    assert outer.captures == 1


def _fresh_param(device, rng):
    return cg.tensor(rng.normal(size=4), dtype=cg.float64, device=device)


def _call_three_times(function, *args):
    for _ in range(3):
        function(*args)


def test_reading_values_inside_the_captured_call_is_refused(device, rng, graph):
    param = _fresh_param(device, rng)

    @cg.jit(graph=graph)
    def step():
        loss = (param * param).sum()
        if loss.item() > 1e9:          # Python deciding on a value: a replay could not
            return loss * 0
        return loss

    with pytest.raises(cg.JitError, match=r"reading a tensor's values on the host"):
        _call_three_times(step)


def test_host_data_made_inside_the_call_is_refused(device, rng, graph):
    param = _fresh_param(device, rng)

    @cg.jit(graph=graph)
    def step():
        noise = cg.tensor(np.random.default_rng().normal(size=4), dtype=cg.float64, device=device,
                          requires_grad=False)
        return param + noise

    with pytest.raises(cg.JitError, match=r"shape \[4\] \(float64\) made from host data"):
        _call_three_times(step)


def test_accumulating_onto_a_gradient_from_before_the_call_is_refused(device, rng, graph):
    param = _fresh_param(device, rng)
    opt = cg.optim.SGD([param], lr=0.1)

    @cg.jit(graph=graph)
    def step():                      # no zero_grad: gradients would pile up across calls
        loss = (param * param).sum()
        loss.backward()
        opt.step()
        return loss

    with pytest.raises(cg.JitError, match="call zero_grad"):
        _call_three_times(step)


def test_an_update_of_gradients_computed_outside_the_call_is_refused(device, rng, graph):
    param = _fresh_param(device, rng)
    opt = cg.optim.SGD([param], lr=0.1)
    update = cg.jit(opt.step, graph=graph)         # backward() runs outside: its data is not the replay's
    with pytest.raises(cg.JitError, match="computed before the call"):
        for _ in range(3):
            opt.zero_grad()
            (param * param).sum().backward()
            update()


def test_results_must_be_tensors_and_arguments_hashable(device, rng, graph):
    param = _fresh_param(device, rng)

    @cg.jit(graph=graph)
    def step(x):
        return {"sum": (param + x).sum()}

    x = cg.tensor(rng.normal(size=4), dtype=cg.float64, device=device, requires_grad=False)
    with pytest.raises(cg.JitError, match="returned a dict"):
        _call_three_times(step, x)
    with pytest.raises(TypeError, match=r"argument 0 is a ndarray"):
        step(np.ones(4))


def test_replays_keep_memory_flat(device, rng, graph):
    step = cg.jit(_train_step(*_mlp(device, 3)), graph=graph)

    x = cg.tensor(rng.standard_normal((9, 12), dtype=np.float32), device=device, requires_grad=False)
    labels = cg.tensor(rng.integers(0, 5, 9), dtype=cg.int32, device=device, requires_grad=False)
    for _ in range(50):
        step(x, labels)
    tracemalloc.start()
    try:
        for _ in range(200):
            step(x, labels)
        middle, _ = tracemalloc.get_traced_memory()
        for _ in range(400):
            step(x, labels)
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert end - middle < 64 * 1024, f"{end - middle} bytes more after 400 more replays"


def _regression_step(device, rng, graph):
    w = cg.tensor(rng.normal(size=(4, 3)), dtype=cg.float64, device=device)
    opt = cg.optim.SGD([w], lr=0.1)

    @cg.jit(graph=graph)
    def step(x, y):
        opt.zero_grad()
        prediction = x @ w
        loss = ((prediction - y) ** 2).sum()
        loss.backward()
        opt.step()
        return loss, prediction
    return w, step


def _numpy_regression(w, x, y):
    prediction = x @ w
    return ((prediction - y) ** 2).sum(), prediction, w - 0.1 * x.T @ (2 * (prediction - y))


def test_fixed_buffer_replay_keeps_every_kept_result_and_follows_outside_assignments(device, rng):
    """Results held across calls keep their values (the replay then takes fresh buffers
    for that call), and a parameter assigned outside the step is read anew."""
    w, step = _regression_step(device, rng, graph=True)
    w_np = w.numpy()
    kept = []
    for call in range(12):
        x, y = rng.normal(size=(5, 4)), rng.normal(size=(5, 3))
        loss, prediction = step(cg.tensor(x, dtype=cg.float64, device=device, requires_grad=False),
                                cg.tensor(y, dtype=cg.float64, device=device, requires_grad=False))
        expected_loss, expected_prediction, w_np = _numpy_regression(w_np, x, y)
        if call in (3, 4):
            kept.append((loss, prediction, expected_loss, expected_prediction))
        if call == 8:                          # as load_state_dict would: a new value from outside
            w_np = rng.normal(size=(4, 3))
            w.assign(cg.tensor(w_np, dtype=cg.float64, device=device)).realize()
        np.testing.assert_allclose(loss.item(), expected_loss, rtol=1e-12, err_msg=f"call {call}")
        np.testing.assert_allclose(w.numpy(), w_np, rtol=1e-12, atol=1e-12, err_msg=f"call {call}")
    for loss, prediction, expected_loss, expected_prediction in kept:
        np.testing.assert_allclose(loss.item(), expected_loss, rtol=1e-12)
        np.testing.assert_allclose(prediction.numpy(), expected_prediction, rtol=1e-12, atol=1e-12)
    assert step.replays == {"graph": 10, "plain": 0}     # kept results pin nothing


def test_fixed_buffer_replay_keeps_a_lazy_graph_on_an_old_parameter_right(device, rng):
    w, step = _regression_step(device, rng, graph=True)
    snapshots = []
    for call in range(8):
        x, y = rng.normal(size=(5, 4)), rng.normal(size=(5, 3))
        step(cg.tensor(x, dtype=cg.float64, device=device, requires_grad=False),
             cg.tensor(y, dtype=cg.float64, device=device, requires_grad=False))
        snapshots.append((w * 1.0, w.numpy().copy()))     # lazy: reads w's buffer of this call
    for call, (lazy, value) in enumerate(snapshots):
        np.testing.assert_allclose(lazy.numpy(), value, rtol=0, atol=0, err_msg=f"call {call}")
    assert step.replays["plain"] > 0       # the pinned values made those calls take fresh buffers


def test_threads_capture_and_replay_their_own_functions_at_once(device, rng, graph):
    import threading
    starts = [rng.normal(size=(4, 3)) for _ in range(3)]
    batches = [[(rng.normal(size=(5, 4)), rng.normal(size=(5, 3))) for _ in range(8)] for _ in starts]
    results: dict = {}
    barrier = threading.Barrier(len(starts))

    def train(worker):
        w = cg.tensor(starts[worker], dtype=cg.float64, device=device)
        opt = cg.optim.SGD([w], lr=0.05)

        @cg.jit(graph=graph)
        def step(x, y):
            opt.zero_grad()
            loss = ((x @ w - y) ** 2).sum()
            loss.backward()
            opt.step()
            return loss
        barrier.wait()
        for x, y in batches[worker]:
            step(cg.tensor(x, dtype=cg.float64, device=device, requires_grad=False),
                 cg.tensor(y, dtype=cg.float64, device=device, requires_grad=False))
        results[worker] = w.numpy()

    threads = [threading.Thread(target=train, args=(worker,)) for worker in range(len(starts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for worker, start in enumerate(starts):
        w = start.copy()
        for x, y in batches[worker]:
            w = w - 0.05 * x.T @ (2 * (x @ w - y))
        np.testing.assert_allclose(results[worker], w, rtol=1e-11, atol=1e-12, err_msg=f"thread {worker}")


def test_a_step_returning_nothing_with_keyword_tensors(device, rng, graph):
    """No result, the batch passed by keyword: the update alone is what a replay repeats."""
    start = rng.normal(size=(3, 2))
    w = cg.tensor(start, dtype=cg.float64, device=device)
    opt = cg.optim.SGD([w], lr=0.1, momentum=0.5)

    @cg.jit(graph=graph)
    def step(*, x, y):
        opt.zero_grad()
        ((x @ w - y) ** 2).mean().backward()
        opt.step()

    expected, velocity = start.copy(), np.zeros_like(start)
    for _ in range(6):
        x, y = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
        assert step(y=cg.tensor(y, dtype=cg.float64, device=device, requires_grad=False),
                    x=cg.tensor(x, dtype=cg.float64, device=device, requires_grad=False)) is None
        grad = x.T @ (2 * (x @ expected - y) / y.size)
        velocity = 0.5 * velocity + grad
        expected = expected - 0.1 * velocity
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-11, atol=1e-12)
