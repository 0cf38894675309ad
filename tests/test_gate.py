"""`lfm-bench check` fails closed: NaN, empty or missing metrics fail it; a baseline that cannot be
read is bad input; every identity column keeps unlike measurements apart."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from robustbench_lfm.cli import main
from robustbench_lfm.identity import IDENTITY
from tests.conftest import TINY_CLI


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gate") / "run"
    cache = tmp_path_factory.mktemp("cache")
    args = ["run", "--models", "plain", "--no-baseline", "--attacks", "pgd", "--dataset", TINY_CLI, "--epochs", "1",
            "--eps", "8/255", "-q", "--out", str(out), "--cache-dir", str(cache)]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out


def _check(run_dir, baseline):
    return CliRunner().invoke(main, ["check", str(run_dir), "--baseline", str(baseline)])


def _table(run):
    return pd.read_csv(run / "results.csv", keep_default_na=False, dtype=str)


def test_a_run_checked_against_itself_passes(run):
    result = _check(run, run / "results.csv")
    assert result.exit_code == 0 and "0 regressed, 0 missing, 0 invalid" in result.output


@pytest.mark.parametrize("value", ["nan", "", "inf", "1.5", "abc"])
def test_an_invalid_run_value_fails_the_gate(run, tmp_path, value):
    broken = tmp_path / "run"
    broken.mkdir()
    table = _table(run)
    table["value"] = value  # every metric of the run
    table.to_csv(broken / "results.csv", index=False)
    result = _check(broken, run / "results.csv")
    assert result.exit_code == 1 and "INVALID plain seed 0" in result.output and "FAILED" in result.output


def test_a_run_without_the_baseline_cells_fails_the_gate(run, tmp_path):
    partial = tmp_path / "run"
    partial.mkdir()
    table = _table(run)
    table[table["attack"] == "none"].to_csv(partial / "results.csv", index=False)
    result = _check(partial, run / "results.csv")
    assert result.exit_code == 1 and "MISSING plain seed 0 pgd 8/255 rank1" in result.output


@pytest.mark.parametrize(
    "column",
    [
        c
        for c in IDENTITY
        if c not in ("task", "train_seed", "eps", "severity", "steps", "step_size", "rerank", "score_repeats")
    ],
)
def test_every_identity_column_keeps_unlike_measurements_apart(run, tmp_path, column):
    table = _table(run)
    table[column] = table[column] + "-other"
    table.to_csv(tmp_path / "base.csv", index=False)
    result = _check(run, tmp_path / "base.csv")
    assert result.exit_code == 1 and "MISSING" in result.output


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("eps", "0.5"),
        ("severity", "3"),
        ("steps", "7"),
        ("step_size", "0.25"),
        ("train_seed", "9"),
        ("score_repeats", "4"),
    ],
)
def test_numeric_identity_columns_keep_measurements_apart(run, tmp_path, column, value):
    table = _table(run)
    table.loc[table["attack"] != "none", column] = value
    table.to_csv(tmp_path / "base.csv", index=False)
    result = _check(run, tmp_path / "base.csv")
    assert result.exit_code == 1 and "MISSING" in result.output


def _bad_baselines(run):
    header = (run / "results.csv").read_text().split("\n", 1)[0]
    table = _table(run)
    return {
        "empty": "",
        "header-only": header + "\n",
        "ragged": header + "\n" + "a,b,c\n",
        "binary": b"\x89PNG\r\n\x1a\n\x00\xff\xfe",
        "non-numeric value": table.assign(value="high").to_csv(index=False),
        "non-numeric eps": table.assign(eps="eight").to_csv(index=False),
        "duplicated": pd.concat([table, table]).to_csv(index=False),
        "old columns": table.drop(columns=["attack_params"]).to_csv(index=False),
        "no gated metric": table.assign(metric="mINP").to_csv(index=False),
    }


@pytest.mark.parametrize(
    "kind",
    ["empty", "header-only", "ragged", "binary", "non-numeric value", "non-numeric eps", "duplicated", "old columns",
     "no gated metric"],
)  # fmt: skip
def test_a_baseline_that_cannot_be_used_is_bad_input(run, tmp_path, kind):
    content = _bad_baselines(run)[kind]
    path = tmp_path / "base.csv"
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    result = _check(run, path)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lfm-bench: error: baseline")


def test_a_baseline_run_directory_reads_its_results_csv_and_one_without_it_is_bad_input(run, tmp_path):
    result = _check(run, run)  # the directory `lfm-bench run` wrote, as RUN_DIR is given
    assert result.exit_code == 0 and "0 regressed, 0 missing, 0 invalid" in result.output, result.output
    for path, says in [(tmp_path, "is a directory with no results.csv"), (Path("/dev/null"), "is not a file"),
                       (tmp_path / "absent.csv", "does not exist")]:  # fmt: skip
        result = _check(run, path)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert lines[0].startswith(f"lfm-bench: error: baseline {path} ") and says in lines[0], result.output


def _edited_baseline(tmp_path, edit):
    """The committed CI baseline run's table with `edit` applied, as a baseline file (no queries.csv)."""
    committed = Path(__file__).resolve().parents[1] / "results" / "baseline" / "ci-synthreid"
    df = pd.read_csv(committed / "results.csv", keep_default_na=False, dtype=str)
    path = tmp_path / "baseline.csv"
    edit(df).to_csv(path, index=False)
    return committed, path


def test_a_missing_measurement_names_the_nearest_one_and_the_fields_that_differ(tmp_path):
    def other_recipe(df):
        return df.assign(recipe_key="0123456789ab", eval_subset="100/277")

    run, baseline = _edited_baseline(tmp_path, other_recipe)
    result = CliRunner().invoke(main, ["check", str(run), "--baseline", str(baseline)])
    assert result.exit_code == 1
    missing = [line for line in result.output.splitlines() if line.startswith("MISSING")]
    assert missing and all(
        "the nearest run measurement differs in recipe_key (baseline '0123456789ab', run '" in line
        and "eval_subset (baseline '100/277', run '')" in line
        for line in missing
    )


def test_a_missing_model_is_said_to_have_no_cell(tmp_path):
    run, baseline = _edited_baseline(tmp_path, lambda df: df.assign(model="dropout"))
    result = CliRunner().invoke(main, ["check", str(run), "--baseline", str(baseline), "--format", "json"])
    assert result.exit_code == 1
    missing = json.loads(result.output)["missing"]
    assert missing and {m["nearest"] for m in missing} == {
        "the run has no cell of model dropout under attack none",
        "the run has no cell of model dropout under attack pgd",
    }


def test_a_baseline_with_a_utf8_bom_is_read(tmp_path):
    run, baseline = _edited_baseline(tmp_path, lambda df: df)
    baseline.write_bytes(b"\xef\xbb\xbf" + baseline.read_bytes())
    result = CliRunner().invoke(main, ["check", str(run), "--baseline", str(baseline)])
    assert result.exit_code == 0 and "PASSED" in result.output, result.output


def test_values_edited_in_results_csv_are_refused_by_check_and_report(tmp_path):
    import shutil

    committed = Path(__file__).resolve().parents[1] / "results" / "baseline" / "ci-synthreid"
    run = tmp_path / "run"
    shutil.copytree(committed, run)
    df = pd.read_csv(run / "results.csv", keep_default_na=False, dtype=str)
    df["value"] = (df["value"].astype(float) + 0.5).clip(upper=1.0).map(repr)  # every value raised by 0.5
    df.to_csv(run / "results.csv", index=False)
    check = CliRunner().invoke(main, ["check", str(run), "--baseline", str(committed / "results.csv")])
    report = CliRunner().invoke(main, ["report", str(run)])
    for result in (check, report):
        assert result.exit_code == 2, result.output
        line = result.output.strip().splitlines()[-1]
        assert line.startswith("lfm-bench: error:") and "but its" in line and "rows in queries.csv give" in line
        assert "the table was edited or mixed with another run's" in line
    original = CliRunner().invoke(main, ["check", str(committed), "--baseline", str(committed / "results.csv")])
    assert original.exit_code == 0, original.output  # the table as written agrees with its evidence
