"""The gpu suite's table (text) and bar chart (PNG, with matplotlib)."""
from __future__ import annotations

import importlib
import sys

from cudagrad.bench.fusion import render as render_fusion


def _seconds(value) -> str:
    if not value:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / 1e-9:.3g} ns"


def _number(value, fmt: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{suffix}"


def _rate(row: dict, side: str) -> str:
    value = row.get(f"{side}_rate")
    return "-" if value is None else f"{value:.4g} {row['unit']}"


def _met(row: dict) -> str:
    return {True: "yes", False: "NO", None: "?"}[row.get("target_met")]


def table(result: dict) -> str:
    references = result.get("references", {})
    copy = references.get("copy_GBps")
    compiled = "" if result.get("torch_compile") else ", torch.compile not run"
    quick = "; quick sizes (a smoke test, not figures)" if result["quick"] else ""
    torch = result.get("torch") or "not installed"
    about = [f"{result['card']} ({result['device']}), PyTorch {torch}{compiled}",
             f"timing: {result['timing']}{quick}",
             f"peaks measured in this run: copy {_number(copy, '.4g', ' GB/s')} "
             f"({references.get('copy_method', '-')}, bytes read + written), "
             f"L2 {references.get('l2_bytes', 0) >> 20} MiB"]
    cublas = [f"{key[7:].replace('_TFLOPs', '^3').replace('_', ' ')} {value:.4g}"
              for key, value in references.items() if key.startswith("cublas_") and value]
    if cublas:
        about.append("cuBLAS (PyTorch matmul) TFLOP/s: " + ", ".join(cublas))
    header = ["workload", "cudagrad", "rate", "of peak", "kernels", "eager", "compiled", "vs eager",
              "vs compiled", "rel err", "target", "met"]
    lines = []
    for row in result["rows"]:
        if row.get("error"):
            lines.append([row["name"], "error"] + ["-"] * (len(header) - 2))
            continue
        fraction = row.get("fraction_of_peak")
        lines.append([
            row["name"], _seconds(row.get("cudagrad_s")),
            _rate(row, "cudagrad") if row.get("unit") else "-",
            "-" if fraction is None else f"{100 * fraction:.0f}% {row['peak']}",
            _number(row.get("kernels"), "d"), _seconds(row.get("reference_s")),
            _seconds(row.get("compiled_s")) if row.get("compiled_s") else
            ("n/a" if row.get("compile_error") else "-"),
            _number(row.get("speedup"), ".2f", "x"), _number(row.get("speedup_compiled"), ".2f", "x"),
            _number(row.get("relative_error"), ".1e"), (row.get("target") or {}).get("text", "-"), _met(row)])
    widths = [max(len(str(cells[i])) for cells in [header, *lines]) for i in range(len(header))]

    def render(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    out = about + ["", render(header), "| " + " | ".join("-" * w for w in widths) + " |"]
    out.extend(render(cells) for cells in lines)
    notes = []
    for row in result["rows"]:
        parts = [row["note"]] if row.get("note") else []
        rates = [f"{label} {_rate(row, side)}"
                 for side, label in (("reference", "eager"), ("compiled", "compiled"))
                 if row.get("unit") and row.get(f"{side}_rate")]
        if rates:
            parts.append("PyTorch " + ", ".join(rates))
        if row.get("compile_error"):
            parts.append(f"torch.compile failed (n/a): {row['compile_error']}")
        if row.get("torch_error"):
            parts.append(f"PyTorch failed: {row['torch_error']}")
        if row.get("error"):
            parts.append(f"FAILED: {row['error']}")
        if parts:
            notes.append(f"- {row['name']}: " + "; ".join(parts))
    if notes:
        out += [""] + notes
    if result.get("fusion"):
        out += ["", "Fusion table (kernels per graph, counted on this device):",
                render_fusion(result["fusion"])]
    return "\n".join(out)


def plot(result: dict, path: str) -> bool:
    """A bar chart of each workload's speed relative to PyTorch eager (or, without
    PyTorch, of its fraction of the card's peak); False where matplotlib is missing."""
    try:
        # an optional extra: imported by name, so type checkers need not find it
        importlib.import_module("matplotlib").use("Agg")
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        print("cudagrad.bench: matplotlib is not installed (pip install 'cudagrad[plot]'): no plot written",
              file=sys.stderr)
        return False
    rows = [row for row in result["rows"] if not row.get("error")]
    with_torch = any(row.get("reference_s") for row in rows)
    names = [row.get("label") or row["name"] for row in rows]
    if with_torch:
        series = [("cudagrad", [row.get("speedup") or 0 for row in rows]),
                  ("torch.compile", [(row["reference_s"] / row["compiled_s"]) if row.get("compiled_s") else 0
                                     for row in rows])]
        ylabel = "speed relative to PyTorch eager (higher is faster)"
    else:
        series = [("cudagrad", [row.get("fraction_of_peak") or 0 for row in rows])]
        ylabel = "fraction of the card's peak (copy bandwidth or cuBLAS)"
    figure, axes = plt.subplots(figsize=(max(8, 1.3 * len(rows)), 5))
    width = 0.8 / len(series)
    for index, (label, values) in enumerate(series):
        axes.bar([i + (index - (len(series) - 1) / 2) * width for i in range(len(rows))], values, width,
                 label=label)
    if with_torch:
        axes.axhline(1.0, color="black", linewidth=0.8, label="PyTorch eager")
    axes.set_xticks(range(len(rows)))
    axes.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    axes.set_ylabel(ylabel)
    axes.set_title(f"cudagrad on {result['card']} ({result['date']})")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True
