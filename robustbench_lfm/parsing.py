"""Parsing of command-line and config values: names with options, lists, budgets and seeds.

Torch-free, so `lfm-bench --help`, `ls`, `report` and `check` can use it without loading the
models. Every problem raises `SpecError` naming the problem and the fix.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any


class SpecError(ValueError):
    """Bad user input; the message says what is wrong and how to fix it."""


Params = tuple[tuple[str, Any], ...]


def parse_scalar(text: str) -> Any:
    """'3' -> 3, '0.5' -> 0.5, '8/255' -> 0.0313..., 'true' -> True, '0.02..0.4' -> (0.02, 0.4),
    '2..7' -> (2, 7), else the string."""
    low = text.strip().lower()
    if ".." in low:
        parts = [parse_scalar(t) for t in low.split("..")]
        if len(parts) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in parts):
            return (parts[0], parts[1])  # ints stay ints: images_per_visit=2..7
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        return text.strip()


def parse_named(item: str) -> tuple[str, Params]:
    """'lfm:p=0.3,channels=0.25' -> ('lfm', (('channels', 0.25), ('p', 0.3)))."""
    name, _, rest = item.strip().partition(":")
    params: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise SpecError(f"bad option {part!r} in {item!r}; write NAME:key=value,key=value")
        if key.strip() in params:
            raise SpecError(f"option {key.strip()!r} is given twice in {item!r}; give each option once")
        params[key.strip()] = _checked_number(parse_scalar(value), part, item)
    return name.strip(), tuple(sorted(params.items()))


INT_LIMIT = 2**31  # options are counts, sizes and seeds: anything larger is a typo or an overflow


def _checked_number(value: Any, part: str, item: str) -> Any:
    """`value`, refused when it is a number that is not finite or overflows (NaN passes `< 0`)."""
    numbers = value if isinstance(value, tuple) else (value,)
    for v in numbers:
        if isinstance(v, float) and not math.isfinite(v):
            raise SpecError(
                f"option {part!r} in {item!r} is not a finite number, and no option takes nan or inf; "
                "give a finite number (e.g. 0.1) or, for an option that takes a word, one of its words"
            )
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= INT_LIMIT:
            raise SpecError(f"option {part!r} in {item!r} is out of range (|value| must be < 2^31)")
    return value


def split_list(text: str, plus_separates: bool = True) -> list[str]:
    """Split a comma list of names, keeping 'name:k=v,k=v' groups together. '+' also separates,
    except in model lists, where `a+b` is one composed model (rcm-up+pgd-at)."""
    items: list[str] = []
    for part in (p.strip() for p in (text.replace("+", ",") if plus_separates else text).split(",")):
        if not part:
            continue
        if "=" in part and ":" not in part and items:
            items[-1] += "," + part  # a further option of the previous name
        else:
            items.append(part)
    return items


def parse_eps(text: str) -> tuple[float, ...]:
    """'2/255,4/255,8/255' -> floats on the pixel scale, each in [0, 1], in the order given and each
    once (after `on_grid`)."""
    values = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            value = float(Fraction(part))
        except (ValueError, ZeroDivisionError, OverflowError):
            raise SpecError(f"eps {part!r} is not a number in [0, 1]; write e.g. 8/255 or 0.03") from None
        if not 0.0 <= value <= 1.0 or math.isnan(value):
            raise SpecError(f"eps {part} = {value:.4g} is outside [0, 1]; budgets are on the pixel scale, e.g. 8/255")
        values.append(on_grid(value))
    if not values:
        raise SpecError("no eps given; write e.g. --eps 2/255,4/255,8/255")
    return tuple(dict.fromkeys(values))  # a budget given twice (8/255,0.0313725490) is one budget


def on_grid(eps: float) -> float:
    """`eps` snapped to k/255 when it lies within 1e-6 of that 8-bit level (as `format_eps` prints
    it): 0.0313725 and 8/255 are one budget, not two that print alike."""
    k = eps * 255
    return round(k) / 255 if abs(k - round(k)) < 1e-6 else eps


def format_eps(eps: float) -> str:
    """8/255-style text for eps values on the 1/255 grid, else 4 significant digits."""
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:.4g}"


def format_param(value: Any) -> str:
    """A parameter value as the command line takes it: (0.02, 0.4) -> '0.02..0.4'."""
    return f"{value[0]}..{value[1]}" if isinstance(value, tuple) else str(value)


# The attack options on the pixel scale, which users write as 8-bit levels (`step_size=2/255`).
PIXEL_OPTIONS = ("eps", "step_size")


def as_level(value: float) -> str | None:
    """`k/255` when `value` is exactly the 8-bit level k/255 and that text is shorter than its
    decimal one (2/255, not 0.00784313725490196); None for any other value, inf and NaN included."""
    if not 0 < value * 255 < math.inf:
        return None
    k = round(value * 255)
    return level if k / 255 == value and len(level := f"{k}/255") < len(str(value)) else None


def option_text(key: str, value: Any) -> str:
    """An option's value as a label shows it: a pixel-scale one (PIXEL_OPTIONS) as its level when it
    is exactly one (`as_level`: `step_size=2/255`); any other value as `format_param` writes it, in
    full, so that two values never share a text."""
    level = as_level(value) if key in PIXEL_OPTIONS and isinstance(value, float) else None
    return level or format_param(value)


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0,1,2' -> (0, 1, 2); seeds are non-negative integers."""
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise SpecError(f"--seeds {text!r} must be comma-separated integers, e.g. 0,1,2") from None
    if not seeds or min(seeds) < 0 or max(seeds) >= INT_LIMIT:
        raise SpecError(f"--seeds {text!r} must list one or more integers in [0, 2^31)")
    return tuple(dict.fromkeys(seeds))


def unique(items: list[str]) -> list[str]:
    """Items in order without repeats."""
    return list(dict.fromkeys(items))
