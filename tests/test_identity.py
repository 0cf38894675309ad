"""A number's identity end to end: attack and dataset options stay apart in the CSV, the tables,
the sanity series and the gate, and a run directory refuses a run that measures something else."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from robustbench_lfm.cli import main
from robustbench_lfm.identity import labelled
from tests.conftest import TINY_CLI

DATA = Path(__file__).parent / "data" / "older"
BASELINE = Path(__file__).parent.parent / "results" / "baseline" / "ci-synthreid" / "results.csv"

FAST = ["--dataset", TINY_CLI, "--epochs", "1", "--eps", "8/255", "--models", "plain", "--no-baseline", "-q"]


def _run(out, cache, *args):
    return CliRunner().invoke(main, ["run", "--out", str(out), "--cache-dir", str(cache), *FAST, *args])


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """One run with two PGD variants and two SMA sides."""
    out, cache = tmp_path_factory.mktemp("variants") / "run", tmp_path_factory.mktemp("cache")
    result = _run(out, cache, "--attacks", "pgd,pgd:steps=1,sma,sma:side=gallery")
    assert result.exit_code == 0, result.output
    return out, cache, result


def test_attack_options_reach_the_csv(variants):
    out, _, _ = variants
    df = pd.read_csv(out / "results.csv", keep_default_na=False)
    attacked = df[df["attack"] != "none"].drop_duplicates("cell_id")
    assert sorted(attacked["attack_label"]) == ["pgd", "pgd:steps=1", "sma", "sma:side=gallery"]
    params = {r["attack_label"]: json.loads(r["attack_params"]) for _, r in attacked.iterrows()}
    assert params["pgd"]["steps"] is None and params["pgd:steps=1"]["steps"] == 1
    assert params["sma"]["side"] == "query" and params["sma:side=gallery"]["side"] == "gallery"
    assert set(attacked.loc[attacked["attack_label"] == "pgd:steps=1", "steps"]) == {1}
    assert df["data_params"].map(json.loads).map(lambda d: d["train_ids"]).eq(12).all()
    assert df["recipe_key"].str.fullmatch(r"[0-9a-f]{12}").all()


def test_each_variant_is_its_own_table_column(variants):
    out, _, result = variants
    header = result.output.splitlines()[0]
    for column in ("pgd 8/255 Rank-1", "pgd:steps=1 8/255 Rank-1", "sma 8/255 Rank-1", "sma:side=gallery 8/255"):
        assert column in header
    assert "±" not in result.output.split("\n\n")[0]  # one seed: no spread merged from two variants
    report = CliRunner().invoke(main, ["report", str(out), "--out", str(out / "rep")])
    assert report.exit_code == 0, report.output
    md = re.sub(" +", " ", (out / "rep" / "report.md").read_text())  # tabulate pads columns
    assert "pgd:steps=1 8/255 Rank-1" in md and "| pgd 8/255 Rank-1 |" in md


def test_each_variant_is_its_own_sanity_series(variants):
    out, _, _ = variants
    sanity = pd.read_csv(out / "sanity.csv", keep_default_na=False)
    monotone = sanity[sanity["check"] == "monotone"]
    assert sorted(set(monotone["attack"])) == ["pgd", "pgd:steps=1", "sma", "sma:side=gallery"]
    assert len(sanity[sanity["check"] == "eps0-clean"]) == 4


def test_labels_never_merge_two_identities():
    rows = pd.DataFrame(
        {"model": ["lfm", "lfm"], "backbone": ["resnet-mini", "resnet18"], "attack": ["pgd", "pgd"],
         "attack_label": ["pgd", "pgd"], "attack_params": ['{"steps":1}', '{"steps":2}'], "eps": [0.1, 0.1],
         "rerank": ["", ""]}
    )  # fmt: skip
    named = labelled(rows)
    assert named["row"].nunique() == 2 and named["condition"].nunique() == 2


class _Reads(dict):
    """A row that records in `read` which columns a label function reads."""

    def __init__(self, row: dict, read: set[str]) -> None:
        super().__init__(row)
        self.read = read

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


def test_labels_are_computed_once_per_condition_from_the_columns_they_read():
    """`labelled` computes a condition's and a series' label once per distinct value of
    LABEL_COLUMNS: the labels are those of the row-wise definition on the committed baseline, an
    older table from git history and a corruption sweep's rows, and every column the label
    functions read is one of LABEL_COLUMNS (one they read beyond it would merge labels unseen)."""
    from robustbench_lfm.identity import LABEL_COLUMNS, condition_label, series_label
    from robustbench_lfm.store import ResultStore

    corrupted = {"model": "lfm", "attack": "corrupt", "attack_label": "corrupt:type=fog", "eps": 0.0, "severity": 3}
    transfer = {"model": "lfm", "attack": "pgd", "attack_label": "pgd", "eps": 8 / 255, "surrogate": "plain"}
    made = pd.DataFrame([{**corrupted, "rerank": ""}, {**transfer, "quantize": True, "rerank": "rerank"}, transfer])
    older = ResultStore(DATA / "ci-synthreid-90633cb" / "results.csv").read()
    tables = [older, ResultStore(BASELINE).read(), made]
    for df in tables:
        named = labelled(df)
        assert named["condition"].tolist() == df.apply(condition_label, axis=1).tolist()
        assert named["series"].tolist() == df.apply(series_label, axis=1).tolist()
        for row in df.to_dict("records"):
            for label in (condition_label, series_label):
                read: set[str] = set()
                label(_Reads(row, read))  # type: ignore[arg-type]
                assert read <= set(LABEL_COLUMNS), read - set(LABEL_COLUMNS)


def test_a_pixel_scale_option_reads_as_a_level_in_new_and_older_tables(variants, tmp_path):
    """`step_size=1/255` is recorded and shown as it is typed, not as 0.00392156862745098; a table
    written before that (the float) is labelled alike, so an older and a newer run of one attack
    share a column in the tables, the figures and the board."""
    out, cache = tmp_path / "run", variants[1]  # the module's checkpoint
    result = _run(out, cache, "--attacks", "pgd:steps=1,step_size=1/255,pgd:steps=1")
    assert result.exit_code == 0, result.output
    new = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert set(new["attack_label"]) == {"none", "pgd:steps=1", "pgd:step_size=1/255,steps=1"}
    older = new.assign(attack_label=new["attack_label"].str.replace("1/255", repr(1 / 255), regex=False))
    assert set(older["attack_label"]) == {"none", "pgd:steps=1", "pgd:step_size=0.00392156862745098,steps=1"}
    for column in ("series", "condition"):
        assert labelled(older)[column].tolist() == labelled(new)[column].tolist()
    assert "pgd:step_size=1/255,steps=1 8/255" in set(labelled(new)["condition"])
    assert labelled(new)["condition"].nunique() == 3  # clean and the two step sizes stay apart


@pytest.mark.parametrize(
    ("label", "shown"),
    [("pgd:step_size=0.00784313725490196,steps=20", "pgd:step_size=2/255,steps=20"),
     ("pgd:step_size=2/255", "pgd:step_size=2/255"), ("pgd-l2:step_size=0.2", "pgd-l2:step_size=0.2"),
     ("pgd:step_size=0.0078431", "pgd:step_size=0.0078431"), ("pgd:step_size=-1", "pgd:step_size=-1"),
     ("pgd:step_size=inf", "pgd:step_size=inf"), ("pgd:step_size=1e308", "pgd:step_size=1e308"),
     ("pgd:step_size=nan", "pgd:step_size=nan"), ("pgd:step_size=", "pgd:step_size="),
     ("sma:steps=0.00784313725490196", "sma:steps=0.00784313725490196"), ("corrupt:type=fog", "corrupt:type=fog")],
)  # fmt: skip
def test_a_label_from_any_table_is_shown_as_written_but_for_an_exact_level(label, shown):
    """Only a pixel-scale option that is exactly k/255 changes its text; anything else a table holds,
    a hand-edited or foreign one included, is shown as written and never raises."""
    from robustbench_lfm.identity import as_written_now

    assert as_written_now(label) == shown


def test_the_gate_keys_on_attack_options(variants, tmp_path):
    out, cache, _ = variants
    one_step = tmp_path / "pgd1"
    assert _run(one_step, cache, "--attacks", "pgd:steps=1").exit_code == 0
    base = pd.read_csv(out / "results.csv", keep_default_na=False)
    base = base[base["attack_label"].isin(["none", "pgd"])]  # a PGD-20 baseline
    base.to_csv(tmp_path / "pgd20.csv", index=False)
    result = CliRunner().invoke(main, ["check", str(one_step), "--baseline", str(tmp_path / "pgd20.csv")])
    assert result.exit_code == 1 and "MISSING plain seed 0 pgd 8/255 rank1" in result.output


def test_a_run_directory_refuses_other_dataset_options_and_accepts_a_larger_grid(variants, tmp_path):
    out, cache, _ = variants
    other = _run(out, cache, "--attacks", "pgd", "--dataset", TINY_CLI + ",seed=1")
    assert other.exit_code == 2
    line = other.output.strip().splitlines()[-1]
    assert "data_params.seed (there: 0, this run: 1)" in line and "--out" in line
    assert _run(out, cache, "--attacks", "pgd", "--distance", "euclidean").exit_code == 2
    assert _run(out, cache, "--attacks", "pgd", "--epochs", "2").exit_code == 2  # another recipe
    grown = _run(out, cache, "--attacks", "pgd", "--eps", "4/255,8/255")
    assert grown.exit_code == 0, grown.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["invocations"]) >= 1  # the earlier sweeps are kept


def test_unknown_attack_options_are_refused_with_the_accepted_ones(tmp_path):
    result = _run(tmp_path / "r", tmp_path / "c", "--attacks", "pgd:stepz=3")
    assert result.exit_code == 2
    assert (
        "pgd has no option(s) stepz (it takes: backend, di_prob, di_scale, eot, geometry, momentum, norm"
        in result.output
    )
