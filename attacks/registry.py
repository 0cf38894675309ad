"""The attack registry: names are public API (CLI, config files, CSV).

`@register_attack("pgd")` on an `Attack` subclass adds it; `create_attack(name, **options)` builds
one (no model needed); `list_attacks()` lists the names.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_ATTACKS: dict[str, type] = {}


class UnknownAttackError(KeyError):
    """An unknown attack or objective name; the message lists known names and close matches."""

    def __str__(self) -> str:
        return str(self.args[0])


def did_you_mean(kind: str, name: str, known: list[str]) -> str:
    """One-line message for an unknown name, with close matches."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {kind} {name!r}{hint} (known: {', '.join(sorted(known))})"


def register_attack(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator registering an attack under `name`; a duplicate name raises ValueError."""

    def wrap(cls: type[T]) -> type[T]:
        if name in _ATTACKS:
            raise ValueError(f"attack {name!r} is already registered")
        cls.name = name  # type: ignore[attr-defined]
        _ATTACKS[name] = cls
        return cls

    return wrap


def get_attack_class(name: str) -> type:
    """The class registered as `name`; UnknownAttackError lists close matches."""
    if name not in _ATTACKS:
        raise UnknownAttackError(did_you_mean("attack", name, list(_ATTACKS)))
    return _ATTACKS[name]


def create_attack(name: str, **options: Any) -> Any:
    """Build the attack `name` with `options` (steps, step_size, objective, ...)."""
    return get_attack_class(name)(**options)


def list_attacks() -> list[str]:
    """Registered attack names, sorted."""
    return sorted(_ATTACKS)
