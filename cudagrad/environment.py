"""Environment variables read on the hot path (every realize, every tensor).

os.environ.get costs about 0.7 us when the variable is unset (it encodes the
key and raises KeyError inside). On POSIX, os.environ keeps its values in a
dict of encoded keys (`_data`), updated by every os.environ assignment
(pytest's monkeypatch.setenv included): reading that dict sees the same
values for a twentieth of the cost. Elsewhere, plain os.environ.get.
"""
from __future__ import annotations

import os

_DATA = getattr(os.environ, "_data", None)
_FAST = os.name == "posix" and isinstance(_DATA, dict)
_ENCODED: dict[str, bytes] = {}


def getenv(name: str, default: str | None = None) -> str | None:
    if not _FAST:
        return os.environ.get(name, default)
    key = _ENCODED.get(name)
    if key is None:
        key = _ENCODED[name] = os.fsencode(name)
    value = _DATA.get(key)       # type: ignore[union-attr]
    return default if value is None else os.fsdecode(value)


def is_set(name: str) -> bool:
    """Whether name is in the environment at all: the hot path's check, before getenv."""
    if not _FAST:
        return name in os.environ
    key = _ENCODED.get(name)
    if key is None:
        key = _ENCODED[name] = os.fsencode(name)
    return key in _DATA      # type: ignore[operator]
