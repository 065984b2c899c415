"""Every Python block in docs/*.md and README.md runs, on the cpu device.

The blocks of one file run in order in one namespace, as a reader would type
them, in a scratch directory (so pictures they draw land there). A block
followed by a ```text output block must print exactly that text. A block
fenced ```python no-run is an interface sketch that cannot run, and is skipped.
"""
from __future__ import annotations

import contextlib
import io
import re
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
PYTHON = {"python", "py", "python3"}


def blocks(path: Path):
    """(line number, info words, code, expected output or None) for each Python block."""
    text = path.read_text()
    fences = [(text.count("\n", 0, m.start()) + 1, m.group(1).split(), m.group(2), m.end())
              for m in FENCE.finditer(text)]
    result = []
    for index, (line, info, body, end) in enumerate(fences):
        if not info or info[0] not in PYTHON or "no-run" in info:
            continue
        expected = None
        if index + 1 < len(fences):
            next_line, next_info, next_body, _ = fences[index + 1]
            between = text[end:text.index("```", end)]
            if next_info[:2] == ["text", "output"] and not between.strip():
                expected = next_body
        result.append((line, info, body, expected))
    return result


def test_docs_have_python_blocks():
    assert sum(len(blocks(path)) for path in DOCS) >= 10
    assert (REPO / "docs" / "guide.md") in DOCS


def test_fences_are_closed():
    for path in DOCS:
        assert path.read_text().count("```") % 2 == 0, path


@pytest.mark.parametrize("path", DOCS, ids=[path.name for path in DOCS])
def test_python_blocks_run(path, tmp_path, monkeypatch):
    found = blocks(path)
    if not found:
        pytest.skip(f"{path.name} has no Python blocks")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CUDAGRAD_DEVICE", "cpu")
    monkeypatch.setenv("CUDAGRAD_LAZY_REPR", "0")
    namespace: dict = {"__name__": "__docs__"}
    for line, _, code, expected in found:
        output = io.StringIO()
        try:
            compiled = compile(textwrap.dedent(code), f"{path.name}:{line}", "exec")
            with contextlib.redirect_stdout(output):
                exec(compiled, namespace)
        except Exception as error:
            raise AssertionError(f"{path.name}, the block at line {line} failed: {error!r}\n"
                                 f"{code}\n--- printed ---\n{output.getvalue()}") from error
        if expected is not None:
            printed = "\n".join(text.rstrip() for text in output.getvalue().rstrip().splitlines())
            wanted = "\n".join(text.rstrip() for text in expected.rstrip().splitlines())
            assert printed == wanted, f"{path.name}, the block at line {line} printed something else"


def test_every_environment_variable_is_documented():
    """The configuration table in the guide names every variable the package reads."""
    guide = (REPO / "docs" / "guide.md").read_text()
    table = guide[guide.index("## Configuration"):guide.index("## Benchmarking")]
    pattern = re.compile(r"""(?:environ(?:\.get|\.setdefault)?\s*[\[(]|getenv\()\s*["']([A-Z_][A-Z0-9_]*)["']""")
    variables = set()
    for source in (REPO / "cudagrad").rglob("*.py"):
        variables.update(pattern.findall(source.read_text()))
    variables.update({"CUDA_PATH", "CUDA_HOME"} & {v for v in variables})
    assert variables, "no environment variables found: the pattern is wrong"
    missing = sorted(name for name in variables if f"`{name}`" not in table)
    assert not missing, f"docs/guide.md's configuration table lacks {missing}"
