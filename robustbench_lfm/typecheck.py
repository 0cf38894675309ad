"""Does a value from a config file or the command line fit a dataclass field's type?

TOML and the `key=value` parser give ints, floats, bools, strings and tuples; a dataclass does not
check them, and `nan` passes every `< 0` guard. `conforms` is the one check: ints are ints (not
bools, |v| < 2^31), floats are finite numbers, bools are bools, fixed tuples match element-wise.
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any

INT_LIMIT = 2**31


def conforms(value: Any, hint: Any) -> bool:
    """Whether `value` fits the type hint `hint` (int, float, bool, str, tuple[...], unions)."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, h) for h in typing.get_args(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(conforms(v, args[0]) for v in value)
        return len(args) == len(value) and all(conforms(v, h) for v, h in zip(value, args, strict=True))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool) and abs(value) < INT_LIMIT
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is type(None):
        return value is None
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # Any and hints this check does not know


def hint_text(hint: Any) -> str:
    """A type hint as a person writes it: 'int', 'tuple[int, int]'."""
    return str(getattr(hint, "__name__", hint)) if isinstance(hint, type) else str(hint).replace("typing.", "")


def check_fields(cls: type, values: dict[str, Any]) -> str | None:
    """The first value of `values` that does not fit its field of dataclass `cls`, as a message."""
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key in hints and not conforms(value, hints[key]):
            return f"{key} = {value!r} must be {hint_text(hints[key])} (finite, |value| < 2^31)"
    return None
