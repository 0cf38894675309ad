"""`lfm-bench report` and `lfm-bench check` on real (small) sweeps, and run config files."""

from __future__ import annotations

import html
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from robustbench_lfm import metric_table
from robustbench_lfm.cli import main
from robustbench_lfm.hashing import file_sha256
from robustbench_lfm.options import RunOptions
from robustbench_lfm.report.tables import formatted_table, html_table, latex_table, markdown_table
from robustbench_lfm.runner import run_sweep
from robustbench_lfm.spec import build_spec
from tests.test_threats import DATA


def _sweep(out, cache, **overrides):
    options = {"models": "lfm", "eps": "2/255", "dataset": DATA, "epochs": 20, "out": out,
               "cache_dir": cache, "device": "cpu", "batch_size": 64, "quiet": True, **overrides}  # fmt: skip
    return run_sweep(build_spec(RunOptions(**options)), log=lambda _: None)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("report-cache")


@pytest.fixture(scope="module")
def run_dir(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "two-seeds"
    _sweep(out, cache, seeds="0,1")
    return out


def test_queries_csv_reproduces_every_headline_metric(run_dir):
    results = pd.read_csv(run_dir / "results.csv", keep_default_na=False)
    queries = pd.read_csv(run_dir / "queries.csv", keep_default_na=False)
    for _, r in results[results["metric"].isin(["rank1", "mAP"])].iterrows():
        q = queries[(queries["cell_id"] == r["cell_id"]) & (queries["rerank"] == r["rerank"])]
        column = "hit" if r["metric"] == "rank1" else "ap"
        assert q[column].astype(float).mean() == pytest.approx(r["value"], abs=1e-6)


def test_report_writes_tables_tests_figures_and_one_page(run_dir, tmp_path):
    result = CliRunner().invoke(main, ["report", str(run_dir), "--out", str(tmp_path), "--pair", "lfm,plain"])
    assert result.exit_code == 0, result.output
    md = re.sub(" +", " ", (tmp_path / "report.md").read_text())  # tabulate pads columns
    assert "| model | clean Rank-1 | clean mAP | pgd 2/255 Rank-1 | pgd 2/255 mAP |" in md
    assert " ± " in md and "sample std over 2 training seeds" in md and "Holm-corrected over the table" in md
    assert md.index("| plain |") < md.index("| lfm |")  # the baseline row first
    tex = (tmp_path / "report.tex").read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    tests = pd.read_csv(tmp_path / "tests.csv")
    assert set(tests["test"]) == {"paired-t over seeds"} and tests["p_value"].between(0, 1).all()
    assert (tests["n"] == 2).all() and (tests["seeds"] == 2).all()  # the seed is the unit, not the query
    assert "paired t-test over training seeds" in md
    for name in ("eps", "cmc", "scatter", "bars"):
        assert (tmp_path / f"{name}.png").stat().st_size > 5000 and (tmp_path / f"{name}.pdf").exists()
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and 'src="' not in page.replace('src="data:', "")
    cells = pd.read_csv(tmp_path / "cells.csv")
    assert cells["se"].notna().all() and (cells["se"] > 0).any()


def test_report_of_a_folder_without_results_says_so(tmp_path):
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "has no results.csv" in result.output


def test_check_passes_an_unchanged_rerun(run_dir, cache, tmp_path):
    _sweep(tmp_path / "again", cache, seeds="0,1")
    result = CliRunner().invoke(main, ["check", str(tmp_path / "again"), "--baseline", str(run_dir / "results.csv")])
    assert result.exit_code == 0, result.output
    assert "0 regressed, 0 missing" in result.output


def _cripple_checkpoints(cache, model: str, copy_to):
    """A copy of the cache whose `model` checkpoints are damaged in their weights but re-signed: the
    same identity (model, recipe, data, seed), a less robust network, as a bad code change makes."""
    shutil.copytree(cache, copy_to)
    gen = torch.Generator().manual_seed(0)
    for sidecar in (copy_to / "checkpoints").glob("*.json"):
        meta = json.loads(sidecar.read_text())
        if meta["model"]["name"] != model:
            continue
        weights = sidecar.with_suffix(".safetensors")
        state = load_file(weights)
        noisy = {k: v + v.std() * torch.randn(v.shape, generator=gen) if v.dim() == 4 else v for k, v in state.items()}
        save_file(noisy, weights)
        sidecar.write_text(json.dumps({**meta, "sha256": file_sha256(weights)}))


def test_check_fails_when_a_model_is_made_less_robust_on_purpose(run_dir, cache, tmp_path):
    _cripple_checkpoints(cache, "lfm", tmp_path / "crippled-cache")
    _sweep(tmp_path / "worse", tmp_path / "crippled-cache", seeds="0,1", no_baseline=True)
    base = pd.read_csv(run_dir / "results.csv", keep_default_na=False)
    base[base["model"] == "lfm"].to_csv(tmp_path / "lfm-baseline.csv", index=False)
    args = ["check", str(tmp_path / "worse"), "--baseline", str(tmp_path / "lfm-baseline.csv"), "--format", "json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert not report["passed"] and not report["missing"]
    attacked = {r["metric"] for r in report["regressions"] if r["condition"].startswith("pgd ")}
    assert {"mAP", "rank10"} <= attacked  # 21 queries: too few for a Rank-1 fall to be significant
    assert all(r["change"] < -0.02 and r["p_value"] < 0.05 for r in report["regressions"])


def test_check_reports_missing_cells_and_bad_baselines(run_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["check", str(run_dir), "--baseline", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2 and "does not exist" in result.output
    base = pd.read_csv(run_dir / "results.csv", keep_default_na=False)
    base.assign(model="ghost").to_csv(tmp_path / "ghost.csv", index=False)
    result = CliRunner().invoke(main, ["check", str(run_dir), "--baseline", str(tmp_path / "ghost.csv")])
    assert result.exit_code == 1 and "MISSING ghost" in result.output


def test_a_config_file_sets_defaults_and_flags_override_it(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('models = ["lfm", "dropout"]\neps = ["2/255", "4/255"]\nrerank = "both"\n')
    ctx = main.commands["run"].make_context("run", ["--config", str(config), "--eps", "8/255"])
    assert ctx.params["models"] == "lfm,dropout" and ctx.params["rerank"] == "both"
    assert ctx.params["eps"] == "8/255"  # the flag wins


def test_the_lfm_paper_preset_without_pretrained_weights_names_the_file_it_needs():
    result = CliRunner().invoke(main, ["run", "--preset", "lfm-paper", "-q"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "give --pretrained PATH, a torchvision resnet50 state dict" in result.stderr


@pytest.mark.parametrize("preset", ["lfm-paper", "rcm-cifar", "robustbench-linf"])
def test_presets_without_their_data_name_the_folder_and_layout(preset, tmp_path):
    extra = ["--pretrained", str(_resnet50_file(tmp_path))] if preset == "lfm-paper" else []
    result = CliRunner().invoke(main, ["run", "--preset", preset, "-q", *extra])
    assert result.exit_code == 2
    assert "--data-root" in result.output and ("bounding_box_train" in result.output or "data_batch_1" in result.output)


def test_bad_config_files_name_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("epsilon = 3\n")
    result = CliRunner().invoke(main, ["run", "--config", str(bad)])
    assert result.exit_code == 2 and "unknown key 'epsilon'" in result.output


@pytest.fixture
def rank20():
    """Rank-20 added to the metric table as one entry, for one test."""
    entry = metric_table.Metric("rank20", "Rank-20", "reid", lambda r: r.cmc_at(20), proportion=True,
                                headline=True, gated=True)  # fmt: skip
    metric_table.register_metric(entry)
    yield entry
    metric_table.METRICS.remove("rank20")


def test_a_metric_added_as_one_entry_reaches_the_csv_the_report_and_the_gate(run_dir, cache, rank20, tmp_path):
    out = tmp_path / "with-rank20"
    _sweep(out, cache, seeds="0")  # the checkpoints are cached: only the evaluation reruns
    results = pd.read_csv(out / "results.csv", keep_default_na=False)
    r20, r10 = (results[results["metric"] == m].set_index(["cell_id", "rerank"])["value"] for m in ("rank20", "rank10"))
    assert len(r20) == len(r10) > 0 and (r20 >= r10).all()  # CMC is non-decreasing in k
    report = CliRunner().invoke(main, ["report", str(out), "--out", str(tmp_path / "rep")])
    assert report.exit_code == 0, report.output
    assert "clean Rank-20" in (tmp_path / "rep" / "report.md").read_text()
    assert "Rank-20" in (tmp_path / "rep" / "report.tex").read_text()
    worse = tmp_path / "worse"
    shutil.copytree(out, worse)
    lowered = results.assign(value=results["value"].where(results["metric"] != "rank20", 0.0))
    lowered.to_csv(worse / "results.csv", index=False)
    gate = CliRunner().invoke(main, ["check", str(worse), "--baseline", str(out / "results.csv")])
    assert gate.exit_code == 1 and "REGRESSED" in gate.output
    regressed = [line for line in gate.output.splitlines() if line.startswith("REGRESSED")]
    assert regressed and all(line.split(":")[0].endswith("rank20") for line in regressed)


def _cells(model: str, condition: str, values=(0.49, 0.50, 0.51), plain=(0.40, 0.40, 0.41)) -> pd.DataFrame:
    """Rank-1 of `model` and plain over len(values) seeds (one seed: the SE column stands as ±)."""
    seeds = range(len(values))
    return pd.DataFrame(
        {"row": [model] * len(values) + ["plain"] * len(plain), "condition": condition, "metric": "rank1",
         "value": [*values, *plain], "se": 0.01, "eps": 0.0, "task": "reid", "train_seed": [*seeds, *seeds]}
    )  # fmt: skip


@pytest.mark.parametrize(("model", "condition"), [("a_b&c%", "clean"), ("lfm:area=0.1..0.2", "pgd:steps=1 8/255"),
                                                  ("x|y*z#{$}~^\\", "clean")])  # fmt: skip
def test_every_table_format_renders_any_model_name(model, condition):
    md = markdown_table(_cells(model, condition))
    row = next(line for line in md.splitlines() if "50.0" in line)
    cells = re.split(r"(?<!\\)\|", row)[1:-1]  # a name's own pipe is escaped: not a column separator
    assert len(cells) == 3 and cells[1].strip().startswith("**50.0")  # model, clean Rank-1, clean mAP
    assert re.sub(r"\\(.)", r"\1", cells[0].strip()) == model
    tex = latex_table(_cells(model, condition), "caption & 100%")
    body = next(line for line in tex.splitlines() if "50.0" in line)
    name = body.split(" & ")[0]
    assert not re.search(r"(?<!\\)[&%$#_{}]", name.replace(r"\textbackslash{}", "").replace(r"\textasciitilde{}", "")
                         .replace(r"\textasciicircum{}", ""))  # fmt: skip
    assert r"\toprule" in tex and r"\textbf{50.0" in tex and r"caption \& 100\%" in tex
    page = html_table(_cells(model, condition))
    assert html.escape(model) in page and "font-weight: bold" in page


def test_bold_marks_a_lead_that_holds_over_the_seeds_and_nothing_else():
    """A 9.7-point lead over three seeds with little spread is bold (p shown in the legend's
    terms); a lead smaller than the seeds' spread is not, and one seed marks nothing."""
    wins = formatted_table(_cells("lfm", "clean"))
    assert wins.bold.loc["lfm", ("clean", "Rank-1")] and not wins.bold.loc["plain"].any()
    assert "paired t-test over the training seeds, Holm-corrected over the table's 1 such test(s)" in wins.legend
    assert re.search(r"clean Rank-1: lfm over plain p=0\.00\d+ \(Holm 0\.00\d+\)", wins.legend)  # the p behind the bold
    tie = formatted_table(_cells("lfm", "clean", values=(0.42, 0.38, 0.45), plain=(0.41, 0.40, 0.40)))
    assert not tie.bold.to_numpy().any()  # lfm's mean is higher, by less than the seeds' spread
    assert "no column has such a lead: no bold" in tie.legend
    one = formatted_table(_cells("lfm", "clean", values=(0.60,), plain=(0.40,)))
    assert not one.bold.to_numpy().any() and "compare trained checkpoints, not methods" in one.legend
    assert "binomial over the scored queries" in one.legend  # what ± is, as the code computes it


def test_holm_adjusts_in_order_and_keeps_untested_apart():
    from robustbench_lfm.stats import holm

    got = holm([0.01, 0.04, float("nan"), 0.03])  # m = 3: 0.01 x 3, 0.03 x 2, max(0.04 x 1, 0.06)
    assert got[0] == pytest.approx(0.03) and got[1] == pytest.approx(0.06) and got[3] == pytest.approx(0.06)
    assert np.isnan(got[2])


def _resnet50_file(tmp_path):
    from tests.test_pretrained import torchvision_resnet50_state

    path = tmp_path / "resnet50.safetensors"
    save_file(torchvision_resnet50_state(), str(path))
    return path


def test_plan_from_a_two_seed_pilot_names_every_comparison_and_its_seed_count(run_dir):
    result = CliRunner().invoke(main, ["plan", str(run_dir), "--difference", "3", "--queries", "277,3368"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "seeds at 277 queries" in lines[0] and "seeds at 3368 queries" in lines[0]
    assert any(line.split()[:2] == ["lfm", "plain"] for line in lines[1:])
    assert "detect a true difference of 3.0 points with 80% power at alpha 0.05" in lines[-1]


def test_plan_refuses_a_one_seed_pilot_and_bad_values_in_one_line(run_dir, cache, tmp_path):
    one = tmp_path / "one-seed"
    _sweep(one, cache, seeds="0")
    result = CliRunner().invoke(main, ["plan", str(one), "--difference", "3"])
    assert result.exit_code == 2 and "a pilot needs two or more" in result.output and "--seeds 0,1,2" in result.output
    for args, message in ((["--difference", "0"], "must be a number of points in (0, 100)"),
                          (["--difference", "3"], "give a pilot RUN_DIR, or --seed-spread"),
                          (["--difference", "3", "--seed-spread", "1", "--query-spread", "40", "--queries", "abc"],
                           "--queries abc: give whole numbers >= 1"),
                          (["--difference", "3", "--power", "1.5", "--seed-spread", "1", "--query-spread", "40",
                            "--queries", "100"], "--power 1.5")):  # fmt: skip
        bad = CliRunner().invoke(main, ["plan", *args])
        assert bad.exit_code == 2 and message in bad.output and len(bad.output.strip().splitlines()) == 1


def test_plan_gives_the_smallest_seed_count_whose_power_reaches_the_target():
    from robustbench_lfm.plan import Spreads, seeds_needed
    from robustbench_lfm.stats import t_test_power

    spreads = Spreads(seed=0.015, query=0.40)
    for queries in (277, 3368):
        n = seeds_needed(0.03, spreads, queries)
        assert n is not None and t_test_power(0.03, spreads.sd(queries), n) >= 0.8
        assert n == 2 or t_test_power(0.03, spreads.sd(queries), n - 1) < 0.8
    assert seeds_needed(0.03, spreads, 3368) <= seeds_needed(0.03, spreads, 277)  # more queries never need more seeds
