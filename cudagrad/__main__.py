"""`python -m cudagrad COMMAND`: command-line tools.

    python -m cudagrad info [--json]    the environment, for bug reports
"""
from __future__ import annotations

import sys

COMMANDS = {"info": "report versions, devices, compilers and the cache (for bug reports)"}


def _usage() -> str:
    lines = ["usage: python -m cudagrad COMMAND [options]", "", "commands:"]
    lines.extend(f"  {name:<8} {text}" for name, text in COMMANDS.items())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "info":
        from cudagrad.info import main as info_main
        return info_main(rest)
    print(f"python -m cudagrad: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
