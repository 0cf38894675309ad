"""One small typed registry, shared by the leaves (`models`, `attacks`) and the harness.

A `Registry[T]` maps public names (the strings of the CLI, config files and CSV) to entries of one
kind: backbones, regularizers, models, training methods, attacks, objectives, datasets, metrics.
It remembers where each entry was registered (the module), refuses a name registered twice
(naming both sources), and answers an unknown name with the known ones and a did-you-mean.
`signature_defaults` reads an entry's defaults from its constructor signature, so a default is
written once. Standard library only: `models` and `attacks` never import each other or the
harness, and the CSV readers of the harness never import torch, so this module sits below all
three.
"""

from __future__ import annotations

import difflib
import inspect
import sys
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A registry look-up failed; the message lists the known names and close matches."""

    def __str__(self) -> str:
        return str(self.args[0])


class DuplicateNameError(ValueError):
    """A name was registered twice; the message names both sources."""


def did_you_mean(kind: str, name: str, known: list[str]) -> str:
    """One-line message for an unknown name: close matches (case aside: `LFM` suggests `lfm`),
    then every known name."""
    lower = {k.lower(): k for k in known}
    close = [lower[c] for c in difflib.get_close_matches(name.lower(), list(lower), n=3, cutoff=0.5)]
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {kind} {name!r}{hint} (known: {', '.join(sorted(known)) or 'none'})"


class Registry(Generic[T]):
    """Names of one kind mapped to their entries, in registration order.

    Args:
        kind: what an entry is, for messages ("attack", "backbone").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._sources: dict[str, str] = {}

    def add(self, name: str, entry: T, source: str | None = None) -> T:
        """Register `entry` as `name`; `source` defaults to the calling module."""
        where = source or _caller_module()
        if name in self._entries:
            raise DuplicateNameError(
                f"{self.kind} {name!r} is registered twice: by {self._sources[name]} and by {where}; rename one"
            )
        self._entries[name] = entry
        self._sources[name] = where
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`: the decorated class or function is the entry."""

        def wrap(entry: T) -> T:
            return self.add(name, entry, getattr(entry, "__module__", None) or _caller_module())

        return wrap

    def remove(self, name: str) -> T:
        """Unregister `name` (tests that register a temporary entry)."""
        self._sources.pop(name, None)
        return self._entries.pop(name)

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(did_you_mean(self.kind, name, list(self._entries))) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def values(self) -> list[T]:
        """The entries, in registration order."""
        return list(self._entries.values())

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) pairs, in registration order."""
        return list(self._entries.items())

    def source(self, name: str) -> str:
        """The module that registered `name`."""
        self.__getitem__(name)  # UnknownNameError for an unknown name
        return self._sources[name]


def _caller_module() -> str:
    """The module that called into the registry (the first frame outside this file)."""
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back
    return str(frame.f_globals.get("__name__", "?"))


def calling_module() -> str:
    """The module that called the function calling this one: the source a registering wrapper
    (`register_model(...)`) records, rather than its own module."""
    return str(sys._getframe(2).f_globals.get("__name__", "?"))


def signature_defaults(obj: Callable[..., Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Keyword defaults of a class's constructor (or of a function), including those it passes on
    to its bases through `*args`/`**kwargs` (walked along the MRO), less the names in `skip`
    (what the harness sets: the seed, the device, ...)."""
    out: dict[str, Any] = {}
    for klass in getattr(obj, "__mro__", (obj,)):
        init = klass.__dict__.get("__init__") if isinstance(klass, type) else klass
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        for p in params:
            if p.default is not inspect.Parameter.empty and p.name not in skip:
                out.setdefault(p.name, p.default)
        if not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params):
            break
    return out
