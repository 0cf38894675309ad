"""`robustbench_lfm.evaluate`: your own model through the same attacks, metrics and sanity checks.

Any `torch.nn.Module` that maps images in [0, 1], shaped (N, 3, H, W), to embeddings (re-ID) or
logits (classification) in eval mode is evaluated as a sweep evaluates a trained model: the same
cells (clean, then every attack at every eps, per seed), the sanity probes, the metrics of the
metric table and the rows of the CSV schema. The model is not trained, and it is moved to
`device` in place. Its state dict's sha256 stands in `checkpoint_sha256` and `model_params`
(`weights_sha256`), so two models given the same name stay apart in tables and the gate.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from robustbench_lfm import options
from robustbench_lfm.options import RunOptions
from robustbench_lfm.parsing import SpecError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def evaluate(model: nn.Module, *, name: str = "my-model", out: str | Path | None = None, **given: Any) -> pd.DataFrame:
    """Evaluate `model` clean and under attack; the tidy result table.

    Args:
        model: maps [0, 1] images (N, 3, H, W) to embeddings (re-ID) or logits (classification).
            A module in train mode is put in eval mode (the manifest says so); one whose eval-mode
            output is random, or whose forward changes its own weights or buffers, is refused.
        name: the model's label in the `model` column (letters, digits, `_.-`).
        out: a run directory to write (results.csv, queries.csv, probes.csv, sanity.csv,
            manifest.json, fingerprint.json) that `lfm-bench report` and `check` read, and that
            a later call resumes; None = a temporary one, removed after.
        **given: the `lfm-bench run` options that apply to a given model, under their flag names
            (`n_eval` for `--n-eval`), with the CLI's defaults and checks; `attacks`, `eps` and
            `seeds` take a sequence (`attacks=("pgd", "fgsm")`, `eps=(8/255,)`) or the CLI's text
            (`eps="4/255,8/255"`). They are listed at the end of this docstring, generated from the
            declared options (robustbench_lfm/options.py).

    Returns:
        The rows of results.csv (columns as in results/README.md): one per cell and metric.

    Raises:
        SpecError (a ValueError): an unknown keyword (with a did-you-mean), a bad value, or a model
            whose output on the dataset's images is not one finite row per image (of one logit per
            class for classification), or is not a function of its input.
    """
    if not isinstance(model, nn.Module):
        raise SpecError(f"evaluate() takes a torch.nn.Module, not {type(model).__name__}")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SpecError(f"name={name!r} must be letters, digits and _.- (it labels the model in tables)")
    opts = run_options(given, name)
    if out is None:
        with tempfile.TemporaryDirectory(prefix="lfm-bench-evaluate-") as tmp:
            return _evaluate(model, Path(tmp) / "run", opts)
    return _evaluate(model, Path(out), opts)


_SEQUENCES = ("attacks", "eps", "seeds")


def run_options(given: dict[str, Any], name: str) -> RunOptions:
    """`evaluate`'s keywords as the run's options, each checked as its declaration says
    (robustbench_lfm.options); unknown keywords are refused with a did-you-mean."""
    known = options.evaluate_keywords()
    values: dict[str, Any] = {}
    for key, value in given.items():
        if key not in known:
            raise SpecError(_unknown_keyword(key, known))
        try:
            values[key] = options.convert(key, _sequence_text(key, value) if key in _SEQUENCES else value)
        except SpecError as err:
            raise SpecError(f"evaluate(): {err}") from None
    return RunOptions(**values, models="", no_baseline=True, name=name)


def _sequence_text(key: str, value: Any) -> str:
    """attacks, eps or seeds as the CLI's comma list: that text itself, or a sequence (floats by
    repr, which parse_eps reads back exactly)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, int, float)) or not isinstance(value, Sequence):
        raise SpecError(
            f"{key} is a sequence or the CLI's comma text: attacks=('pgd',), eps=(8/255,) or '8/255', seeds=(0, 1) "
            f"or '0,1'; got {value!r}"
        )
    try:
        if key == "eps":
            return ",".join(v if isinstance(v, str) else repr(float(v)) for v in value)
        if key == "seeds":
            return ",".join(str(int(v)) for v in value)
    except (TypeError, ValueError, OverflowError):
        raise SpecError(f"{key}={value!r} must be numbers (eps in [0, 1], seeds integers)") from None
    return ",".join(str(v) for v in value)


def _unknown_keyword(key: str, known: tuple[str, ...]) -> str:
    """One line for a keyword evaluate() does not take: a run-only option, or a typo and its match."""
    if key in options.declared():
        return (
            f"evaluate() scores a given model: `{key}` is an `lfm-bench run` option for registered models "
            f"(evaluate() takes {', '.join(known)})"
        )
    return f"evaluate() got an unknown keyword {key!r}{options.unknown(key, known)} (it takes {', '.join(known)})"


def _document(function: Callable[..., Any]) -> None:
    """Give `evaluate` its real signature and list its options, both from the declarations."""
    fixed = list(inspect.signature(function).parameters.values())[:-1]
    table = options.declared()
    extra = [
        inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=table[k][0].default)
        for k in options.evaluate_keywords()
    ]
    function.__signature__ = inspect.Signature([*fixed, *extra], return_annotation=pd.DataFrame)  # type: ignore[attr-defined]
    lines = [f"    {k} (default {table[k][0].default!r}): {table[k][1].help}" for k in options.evaluate_keywords()]
    function.__doc__ = (function.__doc__ or "") + "\n    Options (`lfm-bench run --help`):\n" + "\n".join(lines) + "\n"


def _evaluate(model: nn.Module, out: Path, opts: RunOptions) -> pd.DataFrame:
    """Build the spec with `model` as its one given model and run the sweep in this process."""
    from robustbench_lfm.checkpoints import register_external
    from robustbench_lfm.executors import ExecSpec
    from robustbench_lfm.runner import run_sweep
    from robustbench_lfm.spec import build_spec

    given = register_external(model, str(opts.name))
    spec = build_spec(dataclasses.replace(opts, out=out), given=(given,))
    return run_sweep(spec, log=lambda line: None, ex=ExecSpec())


_document(evaluate)
