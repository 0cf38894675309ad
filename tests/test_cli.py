"""`lfm-bench` end to end on a tiny dataset, resume, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from click.testing import CliRunner

from robustbench_lfm import models
from robustbench_lfm.cli import main
from robustbench_lfm.store import CMC_COLUMNS, COLUMNS
from tests.conftest import TINY_CLI
from tests.replica import write_market

FAST = ["--dataset", TINY_CLI, "--epochs", "2", "--eps", "4/255,8/255", "--quiet"]


def lfm_bench(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "robustbench_lfm", *args], capture_output=True, text=True, cwd=cwd, env=os.environ
    )


def in_process(*args: str):
    """`lfm-bench` in this process (click's runner: exit status, stdout and stderr apart). The module's
    first run goes through a real process (`finished_run`); its reruns need not pay for a second
    interpreter and torch import each."""
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    cache = tmp_path_factory.mktemp("cache")
    args = [
        "run",
        "--models",
        "lfm,dropout",
        "--attacks",
        "pgd,fgsm",
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        *FAST,
    ]
    proc = lfm_bench(*args)
    assert proc.returncode == 0, proc.stderr
    return out, cache, args, proc


def test_run_writes_tidy_csv_manifest_and_plot(finished_run):
    out, _, _, proc = finished_run
    df = pd.read_csv(out / "results.csv")
    assert list(df.columns) == list(COLUMNS)
    assert set(df["model"]) == {"plain", "lfm", "dropout"}  # plain baseline joined
    # per model: clean + 2 attacks x 2 eps = 5 cells, 5 metrics each
    assert len(df) == 3 * 5 * 5 and df["cell_id"].nunique() == 15
    assert df["value"].between(0, 1).all()
    clean = df[df["attack"] == "none"]
    assert (clean["eps"] == 0).all() and (clean["objective"].isna()).all()
    assert set(df.loc[df["attack"] != "none", "objective"]) == {"sma"}
    assert set(df.loc[df["attack"] != "none", "perturbed"]) == {"query"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spec"]["seeds"] == [0] and manifest["versions"]["torch"]
    assert manifest["cells_run"] == 15 and manifest["probes_run"] > 0
    checks = pd.read_csv(out / "sanity.csv")
    assert set(checks["check"]) == {"above-chance", "eps0-clean", "monotone", "pgd<=fgsm", "large-eps", "in-budget"}
    # two epochs on the tiny dataset leave models within noise of chance: the summary says so, and
    # the checks of the attacks themselves pass
    failed = checks[~checks["passed"]]
    assert set(failed["check"]) <= {"above-chance"} and f"{len(failed)} failed" in proc.stdout
    assert all(f"WARNING sanity above-chance: {m} seed 0" in proc.stdout for m in failed["model"])
    assert (out / "robustness.png").stat().st_size > 10_000
    assert "clean Rank-1" in proc.stdout and "lfm" in proc.stdout
    assert set(df["distance"]) == {"cosine"} and set(df["ap"]) == {"plain"} and not df["flip"].any()
    assert df["rerank"].isna().all()  # empty = not re-ranked
    curves = pd.read_csv(out / "cmc.csv")
    assert list(curves.columns) == list(CMC_COLUMNS) and set(curves["cell_id"]) == set(df["cell_id"])
    assert (curves.groupby("cell_id")["cmc"].apply(lambda c: c.is_monotonic_increasing)).all()
    rank1 = df[df["metric"] == "rank1"].set_index("cell_id")["value"]
    first = curves[curves["rank"] == 1].set_index("cell_id")["cmc"]
    pd.testing.assert_series_equal(rank1.sort_index(), first.sort_index(), check_names=False)
    assert (out / "cmc.png").stat().st_size > 10_000


def test_rerun_skips_finished_cells_and_reuses_checkpoints(finished_run):
    out, cache, args, _ = finished_run
    before = (out / "results.csv").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in (cache / "checkpoints").glob("*.safetensors")}
    result = in_process(*args)
    assert result.exit_code == 0, result.output
    assert (out / "results.csv").read_text() == before
    assert json.loads((out / "manifest.json").read_text())["cells_skipped"] == 15
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_new_run_dir_reuses_cached_checkpoints_with_identical_numbers(finished_run, tmp_path):
    out, _, args, _ = finished_run
    args = [a if a != str(out) else str(tmp_path / "again") for a in args]
    result = in_process(*args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert all(t["cached"] for t in manifest["training"].values())
    old, new = pd.read_csv(out / "results.csv"), pd.read_csv(tmp_path / "again" / "results.csv")
    key = ["model", "attack", "eps", "metric"]
    pd.testing.assert_series_equal(
        old.sort_values(key)["value"].reset_index(drop=True), new.sort_values(key)["value"].reset_index(drop=True)
    )


def test_market1501_folder_run_with_every_evaluation_option(tmp_path):
    write_market(tmp_path / "data")
    out = tmp_path / "run"
    result = in_process(
        "run", "--models", "plain", "--no-baseline", "--attacks", "fgsm", "--eps", "8/255", "--epochs", "2",
        "--dataset", "market1501:height=32,width=16", "--data-root", str(tmp_path / "data"),
        "--rerank", "both", "--flip", "--ap", "trapezoid", "--distance", "euclidean", "--out", str(out), "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    df = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert set(df["dataset"]) == {"market1501"} and set(df["n_eval"]) == {8}  # the replica's 8 queries
    assert set(df["rerank"]) == {"", "k1=20,k2=6,lambda=0.3"}
    assert set(df["ap"]) == {"trapezoid"} and set(df["flip"]) == {True} and set(df["distance"]) == {"euclidean"}
    assert len(df) == 2 * 2 * 5  # (clean, fgsm) x (plain, re-ranked) x 5 metrics
    spec = json.loads((out / "manifest.json").read_text())["spec"]
    assert spec["evaluation"] == {"distance": "euclidean", "ap": "trapezoid", "flip": True, "rerank": "both",
                                  "n_eval": 0, "precision": "fp32", "attack_precision": "fp32",
                                  "score_repeats": 1, "test": None}  # fmt: skip
    assert spec["data"]["root"] == str((tmp_path / "data").resolve()) and spec["data"]["source"]
    assert "+rerank" in result.stdout


def test_folder_dataset_takes_the_backbone_input_size(tmp_path):
    from robustbench_lfm.spec import SpecError, resolve_data

    write_market(tmp_path)
    assert dict(resolve_data("market1501", tmp_path, ("resnet50",)).options) == {"height": 256, "width": 128}
    assert dict(resolve_data("market1501", tmp_path, ("resnet-mini",)).options) == {"height": 128, "width": 64}
    with pytest.raises(SpecError, match="differ in input size"):
        resolve_data("market1501", tmp_path, ("resnet50", "resnet-mini"))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--dataset", "market1501"], "pass --data-root DIR"),
        (["--dataset", "dukemtmc", "--data-root", "."], "DukeMTMC-reID expects bounding_box_train/"),
        (
            ["--dataset", "market1501", "--models", "lfm", "--backbone", "resnet50", "--data-root", "/nonexistent"],
            "is not a directory",
        ),
        (["--data-root", "."], "only for datasets read from a folder"),
        (["--models", "plain,lfm", "--dataset", "market1501", "--data-root", "."], "no Market-1501 folder"),
        (["--models", "lfn"], "unknown model 'lfn'; did you mean 'lfm'"),
        (["--attacks", "pgdd"], "unknown attack 'pgdd'; did you mean 'pgd'"),
        (["--eps", "300/255"], "outside [0, 1]"),
        (["--eps", "abc"], "not a number"),
        (["--dataset", "synthreid:colours=3"], "unknown option(s) colours"),
        (["--models", "lfm:p=2"], "must lie in [0, 1]"),
        (["--seeds", "x"], "comma-separated integers"),
        (["--attacks", "cw"], "runs on classification models only"),
        (["--attacks", "sma:objective=ce"], "the objective is sma"),
        (["--attacks", "pgd:objective=ce"], "does not apply to the reid task"),
        (["--surrogate", "lfn"], "unknown model 'lfn'"),
        (["--attacks", "pgd,pgd-l2"], "mix norms"),
        (["--models", "lfm:at=head"], "not a feature-map site"),
        (["--models", "mixacm:teacher=mixacm"], "must not itself be distilled"),
        (["--recipe", "fast"], "no recipe 'fast'"),
        (["--dataset", "synthreid:test_ids=0"], "needs >= 2 train and test identities"),
        (["--dataset", "digits", "--attacks", "sma"], "runs on reid models only"),
    ],
)
def test_bad_input_is_one_clear_line_and_status_2(args, expected, tmp_path):
    result = CliRunner().invoke(main, ["run", "--out", str(tmp_path / "o"), *args])  # in process: no torch re-import
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lfm-bench: error:") and expected in lines[0]


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = lfm_bench("run", "--out", str(blocker / "sub"), *FAST)
    assert proc.returncode == 2
    assert "output directory" in proc.stderr and "not writable" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_ls_lists_models_attacks_and_datasets():
    proc = lfm_bench("ls")
    assert proc.returncode == 0
    assert all(f"  {name} " in proc.stdout for name in models.list_models())
    assert all(name in proc.stdout for name in ("pgd", "fgsm", "synthreid", "digits", "cifar10", "resnet18"))
    assert "area=0.02..0.4" in proc.stdout and "eps=8/255" in proc.stdout  # parameters as the CLI takes them
    assert "classification: cpu, paper" in proc.stdout


def test_ls_json_lists_every_registry_with_defaults_and_sources():
    result = CliRunner().invoke(main, ["ls", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    listing = json.loads(result.stdout)
    assert set(listing["models"]) == set(models.list_models())
    assert (
        listing["models"]["lfm"]["parameters"]["p"] == 0.15
        and listing["models"]["lfm"]["source"] == "robustbench_lfm.models.zoo"
    )
    assert (
        listing["attacks"]["pgd"]["source"] == "robustbench_lfm.attacks.pgd"
        and "steps" in listing["attacks"]["pgd"]["parameters"]
    )
    assert listing["metrics"]["mAP"]["gated"] and not listing["metrics"]["mINP"]["gated"]
    quiet = CliRunner().invoke(main, ["ls", "--quiet"]).stdout.splitlines()
    assert "model lfm" in quiet and "attack pgd" in quiet and "dataset digits" in quiet


def test_run_json_prints_one_object_and_resumes_silently(finished_run):
    out, _, args, _ = finished_run
    result = in_process(*args, "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # stdout is the JSON alone: progress lines go to stderr
    assert summary["passed"] and summary["results"] == str(out / "results.csv")
    df = pd.read_csv(out / "results.csv")
    clean = df[(df["attack"] == "none") & (df["metric"] == "rank1") & (df["model"] == "lfm")]["value"].mean()
    cell = next(c for c in summary["cells"] if (c["model"], c["condition"], c["metric"]) == ("lfm", "clean", "rank1"))
    assert cell["mean"] == pytest.approx(clean) and cell["seeds"] == 1 and cell["std"] is None
    assert {c["check"] for c in summary["sanity"]} >= {"eps0-clean", "monotone"}


def test_report_and_check_quiet_print_nothing_on_success(finished_run, tmp_path):
    out, _, _, _ = finished_run
    report = lfm_bench("report", str(out), "--out", str(tmp_path / "rep"), "--quiet")
    assert report.returncode == 0 and report.stdout == "" and (tmp_path / "rep" / "report.md").exists()
    gate = lfm_bench("check", str(out), "--baseline", str(out / "results.csv"), "--quiet")
    assert gate.returncode == 0 and gate.stdout == ""


PROBE = """
import sys
from robustbench_lfm.cli import main
try:
    main(sys.argv[1:])
except SystemExit as done:
    print("STATUS", done.code, "TORCH", "torch" in sys.modules, "TORCHATTACKS", "torchattacks" in sys.modules)
"""


@pytest.mark.parametrize(
    "command",
    [["--help"], ["run", "--help"], ["check", "--help"], ["report", "--help"], ["ls", "--help"], ["report", "REPORT"],
     ["check", "RUN", "--baseline", "BASELINE"], ["board", "--help"], ["board", "REPORT"], ["nonsense"]],
)  # fmt: skip
def test_commands_that_read_csvs_never_import_torch(finished_run, tmp_path, command):
    out, _, _, _ = finished_run
    command = [c.replace("REPORT", str(out)).replace("RUN", str(out)) for c in command]
    command = [c.replace("BASELINE", str(out / "results.csv")) for c in command]
    if command[0] in ("report", "board") and "--help" not in command:
        command += ["--out", str(tmp_path / "rep"), "--quiet"]
    proc = subprocess.run([sys.executable, "-c", PROBE, *command], capture_output=True, text=True)
    status = proc.stdout.split("STATUS")[-1].split()
    assert status[0] == ("2" if command == ["nonsense"] else "0"), proc.stdout + proc.stderr
    assert status[2] == "False" and status[4] == "False", command


def test_a_click_usage_error_is_one_error_line_and_status_2():
    proc = lfm_bench("run", "--jobs", "many")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("lfm-bench: error: ") and len(proc.stderr.strip().splitlines()) == 1


def test_the_default_cache_is_read_when_a_run_starts_not_at_import(tmp_path, monkeypatch):
    from robustbench_lfm.files import default_cache_dir

    monkeypatch.setenv("LFM_BENCH_CACHE", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("LFM_BENCH_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "lfm-bench"
