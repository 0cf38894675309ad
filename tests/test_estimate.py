"""`lfm-bench run --dry-run` and the rates behind its estimate (robustbench_lfm/estimate.py)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from robustbench_lfm import estimate
from robustbench_lfm.cli import main
from robustbench_lfm.options import RunOptions
from robustbench_lfm.spec import build_spec
from tests.conftest import TINY_CLI

FAST = ["--dataset", TINY_CLI, "--epochs", "1", "--eps", "8/255", "--models", "lfm", "--attacks", "pgd:steps=2"]


def _run(out, cache, *extra):
    return CliRunner().invoke(main, ["run", *FAST, "--out", str(out), "--cache-dir", str(cache), "-q", *extra])


def test_a_dry_run_writes_nothing_and_counts_what_a_real_run_then_does(tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    first = _run(out, cache, "--dry-run")
    assert first.exit_code == 0, first.output
    assert "models: 2 to train (plain@seed0, lfm@seed0)" in first.output
    assert "cells: 4 of 4 to run (0 recorded)" in first.output and "rates of a 2-core CPU assumed" in first.output
    assert not list(out.rglob("*")) and not (cache / "checkpoints").exists()  # nothing trained, nothing recorded
    assert _run(out, cache).exit_code == 0
    rates = json.loads((cache / estimate.RATES_FILE).read_text())  # the real run measured its stages
    assert set(rates["train"]) == {"resnet-mini bf16"}  # the re-ID recipe trains in bf16: its own rate
    assert rates["train"]["resnet-mini bf16"] and all(v > 0 for v in rates["cell"]["resnet-mini"])
    cell = rates["cell"]["resnet-mini"]  # one attacked cell per model; a clean cell times no embedding
    assert len(cell) == 2 and max(cell) < 3 * min(cell)
    again = _run(out, cache, "--dry-run", "--eps", "4/255,8/255")
    assert "models: 0 to train, 2 cached or given" in again.output
    assert "cells: 2 of 6 to run (4 recorded)" in again.output and "assumed" not in again.output


def test_a_damaged_rates_file_falls_back_to_the_defaults(tmp_path):
    (tmp_path / estimate.RATES_FILE).write_text('{"train": {"resnet-mini": [0.1, "x", -1, NaN]}, "cell": 3')
    assert estimate.read_rates(tmp_path) == {}
    (tmp_path / estimate.RATES_FILE).write_text('{"train": {"resnet-mini": [0.1, "x", -1, 0.3]}}')
    assert estimate.rate(estimate.read_rates(tmp_path), "train", "resnet-mini") == (0.2, True)  # median of the valid
    assert estimate.rate({}, "cell", "vgg16") == (estimate.DEFAULT_RATES["cell"], False)
    assert estimate.rate({}, "train", "resnet-mini bf16") == (estimate.DEFAULT_RATES["train bf16"], False)
    assert estimate.DEFAULT_RATES["train bf16"] < estimate.rate({}, "train", "resnet-mini")[0]


def test_an_attack_s_work_counts_its_steps_eot_and_an_ensemble_s_members(tmp_path):
    spec = build_spec(RunOptions(dataset=TINY_CLI, attacks="pgd:steps=3,pgd:steps=3,eot=4,auto-reid,corrupt",
                                 eps="8/255", out=tmp_path / "r", cache_dir=tmp_path / "c"))  # fmt: skip
    passes = {c.attack.label if c.attack else "clean": estimate.cell_passes(spec, c) for c in spec.cells()}
    assert passes["clean"] == 1 and passes["pgd:steps=3"] == 4 and passes["pgd:eot=4,steps=3"] == 16
    members = [estimate.cell_passes(spec, c) for c in spec.cells() if c.attack and c.attack.name == "auto-reid"]
    assert members[0] > 6 * 4  # six members of several steps each, run as they run alone
    assert estimate.duration(59) == "59 s" and estimate.duration(125) == "2 min 05 s"
