"""cg.nn: modules, layers, losses (against numpy and finite differences), state dicts."""
import numpy as np
import pytest

import cudagrad as cg
import cudagrad.nn.functional as F

# `device` is the fixture of conftest.py: cpu, and cuda where a GPU is usable.

def leaf(array, device="cpu", dtype=None, requires_grad=True):
    return cg.tensor(np.asarray(array), dtype=dtype or cg.float64, device=device, requires_grad=requires_grad)


def finite_difference_grad(loss_of, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar loss_of(array) with respect to each element of x."""
    grad = np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += eps
        minus[index] -= eps
        grad[index] = (loss_of(plus) - loss_of(minus)) / (2 * eps)
    return grad


def numpy_log_softmax(x):
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


# --- losses: values and gradients --------------------------------------------

def test_cross_entropy_value_and_gradient_match_finite_differences(device):
    rng = np.random.default_rng(0)
    logits_np = rng.normal(size=(4, 5))
    labels = [0, 3, 4, 1]

    def loss_of(array):
        return F.cross_entropy(leaf(array, device, requires_grad=False), labels).item()

    logits = leaf(logits_np, device)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    expected = -numpy_log_softmax(logits_np)[np.arange(4), labels].mean()
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(np.reshape(logits.grad, (4, 5)), finite_difference_grad(loss_of, logits_np),
                               rtol=1e-6, atol=1e-8)


def test_mse_loss_value_and_gradient_match_finite_differences(device):
    rng = np.random.default_rng(1)
    pred_np, target_np = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    target = leaf(target_np, device, requires_grad=False)

    def loss_of(array):
        return F.mse_loss(leaf(array, device, requires_grad=False), target).item()

    pred = leaf(pred_np, device)
    loss = F.mse_loss(pred, target)
    loss.backward()
    assert loss.item() == pytest.approx(((pred_np - target_np) ** 2).mean(), rel=1e-12)
    np.testing.assert_allclose(pred.numpy().shape, (3, 4))
    np.testing.assert_allclose(np.reshape(pred.grad, (3, 4)), finite_difference_grad(loss_of, pred_np),
                               rtol=1e-6, atol=1e-8)


def test_log_softmax_gradient_matches_finite_differences(device):
    rng = np.random.default_rng(2)
    x_np = rng.normal(size=(3, 6))
    # A random weighting makes every output entry matter to the scalar.
    weights = leaf(rng.normal(size=(3, 6)), device, requires_grad=False)

    def loss_of(array):
        return (F.log_softmax(leaf(array, device, requires_grad=False)) * weights).sum().item()

    x = leaf(x_np, device)
    out = F.log_softmax(x)
    np.testing.assert_allclose(out.numpy(), numpy_log_softmax(x_np), rtol=1e-12, atol=1e-12)
    (out * weights).sum().backward()
    np.testing.assert_allclose(np.reshape(x.grad, (3, 6)), finite_difference_grad(loss_of, x_np),
                               rtol=1e-6, atol=1e-8)


def test_cross_entropy_is_stable_for_large_logits():
    logits_np = np.array([[1000.0, 0.0, -1000.0], [0.0, 2000.0, 10.0]], dtype=np.float32)
    loss = F.cross_entropy(leaf(logits_np, dtype=cg.float32), [0, 2])
    expected = -numpy_log_softmax(logits_np.astype(np.float64))[[0, 1], [0, 2]].mean()
    assert np.isfinite(loss.item())
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_accepts_lists_arrays_and_int_tensors_and_reductions():
    logits_np = np.random.default_rng(3).normal(size=(3, 4))
    per_sample = -numpy_log_softmax(logits_np)[np.arange(3), [1, 0, 3]]
    for labels in ([1, 0, 3], np.array([1, 0, 3]), cg.tensor([1, 0, 3], dtype=cg.int32, requires_grad=False)):
        assert F.cross_entropy(leaf(logits_np), labels).item() == pytest.approx(per_sample.mean(), rel=1e-12)
    assert F.cross_entropy(leaf(logits_np), [1, 0, 3], reduction="sum").item() == pytest.approx(per_sample.sum())
    np.testing.assert_allclose(F.cross_entropy(leaf(logits_np), [1, 0, 3], reduction="none").numpy(),
                               per_sample, rtol=1e-12)


def test_softmax_and_relu():
    x_np = np.array([[1.0, -2.0, 3.0], [0.5, 0.5, -0.5]])
    np.testing.assert_allclose(F.softmax(leaf(x_np)).numpy(), np.exp(numpy_log_softmax(x_np)), rtol=1e-12)
    np.testing.assert_allclose(F.relu(leaf(x_np)).numpy(), np.maximum(x_np, 0.0))
    np.testing.assert_allclose(cg.nn.ReLU()(leaf(x_np)).numpy(), np.maximum(x_np, 0.0))


# --- bad input fails at build time ---------------------------------------------

def test_cross_entropy_rejects_bad_labels():
    logits = leaf(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="cross_entropy.*out of range"):
        F.cross_entropy(logits, [0, 4, 1])
    with pytest.raises(ValueError, match="cross_entropy.*out of range"):
        F.cross_entropy(logits, [0, -1, 1])
    with pytest.raises(ValueError, match="cross_entropy.*2 labels"):
        F.cross_entropy(logits, [0, 1])
    with pytest.raises(TypeError, match="cross_entropy"):
        F.cross_entropy(logits, [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="cross_entropy"):
        F.cross_entropy(leaf(np.zeros(4)), [0])


def test_linear_rejects_wrong_feature_size():
    layer = cg.nn.Linear(4, 2, device="cpu")
    with pytest.raises(ValueError, match=r"Linear\(in_features=4.*\(3, 5\)"):
        layer(cg.tensor(np.zeros((3, 5), dtype=np.float32), device="cpu", requires_grad=False))


def test_mse_loss_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="mse_loss"):
        F.mse_loss(leaf(np.zeros((3, 1))), leaf(np.zeros(3), requires_grad=False))


# --- modules ---------------------------------------------------------------------

def test_linear_init_matches_pytorch_bounds_and_forward_matches_numpy():
    cg.manual_seed(0)
    layer = cg.nn.Linear(100, 30, device="cpu")
    weight, bias = layer.weight.numpy(), layer.bias.numpy()
    assert weight.shape == (30, 100) and bias.shape == (30,)
    assert layer.weight.dtype == cg.float32 and layer.weight.requires_grad and layer.weight.is_leaf
    bound = 1 / np.sqrt(100)
    assert np.abs(weight).max() <= bound and np.abs(bias).max() <= bound
    assert np.abs(weight).max() > 0.9 * bound        # spread over the whole range, not a constant
    assert abs(weight.std() - bound / np.sqrt(3)) < 0.01
    x = np.random.default_rng(0).normal(size=(5, 100)).astype(np.float32)
    out = layer(cg.tensor(x, device="cpu", requires_grad=False)).numpy()
    np.testing.assert_allclose(out, x @ weight.T + bias, rtol=1e-5, atol=1e-5)


def test_manual_seed_makes_init_reproducible():
    cg.manual_seed(7)
    first = cg.nn.Linear(8, 3).weight.numpy()
    cg.manual_seed(7)
    np.testing.assert_array_equal(first, cg.nn.Linear(8, 3).weight.numpy())


class Tower(cg.nn.Module):
    """Parameters in a list, a dict, a nested module and a plain attribute."""

    def __init__(self):
        self.blocks = [cg.nn.Linear(4, 4, device="cpu"), cg.nn.Linear(4, 4, device="cpu")]
        self.heads = {"out": cg.nn.Linear(4, 2, device="cpu", bias=False)}
        self.scale = cg.tensor(np.ones(2, dtype=np.float32), device="cpu")
        self.mean = cg.tensor(np.zeros(2, dtype=np.float32), device="cpu", requires_grad=False)  # a buffer
        self.again = self.blocks[0]                  # shared: reported once

    def forward(self, x):
        for block in self.blocks:
            x = block(x).relu()
        return self.heads["out"](x) * self.scale - self.mean


def test_parameters_are_found_recursively_with_dotted_names():
    tower = Tower()
    names = [name for name, _ in tower.named_parameters()]
    assert names == ["blocks.0.weight", "blocks.0.bias", "blocks.1.weight", "blocks.1.bias",
                     "heads.out.weight", "scale"]
    assert len(tower.parameters()) == 6
    assert list(tower.state_dict()) == names + ["mean"]

    model = cg.nn.Sequential(cg.nn.Linear(3, 5), cg.nn.ReLU(), cg.nn.Linear(5, 2))
    assert [name for name, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert len(model) == 3 and isinstance(model[1], cg.nn.ReLU)


def test_module_zero_grad_clears_gradients():
    model = cg.nn.Sequential(cg.nn.Linear(3, 2, device="cpu"))
    x = cg.tensor(np.ones((2, 3), dtype=np.float32), device="cpu", requires_grad=False)
    model(x).sum().backward()
    assert model[0].weight.grad is not None
    model.zero_grad()
    assert all(p.grad is None or not np.any(p.grad) for p in model.parameters())


def test_state_dict_round_trip_through_save_and_load(tmp_path):
    cg.manual_seed(0)
    source = Tower()
    target = Tower()
    x = cg.tensor(np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32), device="cpu",
                  requires_grad=False)
    path = tmp_path / "tower.ckpt"          # any name: saved exactly there, no ".npz" appended
    cg.save(source.state_dict(), path)
    assert path.exists()
    loaded = cg.load(path)
    assert list(loaded) == list(source.state_dict())
    weight_before = target.blocks[0].weight
    target.load_state_dict(loaded)
    assert target.blocks[0].weight is weight_before      # written in place, not replaced
    for name, array in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[name], array)
    np.testing.assert_array_equal(target(x).numpy(), source(x).numpy())


def test_load_state_dict_rejects_wrong_keys_and_shapes():
    model = cg.nn.Sequential(cg.nn.Linear(3, 2, device="cpu"))
    state = model.state_dict()
    with pytest.raises(KeyError, match="0.bias"):
        model.load_state_dict({"0.weight": state["0.weight"]})
    with pytest.raises(ValueError, match="0.weight"):
        model.load_state_dict({"0.weight": np.zeros((2, 4), np.float32), "0.bias": state["0.bias"]})


def test_save_rejects_non_arrays(tmp_path):
    with pytest.raises(TypeError, match="save"):
        cg.save({"model": object()}, tmp_path / "x.npz")
    with pytest.raises(TypeError, match="save"):
        cg.save([np.zeros(2)], tmp_path / "x.npz")
