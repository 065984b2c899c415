"""The fusion table (issue 7, part 3): kernels per canonical graph, pinned.

The same table is printed by `python -m cudagrad.bench gpu`. A change here is a
change in fusion: if it is an improvement, update the pinned count (and the
table in docs/BENCHMARKS.md); if not, it is a regression.
"""
from __future__ import annotations

import pytest

from cudagrad.bench.fusion import fusion_table, render

# (start of the graph's name, kernels), in the table's order
PINNED = [
    ("elementwise chain", 1),
    ("row softmax", 1),
    ("layer norm", 1),
    ("matmul + bias + relu", 1),
    ("2-layer MLP 128-256-10, batch 64: forward + MSE + backward + SGD step", 9),
    ("2-layer MLP 128-256-10, batch 64: forward + cross-entropy + backward + Adam step", 14),
    ("Adam update of that MLP's 4 parameters", 4),
]


@pytest.fixture(scope="module")
def table():
    return fusion_table("cpu")


def test_the_table_lists_the_canonical_graphs(table):
    assert [row["graph"][:len(prefix)] for row, (prefix, _) in zip(table, PINNED)] == \
        [prefix for prefix, _ in PINNED]
    assert len(table) == len(PINNED)


@pytest.mark.parametrize("index", range(len(PINNED)), ids=[prefix for prefix, _ in PINNED])
def test_kernel_count_is_pinned(table, index):
    row, (_, kernels) = table[index], PINNED[index]
    assert row["kernels"] == kernels, f"fusion changed: {row['graph']}\n{render(table)}"


def test_graphs_with_an_aim_meet_it(table):
    for row in table:
        if row["ideal"] is not None:
            assert row["kernels"] <= row["ideal"], row


def test_render_names_every_graph(table):
    text = render(table)
    assert all(row["graph"] in text and str(row["kernels"]) in text for row in table)
