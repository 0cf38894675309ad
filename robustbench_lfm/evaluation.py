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
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from robustbench_lfm.parsing import SpecError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def evaluate(
    model: nn.Module,
    *,
    dataset: str = "synthreid",
    test_dataset: str | None = None,
    attacks: Sequence[str] = ("pgd",),
    eps: Sequence[float] = (8 / 255,),
    name: str = "my-model",
    out: str | Path | None = None,
    seeds: Sequence[int] = (0,),
    data_root: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
    quiet: bool = True,
    **evaluation: Any,
) -> pd.DataFrame:
    """Evaluate `model` clean and under `attacks` at each of `eps`; the tidy result table.

    Args:
        model: maps [0, 1] images (N, 3, H, W) to embeddings (re-ID) or logits (classification).
        dataset: a registered dataset with its options, as `--dataset` takes it ("synthreid",
            "digits", "market1501" with `data_root`).
        test_dataset: score this dataset instead, as `--test-dataset` (the model was trained on
            `dataset`'s domain; its training split sets the normalization and class count).
        attacks: attack items as `--attacks` takes them ("pgd", "pgd:steps=20", "sma:side=gallery").
        eps: budgets on the pixel scale (8/255 = 0.0314), as `--eps`.
        name: the model's label in the `model` column (letters, digits, `_.-`).
        out: a run directory to write (results.csv, queries.csv, probes.csv, sanity.csv,
            manifest.json, fingerprint.json) that `lfm-bench report` and `check` read, and that
            a later call resumes; None = a temporary one, removed after.
        seeds: seeds of the attacks' random starts (the `train_seed` column).
        data_root: the folder of a real dataset.
        device: "cpu", "cuda", "cuda:1", ...; the model is moved there.
        batch_size: images per attack and feature batch.
        cache_dir: where decoded datasets are cached (default as `lfm-bench run`).
        quiet: no progress bars.
        **evaluation: `distance`, `ap`, `flip`, `rerank`, `n_eval`, `precision`, `attack_precision`
            as the `run` options of those names.

    Returns:
        The rows of results.csv (columns as in results/README.md): one per cell and metric.

    Raises:
        SpecError (a ValueError): a bad argument, or a model whose output on the dataset's images
            is not one finite row per image (of one logit per class for classification).
    """
    if not isinstance(model, nn.Module):
        raise SpecError(f"evaluate() takes a torch.nn.Module, not {type(model).__name__}")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SpecError(f"name={name!r} must be letters, digits and _.- (it labels the model in tables)")
    if isinstance(attacks, str) or isinstance(eps, (int, float)) or isinstance(seeds, int):
        raise SpecError("attacks, eps and seeds are sequences: attacks=('pgd',), eps=(8/255,), seeds=(0,)")
    opts = locals_of(dataset, attacks, eps, name, seeds, data_root, device, batch_size, cache_dir, quiet, evaluation)
    opts["test_dataset"] = test_dataset
    if out is None:
        with tempfile.TemporaryDirectory(prefix="lfm-bench-evaluate-") as tmp:
            return _evaluate(model, Path(tmp) / "run", opts)
    return _evaluate(model, Path(out), opts)


def locals_of(
    dataset: str,
    attacks: Sequence[str],
    eps: Sequence[float],
    name: str,
    seeds: Sequence[int],
    data_root: str | Path | None,
    device: str,
    batch_size: int,
    cache_dir: str | Path | None,
    quiet: bool,
    evaluation: dict[str, Any],
) -> dict[str, Any]:
    """`evaluate`'s arguments as the `run` command's options (as `build_spec` takes them)."""
    from robustbench_lfm.cli import run_defaults
    from robustbench_lfm.spec import EvalSpec

    opts = run_defaults()
    unknown = sorted(set(evaluation) - {f.name for f in dataclasses.fields(EvalSpec)})
    if unknown:
        raise SpecError(f"evaluate() got unknown argument(s) {', '.join(unknown)}")
    try:
        eps_text = ",".join(repr(float(e)) for e in eps)  # repr round-trips: parse_eps reads the same float
        seeds_text = ",".join(str(int(s)) for s in seeds)
    except (TypeError, ValueError, OverflowError):
        raise SpecError(f"eps={eps!r} must be numbers in [0, 1] and seeds={seeds!r} integers") from None
    opts.update(
        dataset=dataset, attacks_=",".join(attacks), eps=eps_text, seeds=seeds_text, models_="",
        no_baseline=True, name=name, data_root=data_root, device=device, batch_size=batch_size,
        cache_dir=cache_dir, quiet=quiet, **evaluation,
    )  # fmt: skip
    return opts


def _evaluate(model: nn.Module, out: Path, opts: dict[str, Any]) -> pd.DataFrame:
    """Build the spec with `model` as its one given model and run the sweep in this process."""
    from robustbench_lfm.checkpoints import register_external
    from robustbench_lfm.executors import ExecSpec
    from robustbench_lfm.runner import run_sweep
    from robustbench_lfm.spec import build_spec

    given = register_external(model, opts["name"])
    spec = build_spec(**{**opts, "out": out, "given": (given,)})
    return run_sweep(spec, log=lambda line: None, ex=ExecSpec())
