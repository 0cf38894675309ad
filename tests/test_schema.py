"""Columns declared once and tables read by name: tables of older versions (taken from this
repository's history, tests/data/older/) are read, gated and resumed; what cannot be read is
refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from robustbench_lfm import columns
from robustbench_lfm.cli import main
from robustbench_lfm.identity import MEASUREMENT, canonical
from robustbench_lfm.store import ResultStore, StoreError
from tests.test_resume import _args, reference  # noqa: F401  (the module-scoped tiny run)

ROOT = Path(__file__).resolve().parents[1]
OLDER = ROOT / "tests" / "data" / "older"
BASELINE = ROOT / "results" / "baseline" / "ci-synthreid"
# The CI baseline run directory as committed up to 90633cb (20-epoch fp32 recipe scaled to 6
# epochs; regenerated after it for the 16-epoch bf16 recipe), the same sweep as the two tables
# below; and its results.csv as committed in 5399ead (before the severity, test_dataset and
# test_data_params columns, and before code and schema) and in c69e6bb (the first, before
# data_params, recipe_key, attack_label and attack_params).
BASELINE_90633CB = OLDER / "ci-synthreid-90633cb"
BEFORE_EE29B91 = OLDER / "ci-baseline-5399ead.csv"
FIRST = OLDER / "ci-baseline-c69e6bb.csv"


def test_the_results_readme_column_table_is_the_declarations():
    assert columns.markdown_table() in (ROOT / "results" / "README.md").read_text()


def test_every_declared_column_is_filled_on_every_row(reference):  # noqa: F811
    df = pd.read_csv(reference[0] / "results.csv", keep_default_na=False, dtype=str)
    assert list(df.columns) == list(columns.names(columns.RESULTS))
    for column in columns.RESULTS:
        if not column.empty and column.name != "git_sha":  # a clean clone may hold no commit
            assert (df[column.name] != "").all(), column.name
    assert set(df["schema"]) == {str(columns.SCHEMA)} and (df["code"].str.len() == 16).all()


def test_a_row_must_fill_exactly_the_declared_columns():
    values = {c.name: "x" for c in columns.CMC}
    assert list(columns.row(columns.CMC, values)) == list(columns.names(columns.CMC))
    with pytest.raises(ValueError, match=r"missing \['cmc'\]"):
        columns.row(columns.CMC, {k: v for k, v in values.items() if k != "cmc"})
    with pytest.raises(ValueError, match=r"undeclared \['extra'\]"):
        columns.row(columns.CMC, {**values, "extra": 1})


def test_an_older_table_reads_with_the_values_its_missing_columns_imply():
    old = ResultStore(BEFORE_EE29B91).read()
    assert list(old.columns) == list(columns.names(columns.RESULTS))
    assert set(old["schema"]) == {1} and set(old["severity"]) == {0}
    assert (old["test_dataset"] == old["dataset"]).all() and (old["test_data_params"] == old["data_params"]).all()
    now = ResultStore(BASELINE_90633CB / "results.csv").read()  # the same sweep, written by a later version
    merged = canonical(old).merge(canonical(now), on=list(MEASUREMENT), suffixes=("_old", ""))
    assert len(merged) == len(old) == len(now)  # every measurement has the same identity both ways
    assert (merged["value_old"] == merged["value"]).all() and (merged["cell_id_old"] == merged["cell_id"]).all()


def test_the_ci_baseline_of_before_ee29b91_gates_the_same_sweep_run_later(tmp_path):
    baseline = tmp_path / "results.csv"
    shutil.copy(BEFORE_EE29B91, baseline)
    shutil.copy(OLDER / "ci-baseline-5399ead-queries.csv", tmp_path / "queries.csv")
    result = CliRunner().invoke(main, ["check", str(BASELINE_90633CB), "--baseline", str(baseline), "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    gated = pd.read_csv(BEFORE_EE29B91).query("metric in ['rank1', 'rank5', 'rank10', 'mAP']")
    assert report["compared"] == len(gated) > 0 and report["passed"] and not report["missing"]


def test_a_table_lacking_a_column_no_older_value_stands_for_is_refused(tmp_path):
    result = CliRunner().invoke(main, ["check", str(BASELINE), "--baseline", str(FIRST)])
    assert result.exit_code == 2
    assert "lacks column(s) data_params, recipe_key, attack_label, attack_params" in result.output
    with pytest.raises(StoreError, match="which no older value stands for"):
        ResultStore(FIRST).scan()


def test_a_repeated_column_is_refused(tmp_path):
    path = tmp_path / "results.csv"
    header = ",".join(columns.names(columns.RESULTS))
    path.write_text(header + ",value\n")
    with pytest.raises(StoreError, match="a repeated column"):
        ResultStore(path).scan()


def _as_older(reference: tuple[Path, Path], tmp_path: Path, old_ids: bool) -> tuple[Path, Path]:  # noqa: F811
    """A copy of the reference run directory with its results and probes as the version of 5399ead
    wrote them: without the columns added since; `old_ids`: under other cell ids too (cells made
    by older code). Returns the copy and the cache, after resuming the copy."""
    out, cache = reference
    run = tmp_path / "run"
    shutil.copytree(out, run)
    header = pd.read_csv(BEFORE_EE29B91, nrows=0).columns
    for name in ("results.csv", "probes.csv"):
        df = pd.read_csv(run / name, keep_default_na=False, dtype=str)
        if old_ids:
            df["cell_id"] = "x" + df["cell_id"].str[1:]  # not hex: no id of this code
        df[list(header)].to_csv(run / name, index=False)
    result = CliRunner().invoke(main, _args(run, cache))
    assert result.exit_code == 0, result.output
    return run, out


def test_an_older_run_directory_resumes(reference, tmp_path):  # noqa: F811
    run, _ = _as_older(reference, tmp_path, old_ids=False)
    assert json.loads((run / "manifest.json").read_text())["cells_run"] == 0  # every cell verified and kept
    report = CliRunner().invoke(main, ["report", str(run)])
    assert report.exit_code == 0, report.output


def test_cells_of_older_code_are_recomputed_and_replaced_not_doubled(reference, tmp_path):  # noqa: F811
    run, out = _as_older(reference, tmp_path, old_ids=True)
    rerun, first = (pd.read_csv(d / "results.csv", keep_default_na=False) for d in (run, out))
    assert len(rerun) == len(first) and not rerun.duplicated(list(MEASUREMENT)).any()
    assert set(rerun["cell_id"]) == set(first["cell_id"]) and set(rerun["schema"]) == {columns.SCHEMA}
    for side in ("queries.csv", "cmc.csv"):  # the replaced cells' side rows go with them
        assert not pd.read_csv(run / side)["cell_id"].str.startswith("x").any()


def test_a_table_edited_after_the_run_is_reported_by_its_digest(reference, tmp_path):  # noqa: F811
    out, _ = reference
    run = tmp_path / "run"
    shutil.copytree(out, run)
    recorded = json.loads((run / "manifest.json").read_text())["tables"]
    assert set(recorded) == {"results.csv", "probes.csv", "queries.csv", "cmc.csv"}
    df = pd.read_csv(run / "results.csv", keep_default_na=False, dtype=str)
    df.loc[0, "wall_s"] = str(float(df.loc[0, "wall_s"]) + 1)  # a column no evidence checks, changed
    df.to_csv(run / "results.csv", index=False)
    (run / "report").mkdir(exist_ok=True)
    left = run / "report" / ".cmc.2147483646-0a1b2c3d.tmp.png"  # a killed report's (no such process)
    left.write_bytes(b"half a figure")
    with pytest.warns(UserWarning, match="results.csv is not the table the sweep wrote"):
        result = CliRunner().invoke(main, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert not left.exists()
