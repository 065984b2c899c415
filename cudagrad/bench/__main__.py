"""Benchmarks: medians against a reference measured in the same run.

    python -m cudagrad.bench tiny [--quick] [--json PATH]   # Python overhead of tiny ops
    python -m cudagrad.bench cpu  [--quick] [--json PATH]   # CPU kernels against numpy
    python -m cudagrad.bench gpu  [--quick] [--json PATH] [--plot PATH] [--device cuda|cpu]
                                  [--no-compile] [--only NAMES]
                                    # fused kernels and training steps against PyTorch eager and
                                    # torch.compile; --device cpu runs the same code paths on the CPU

Each suite is a module of this package with `run(quick: bool) -> dict`, the dict
holding "reference" (what the rows compare against, with its version) and "rows":
one dict a workload with "name", "cudagrad_s" and "reference_s" (median seconds),
and optionally "target_speedup", "lazy" and "note". The speedup printed is
reference time / cudagrad time (above 1: cudagrad is faster). A suite may also
define `table(result) -> str` and `plot(result, path)`, and take `device`,
`compile` and `only` arguments in run() (the options --device, --no-compile, --only).
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import inspect
import json
import os
import platform
import sys

SUITES = ("tiny", "cpu", "gpu")


def machine() -> dict:
    """What ran the numbers: CPU model, cores, Python and library versions."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    import numpy
    return {"cpu": model, "cores": os.cpu_count(), "usable_cores": usable,
            "machine": platform.machine(), "system": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "numpy": numpy.__version__}


def speedup(row: dict) -> float | None:
    if not row.get("cudagrad_s") or not row.get("reference_s"):
        return None
    return row["reference_s"] / row["cudagrad_s"]


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / 1e-9:.3g} ns"


def table(result: dict) -> str:
    header = ["workload", "cudagrad", result["reference"], "speedup", "target"]
    lines = []
    for row in result["rows"]:
        ratio = row.get("speedup")
        target = row.get("target_speedup")
        lines.append([row["name"], _seconds(row.get("cudagrad_s")), _seconds(row.get("reference_s")),
                      "-" if ratio is None else f"{ratio:.2f}x",
                      "-" if target is None else f">= {target:g}x"])
    widths = [max(len(str(cells[i])) for cells in [header, *lines]) for i in range(len(header))]

    def render(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    out = [render(header), "| " + " | ".join("-" * w for w in widths) + " |"]
    out.extend(render(cells) for cells in lines)
    notes = [f"- {row['name']}: {row['note']}" for row in result["rows"] if row.get("note")]
    return "\n".join(out + ([""] + notes if notes else []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cudagrad.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", choices=SUITES)
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (a smoke test)")
    parser.add_argument("--json", metavar="PATH", help="also write the results here as JSON")
    parser.add_argument("--plot", metavar="PATH", help="also draw a PNG bar chart here (needs matplotlib)")
    parser.add_argument("--device", choices=("cuda", "cpu"), help="where the suite runs (gpu suite: cuda)")
    parser.add_argument("--no-compile", action="store_true",
                        help="skip torch.compile (it compiles for minutes)")
    parser.add_argument("--only", metavar="NAMES", help="comma-separated parts of workload names to run")
    args = parser.parse_args(argv)
    try:
        suite = importlib.import_module(f"cudagrad.bench.{args.suite}")
    except ModuleNotFoundError as error:
        if error.name != f"cudagrad.bench.{args.suite}":
            raise
        print(f"cudagrad.bench: the {args.suite!r} suite is not written yet", file=sys.stderr)
        return 2
    about = machine()
    print(f"{about['cpu']}, {about['cores']} cores ({about['usable_cores']} usable), "
          f"{about['system']}, Python {about['python']}, numpy {about['numpy']}", flush=True)
    options = {}
    accepted = inspect.signature(suite.run).parameters
    for flag, name, value in (("--device", "device", args.device),
                              ("--no-compile", "compile", False if args.no_compile else None),
                              ("--only", "only", args.only)):
        if value is not None:
            if name not in accepted:
                parser.error(f"{flag} is not an option of the {args.suite} suite")
            options[name] = value
    if args.plot and not hasattr(suite, "plot"):
        parser.error(f"--plot is not an option of the {args.suite} suite")
    result = suite.run(quick=args.quick, **options)
    for row in result["rows"]:
        row["speedup"] = speedup(row)
    result = {"suite": args.suite, "quick": args.quick,
              "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "command": "python -m cudagrad.bench " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": about, **result}
    print(getattr(suite, "table", table)(result))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)
            out.write("\n")
    if args.plot and suite.plot(result, args.plot):
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
