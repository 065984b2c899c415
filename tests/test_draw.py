"""cg.draw: DOT text of the lazy graph, one cluster per kernel of t.kernels()."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

import cudagrad as cg
from cudagrad.draw import GraphvizMissing

CLUSTER = re.compile(r'subgraph cluster_(\d+) \{\n    label="kernel (\d+): (\w+) \((\w+)\)";')


def clusters(dot_text):
    found = CLUSTER.findall(dot_text)
    for position, (cluster, label_index, _, _) in enumerate(found):
        assert int(cluster) == position and int(label_index) == position
    return [name for _, _, name, _ in found]


def seed_graph(device="cpu"):
    a = cg.tensor([2, 2], [2.0, 3.0, 4.0, 5.0], device=device)
    b = cg.tensor([2, 2], [6.0, 7.0, 8.0, 9.0], device=device)
    c = cg.tensor([2, 2], [10.0, 10.0, 10.0, 10.0], device=device)
    d = cg.tensor([2, 2], [11.0, 11.0, 11.0, 11.0], device=device)
    f = (((a @ b) + c) * d).sum()
    f.backward()
    return a, b, c, d, f


def valid_dot(dot_text):
    assert dot_text.startswith("digraph cudagrad {") and dot_text.rstrip().endswith("}")
    assert dot_text.count("{") == dot_text.count("}")
    dot = shutil.which("dot")
    if dot is not None:
        result = subprocess.run([dot, "-Tsvg"], input=dot_text.encode(), capture_output=True)
        assert result.returncode == 0, result.stderr.decode()


def test_seed_clusters_match_kernels(tmp_path):
    a, b, c, d, f = seed_graph()
    before = cg.stats()["kernels_launched"]
    text = cg.draw(f, tmp_path / "f.dot")
    assert (tmp_path / "f.dot").read_text() == text
    assert clusters(text) == [kernel.name for kernel in f.kernels()]
    valid_dot(text)
    gradient = cg.draw(a.grad_tensor, forward=f)
    assert clusters(gradient) == [kernel.name for kernel in a.grad_tensor.kernels()]
    valid_dot(gradient)
    assert cg.stats()["kernels_launched"] == before      # drawing realizes nothing


def test_gradient_nodes_coloured_apart():
    from cudagrad.draw import FORWARD_COLOUR, GRADIENT_COLOUR
    a, b, c, d, f = seed_graph()
    plain = cg.draw(a.grad_tensor)
    assert GRADIENT_COLOUR not in plain           # nothing says what is forward
    text = cg.draw(a.grad_tensor, forward=[f])
    assert GRADIENT_COLOUR in text
    # the loss with its gradients: the non-gradient target is taken as the forward pass
    together = cg.draw_many([f, a.grad_tensor, b.grad_tensor], names={"a": a, "b": b})
    assert GRADIENT_COLOUR in together and FORWARD_COLOUR in together
    assert 'label="a\\n[2, 2]"' in together and "a.grad = matmul" in together
    from cudagrad.realization import kernels_for
    expected = kernels_for([f.node, a.grad_tensor.node, b.grad_tensor.node])
    assert clusters(together) == [kernel.name for kernel in expected]
    assert len(expected) == 4                    # README: the seed with its gradients is 4 kernels
    valid_dot(together)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_clusters_match_kernels(axis):
    x = cg.randn([8, 16])
    y = x.softmax(axis=axis)
    text = cg.draw(y)
    assert clusters(text) == [kernel.name for kernel in y.kernels()]
    valid_dot(text)
    loss = (y * cg.randn([8, 16], requires_grad=False)).sum()
    loss.backward()
    names = [kernel.name for kernel in x.grad_tensor.kernels()]
    assert clusters(cg.draw(x.grad_tensor, forward=loss)) == names


def test_mlp_step_with_updates():
    from cudagrad.draw import UPDATE_COLOUR
    cg.manual_seed(0)
    x = cg.randn([16, 8], requires_grad=False)
    w1, w2 = cg.randn([8, 12]), cg.randn([12, 4])
    loss = (((x @ w1).relu() @ w2) ** 2).mean()
    loss.backward()
    for w in (w1, w2):
        w.assign(w - 0.1 * w.grad_tensor)
    text = cg.draw_many([loss, w1, w2], names={"x": x, "w1": w1, "w2": w2})
    from cudagrad.realization import kernels_for
    expected = kernels_for([loss.node, w1._pending, w2._pending])
    assert clusters(text) == [kernel.name for kernel in expected]
    assert UPDATE_COLOUR in text and "new w1 = " in text
    valid_dot(text)


def test_realized_inputs_drawn_as_buffers():
    x = cg.randn([4, 4])
    y = (x * 2).realize()
    assert clusters(cg.draw(y)) == [] and y.kernels() == []
    z = (y + 1).exp()
    text = cg.draw(z)
    assert "realized mul" in text and "dashed" in text
    assert clusters(text) == [kernel.name for kernel in z.kernels()]


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz (dot) is not installed")
@pytest.mark.parametrize("suffix", [".svg", ".png"])
def test_picture_written_with_graphviz(tmp_path, suffix):
    a, b, c, d, f = seed_graph()
    path = tmp_path / f"seed{suffix}"
    cg.draw_many([f, a.grad_tensor, b.grad_tensor], path)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") if suffix == ".png" else b"<svg" in data
    if suffix == ".svg":
        for kernel in f.kernels():
            assert kernel.name.encode() in data


def test_without_graphviz_writes_dot_and_warns(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    a, b, c, d, f = seed_graph()
    with pytest.warns(GraphvizMissing, match="Graphviz is not installed"):
        text = cg.draw(f, tmp_path / "graph.svg")
    assert not (tmp_path / "graph.svg").exists()
    assert (tmp_path / "graph.dot").read_text() == text


def test_bad_arguments(tmp_path):
    x = cg.randn([3])
    with pytest.raises(ValueError, match="draw"):
        cg.draw(x * 2, tmp_path / "graph.jpeg2000")
    with pytest.raises(TypeError, match="draw"):
        cg.draw_many([x, 3], None)
