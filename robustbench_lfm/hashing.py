"""Content hashes: cell ids and cache keys are short hashes of canonical JSON."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace; tuples become lists, dataclasses dicts, paths their
    POSIX text. Any other object is a TypeError: its `str`/`repr` may change between runs (a memory
    address) or between versions, so it never makes a key."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_plain, allow_nan=False)


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, Path):
        return obj.as_posix()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} has no canonical JSON form; give its fields as plain values")


def content_hash(obj: Any, length: int = 16) -> str:
    """First `length` hex digits of the sha256 of `obj`'s canonical JSON."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def without_defaults(key: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """`key` less the entries still at the given defaults: fields added to a key after the first
    format drop out at their defaults, so keys made before them stand."""
    return {k: v for k, v in key.items() if k not in defaults or v != defaults[k]}
