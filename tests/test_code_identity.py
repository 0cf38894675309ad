"""Code is part of a number's identity: an edited copy of the project recomputes exactly what the
edit can change and replaces the old rows; a comment, docstring or layout edit changes nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from robustbench_lfm import code_identity, datasets
from robustbench_lfm.attacks import objectives
from robustbench_lfm.attacks.registry import ATTACKS
from robustbench_lfm.identity import MEASUREMENT
from robustbench_lfm.models import registry
from tests.conftest import tiny_cli

# The tiny data at synthreid's own 64x32: a model trained one epoch there is moved by PGD's steps;
# at the suite's 32x16 it stays near chance and two steps score as its random start alone.
LEARNABLE = tiny_cli(height=64, width=32)

PACKAGE = Path(code_identity.__file__).resolve().parent
# Modules that cannot change a number: no component's closure may hold them.
NOT_NUMERIC = ("cli", "cli_options", "listing", "report", "summary", "check", "config", "runner")


def test_comments_docstrings_and_layout_change_nothing_and_code_does(tmp_path):
    source = '"""Module doc."""\n\n\ndef f(x):\n    """Doc."""\n    return x + 1  # add one\n'
    same = "# a new comment\n'''Other doc.'''\ndef f(x):\n    '''Another.'''\n    return (x +\n            1)\n"
    other = '"""Module doc."""\n\n\ndef f(x):\n    """Doc."""\n    return x + 2\n'
    texts = {}
    for name, text in (("a", source), ("b", same), ("c", other)):
        (tmp_path / f"{name}.py").write_text(text)
        texts[name] = code_identity.normalised(tmp_path / f"{name}.py")
    assert texts["a"] == texts["b"] != texts["c"]


REGISTRIES = {
    "attack": ATTACKS, "objective": objectives.OBJECTIVES, "model": registry.MODELS, "backbone": registry.BACKBONES,
    "regularizer": registry.REGULARIZERS, "method": registry.METHODS, "dataset": datasets.DATASETS,
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_every_built_in_component_has_a_closure_free_of_the_cli_and_the_report(kind):
    table = REGISTRIES[kind]
    for name in table.names():
        files = code_identity.built_in([table.source(name)])
        assert table.source(name) in files, (kind, name)
        held = {m.removeprefix("robustbench_lfm.").split(".")[0] for m in files}
        assert not held & set(NOT_NUMERIC), (kind, name, held & set(NOT_NUMERIC))


def test_pgd_counts_the_modules_it_steps_with_and_not_other_attacks():
    files = code_identity.built_in([ATTACKS.source("pgd")])
    assert {"robustbench_lfm.attacks.iterative", "robustbench_lfm.attacks.base"} <= set(files)
    assert "robustbench_lfm.attacks.square" not in files and "robustbench_lfm.attacks.cw" not in files


def _sweep(copy: Path, out: Path, cache: Path) -> dict:
    args = [sys.executable, "-m", "robustbench_lfm", "run", "--models", "lfm", "--attacks", "pgd:steps=2",
            "--dataset", LEARNABLE, "--epochs", "1", "--eps", "8/255", "-q", "--out", str(out),
            "--cache-dir", str(cache)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(copy)}
    done = subprocess.run(args, cwd=copy, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((out / "manifest.json").read_text())


def _edit(copy: Path, old: str, new: str) -> None:
    path = copy / "robustbench_lfm" / "attacks" / "iterative.py"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_an_edited_copy_recomputes_what_the_edit_changes_and_a_comment_edit_nothing(tmp_path):
    copy, out, cache = tmp_path / "copy", tmp_path / "run", tmp_path / "cache"
    shutil.copytree(PACKAGE, copy / "robustbench_lfm", ignore=shutil.ignore_patterns("__pycache__"))
    first = _sweep(copy, out, cache)
    before = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert first["cells_run"] == 4  # plain and lfm: clean and pgd

    _edit(copy, "return g.sign()", "return g.sign() * 0")  # the PGD step made a no-op
    edited = _sweep(copy, out, cache)
    after = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert edited["cells_run"] == 2 and all(t["cached"] for t in edited["training"].values())  # pgd only
    assert len(after) == len(before) and not after.duplicated(list(MEASUREMENT)).any()  # replaced, not doubled
    clean = before["attack"] == "none"
    assert set(after.loc[after["attack"] == "none", "cell_id"]) == set(before.loc[clean, "cell_id"])
    assert not set(after.loc[after["attack"] == "pgd", "cell_id"]) & set(before.loc[~clean, "cell_id"])
    mean = {name: df[(df["attack"] == "pgd") & (df["metric"] == "mAP")]["value"].mean()
            for name, df in (("before", before), ("after", after))}  # fmt: skip
    assert mean["after"] > mean["before"]  # no step: only the random start is left, a weaker attack

    _edit(copy, '"""The unit step:', '# a comment only\n        """The unit step, reworded:')
    assert _sweep(copy, out, cache)["cells_run"] == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv", keep_default_na=False), after)
