"""The plan cache keeps kernels, never graphs: once the user drops a graph, its
nodes and buffers are freed (regression: each plan pinned its first graph)."""
from __future__ import annotations

import gc
import weakref

import numpy as np

import cudagrad as cg
from cudagrad.realization import input_buffer


def test_a_cached_plan_does_not_keep_its_first_graph_alive(device, rng):
    x = cg.tensor(rng.standard_normal((32, 48)).astype(np.float32), device=device)
    y = ((x @ x.T).relu() * 2).softmax(-1).sum()
    y.realize()
    buffer, leaf, node = weakref.ref(input_buffer(y.node)), weakref.ref(x.node), weakref.ref(y.node)
    del x, y
    gc.collect()
    assert buffer() is None and leaf() is None and node() is None
