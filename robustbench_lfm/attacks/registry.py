"""The attack registry: names are public API (CLI, config files, CSV).

`@register_attack("pgd")` on an `Attack` subclass adds it; `create_attack(name, **options)` builds
one (no model needed); `list_attacks()` lists the names; `ATTACKS.source(name)` says which module
registered it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from robustbench_lfm.lfm_registry import Registry, UnknownNameError, did_you_mean

if TYPE_CHECKING:
    from robustbench_lfm.attacks.base import Attack

__all__ = ["ATTACKS", "UnknownAttackError", "create_attack", "did_you_mean", "get_attack_class", "list_attacks"]

T = TypeVar("T", bound="type[Attack]")

UnknownAttackError = UnknownNameError  # an unknown attack or objective name (the older name)
ATTACKS: Registry[type[Attack]] = Registry("attack")


def register_attack(name: str) -> Callable[[T], T]:
    """Class decorator registering an attack under `name`; a duplicate name raises DuplicateNameError."""

    def wrap(cls: T) -> T:
        cls.name = name
        ATTACKS.add(name, cls, cls.__module__)
        return cls

    return wrap


def get_attack_class(name: str) -> type[Attack]:
    """The class registered as `name`; UnknownAttackError lists close matches."""
    return ATTACKS[name]


def create_attack(name: str, **options: Any) -> Any:
    """Build the attack `name` with `options` (steps, step_size, objective, ...)."""
    return get_attack_class(name)(**options)


def list_attacks() -> list[str]:
    """Registered attack names, sorted."""
    return ATTACKS.names()
