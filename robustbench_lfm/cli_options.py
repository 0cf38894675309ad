"""The click options of `lfm-bench run`, generated from the declared options, and the shared
`--format` and `--quiet` options.

`RUN_OPTIONS` is the list of click options of `run` in `--help` order, one per field of
`robustbench_lfm.options.RunOptions` (its type, default and help) between `--preset` / `--config`
and `--format`; `with_options` applies a list to a command. `--preset` and `--config` are eager:
their file's keys become the run's defaults (`apply_config`), so a flag given on the command
line still wins. Torch-free.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from robustbench_lfm import options

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

PRESET_DIR = Path(__file__).with_name("presets")


def fail(message: str, status: int = 2) -> NoReturn:
    """Print one error line and exit."""
    click.echo(f"lfm-bench: error: {message}", err=True)
    sys.exit(status)


def presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def apply_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Eager callback of --preset and --config: the file's keys become the run's defaults, so any
    flag given on the command line still wins."""
    if value is None:
        return None
    from robustbench_lfm.config import ConfigError, read_config

    path = PRESET_DIR / f"{value}.toml" if param.name == "preset" else Path(value)
    if param.name == "preset" and not path.is_file():
        fail(f"unknown preset {value!r} (known: {', '.join(presets())}); or give a file with --config")
    try:
        defaults = read_config(path, ctx.command)
    except ConfigError as err:
        fail(str(err))
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def with_options(decorators: list[Decorator]) -> Decorator:
    """A decorator applying the options `decorators` so that `--help` lists them in the order given."""

    def wrap(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(decorators):
            command = option(command)
        return command

    return wrap


def plugin_option() -> Decorator:
    """`--plugin FILE.py|MODULE` (repeatable; `plugins = [...]` in a config file), as `run` has it."""
    return _click_option("plugins")


def format_option(json_means: str) -> Decorator:
    """`--format text|json`; `json_means` says what the JSON holds."""
    return click.option(
        "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True, help=json_means
    )


def quiet_option(means: str) -> Decorator:
    """`--quiet` / `-q` with what it silences for this command."""
    return click.option("--quiet", "-q", is_flag=True, default=False, help=means)


def _click_option(name: str) -> Decorator:
    """The click option of the declared run option `name` (robustbench_lfm.options)."""
    f, d = options.declared()[name]
    kind = options.kind(f)
    flags = [options.flag(name), *([d.short] if d.short else [])]
    kwargs: dict[str, Any] = {"help": d.help, "default": f.default}
    if kind == "flag":
        kwargs["is_flag"] = True
    elif kind == "list":
        kwargs["multiple"] = True
    elif d.choices:
        kwargs["type"] = click.Choice(list(d.choices))
    elif kind == "int":
        kwargs["type"] = click.IntRange(d.minimum, d.maximum) if d.minimum is not None else int
    elif kind == "float":
        kwargs["type"] = float
    elif kind == "path":
        kwargs["type"] = click.Path(path_type=Path)
    kwargs["show_default"] = f.default not in (None, False, ())
    return click.option(*flags, name, **kwargs)


def _eager(name: str, help: str) -> Decorator:
    return click.option(f"--{name}", default=None, is_eager=True, expose_value=False, callback=apply_config,
                        help=help)  # fmt: skip


# `run`'s options in --help order: the two that read a file of options, every declared option,
# then the output format (the CLI's own).
RUN_OPTIONS: list[Decorator] = [
    _eager(
        "preset",
        "Run a shipped protocol: smoke (a first table in a minute), lfm-paper, rcm-cifar, robustbench-linf "
        "(robustbench_lfm/presets/).",
    ),
    _eager("config", "Run the options of a TOML file (keys are option names: models, attacks, eps, dataset, ...)."),
    *(_click_option(name) for name in options.declared()),
    format_option(
        "json: print the summary (every headline cell, the sanity checks, the files) as one JSON object; "
        "progress lines go to stderr."
    ),
]


SECTION_TITLES = {
    "file": "Options from a file",
    "model": "Models and training",
    "threat": "Threat: attacks and budgets",
    "data": "Data",
    "eval": "Evaluation",
    "exec": "Execution",
    "output": "Output",
}


class SectionedCommand(click.Command):
    """`run`: its --help lists the options under their declared sections (robustbench_lfm/options.py)."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        declared = options.declared()
        sections: dict[str, list[tuple[str, str]]] = {key: [] for key in SECTION_TITLES}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            name = param.name or ""
            key = declared[name][1].section if name in declared else "output"
            key = "file" if name in ("preset", "config") else key
            sections[key].append(record)
        for key, records in sections.items():
            if records:
                with formatter.section(SECTION_TITLES[key]):
                    formatter.write_dl(records)


@functools.cache
def run_command() -> click.Command:
    """A command holding `run`'s options (for reading their names, types and defaults)."""
    command = click.command()(with_options(RUN_OPTIONS)(lambda **_: None))
    return click.Command("run", params=command.params)
