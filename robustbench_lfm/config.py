"""Run configuration files: `lfm-bench run --config FILE` and the shipped `--preset` files.

A config is a TOML table whose keys are the `run` command's long option names (`models`,
`attacks`, `eps`, `dataset`, `data-root`, `recipe`, `rerank`, ...; `-` or `_` alike). Lists are
joined with commas (`eps = ["4/255", "8/255"]`); a repeatable option takes a list (`plugins =
["my_regularizers.py"]`). The values become the command's defaults, so a
flag given on the command line overrides the file. Unknown keys and wrong types are errors that
name the key and the known ones.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from robustbench_lfm.recipe import tomllib
from robustbench_lfm.typecheck import conforms


class ConfigError(ValueError):
    """A config file cannot be used; the message names the fix."""


def option_names(command: click.Command) -> dict[str, click.Parameter]:
    """Long option name without dashes ("data_root") -> the parameter."""
    names: dict[str, click.Parameter] = {}
    for param in command.params:
        if isinstance(param, click.Option) and param.expose_value:
            for opt in param.opts:
                if opt.startswith("--"):
                    names[opt[2:].replace("-", "_")] = param
            if getattr(param, "multiple", False) and param.name:  # a list key: plugins = [...]
                names[param.name] = param
    return names


def read_config(path: Path, command: click.Command) -> dict[str, Any]:
    """The defaults a config file sets for `command`, keyed by parameter name."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"config file {path} cannot be read: {err}") from None
    known = option_names(command)
    out = {}
    for key, value in raw.items():
        param = known.get(key.replace("-", "_"))
        if param is None:
            raise ConfigError(f"{path}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        out[param.name] = _value(path, key, value, param)
    return out


def _value(path: Path, key: str, value: Any, param: click.Parameter) -> Any:
    for v in value if isinstance(value, list) else [value]:
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{path}: {key} = {v} is not a finite number")
    if isinstance(param.type, click.types.IntParamType) and not conforms(value, int):
        raise ConfigError(f"{path}: {key} = {value!r} must be an integer (|value| < 2^31)")
    if getattr(param, "multiple", False):  # a repeatable option takes the list as it is
        if not conforms(value, list[str]) and not isinstance(value, str):
            raise ConfigError(f"{path}: {key} must be a string or a list of strings")
        return tuple(value) if isinstance(value, list) else (value,)
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    if isinstance(value, dict):
        raise ConfigError(f"{path}: {key} must be a value or a list, not a table")
    if getattr(param, "is_flag", False) and not isinstance(value, bool):
        raise ConfigError(f"{path}: {key} is a flag; write {key} = true or false")
    return value
