"""Generalization across domains (issue 17, part 2): --test-dataset scores another dataset than
the one trained on, the synthreid `domain` option gives embedded data a second domain, and both
reach the CSV, the identity, the run's fingerprint and the gate."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from robustbench_lfm.cli import main
from robustbench_lfm.datasets.synthreid import SynthReIDConfig, generate
from robustbench_lfm.spec import resolve_data
from tests.conftest import TINY, TINY_CLI, tiny_cli

OTHER = TINY_CLI + ",domain=b"
SQUARE = tiny_cli(width=TINY["height"])  # 32x32


def test_domain_b_is_another_population_and_the_default_keys_stand():
    a, b = generate(SynthReIDConfig(**TINY)), generate(SynthReIDConfig(**TINY, domain="b"))
    assert a.summary() == b.summary()  # the same split sizes: only the appearance changes
    colour = lambda d: d.gallery.images.float().mean(dim=(0, 2, 3))  # noqa: E731
    assert float((colour(a) - colour(b)).abs().max()) > 5  # mean colour moves by more than 5 levels
    assert "domain" not in dict(resolve_data("synthreid", None).resolved)  # absent at its default
    assert resolve_data("synthreid:domain=a", None).key() == resolve_data("synthreid", None).key()
    assert dict(resolve_data("synthreid:domain=b", None).resolved)["domain"] == "b"


def _run(tmp_path, out, *extra):
    args = ["run", "--models", "plain", "--no-baseline", "--attacks", "pgd", "--eps", "8/255", "--dataset", TINY_CLI,
            "--epochs", "1", "-q", "--out", str(tmp_path / out), "--cache-dir", str(tmp_path / "cache"),
            *extra]  # fmt: skip
    return CliRunner().invoke(main, args)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("domains")
    assert _run(tmp, "same").exit_code == 0
    result = _run(tmp, "across", "--test-dataset", OTHER)
    assert result.exit_code == 0, result.output
    return tmp


def _table(run_dir):
    return pd.read_csv(run_dir / "results.csv", keep_default_na=False)


def test_a_cross_domain_run_reuses_the_checkpoint_and_stays_apart(runs):
    same, across = _table(runs / "same"), _table(runs / "across")
    assert set(same["test_dataset"]) == set(across["test_dataset"]) == {"synthreid"}
    assert set(same["test_data_params"]) == set(same["data_params"])  # scored on its own test split
    assert json.loads(across["test_data_params"].iloc[0])["domain"] == "b"
    assert set(same["checkpoint_sha256"]) == set(across["checkpoint_sha256"])  # trained once, on domain a
    manifest = json.loads((runs / "across" / "manifest.json").read_text())
    assert manifest["training"]["plain@seed0"]["cached"] is True
    assert not set(same["cell_id"]) & set(across["cell_id"])
    assert json.loads((runs / "across" / "fingerprint.json").read_text())["evaluation"]["test"]["name"] == "synthreid"


def test_the_test_dataset_binds_the_run_directory(runs):
    result = _run(runs, "across")  # no --test-dataset: another measurement, refused in that directory
    assert result.exit_code == 2 and "evaluation.test" in result.output


def test_the_training_data_as_test_dataset_is_the_same_measurement(runs):
    result = _run(runs, "same", "--test-dataset", TINY_CLI)
    assert result.exit_code == 0, result.output
    assert json.loads((runs / "same" / "manifest.json").read_text())["cells_run"] == 0


def test_the_gate_keeps_test_domains_apart(runs):
    result = CliRunner().invoke(main, ["check", str(runs / "across"), "--baseline", str(runs / "same" / "results.csv")])
    assert result.exit_code == 1 and "MISSING plain seed 0 clean rank1" in result.output


def test_the_report_names_both_domains(runs):
    assert CliRunner().invoke(main, ["report", str(runs / "across"), "-q"]).exit_code == 0
    assert (runs / "across" / "report" / "report.md").read_text().startswith("# synthreid -> synthreid:domain=b")


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--test-dataset", "digits"], "is a classification dataset, but --dataset synthreid trains reid"),
     (["--test-dataset", SQUARE], "has 32x32 images"),
     (["--test-dataset", "synthreid:domain=c"], "domain='c' is not one of a, b"),
     (["--test-dataset", "nosuch"], "nosuch")],
)  # fmt: skip
def test_a_test_dataset_that_cannot_be_scored_is_refused_before_anything_is_written(tmp_path, extra, message):
    result = _run(tmp_path, "bad", *extra)
    assert result.exit_code == 2 and message in result.output and result.output.count("\n") == 1
    assert not (tmp_path / "bad" / "results.csv").exists() and not (tmp_path / "bad" / "fingerprint.json").exists()


def test_classification_across_domains_needs_the_same_classes(tmp_path):
    args = ["run", "--models", "plain", "--no-baseline", "--attacks", "fgsm", "--eps", "8/255", "--epochs", "1", "-q",
            "--dataset", "synthcls:train_per_class=6,test_per_class=3", "--cache-dir", str(tmp_path / "c")]  # fmt: skip
    result = CliRunner().invoke(main, [*args, "--test-dataset", "digits", "--out", str(tmp_path / "a")])
    assert result.exit_code == 2 and "a classifier is scored on its own classes" in result.output
    other = "synthcls:train_per_class=6,test_per_class=3,noise_std=0.2"
    result = CliRunner().invoke(main, [*args, "--test-dataset", other, "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    df = _table(tmp_path / "b")
    assert set(df["n_eval"]) == {30} and json.loads(df["test_data_params"].iloc[0])["noise_std"] == 0.2


def test_evaluate_takes_a_test_dataset(tmp_path):
    from robustbench_lfm import evaluate

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * TINY["height"] * TINY["width"], 8))
    df = evaluate(net, dataset=TINY_CLI, test_dataset=OTHER, eps=(8 / 255,), cache_dir=tmp_path)
    assert json.loads(df["test_data_params"].iloc[0])["domain"] == "b"
