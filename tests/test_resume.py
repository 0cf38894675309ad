"""Resume verifies what it reads: damaged tables are repaired by recomputing, never trusted; the
lock holds when its file is deleted; a malformed cache entry is rebuilt, never fatal."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from robustbench_lfm.cli import main
from robustbench_lfm.datasets import load_dataset
from robustbench_lfm.lock import RunLock, RunLockedError
from tests.conftest import TINY, TINY_CLI

KEY = ["cell_id", "rerank", "metric"]


def _args(out, cache):
    return ["run", "--models", "lfm", "--attacks", "pgd:steps=2,fgsm", "--dataset", TINY_CLI, "--epochs", "1",
            "--eps", "8/255", "-q", "--out", str(out), "--cache-dir", str(cache)]  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: the numbers every repaired run must reproduce. It starts as a new process
    would, with no dataset held in memory, so that its cache holds the dataset too: a sweep of the same
    data earlier in this worker (test_identity's, test_transfer's) would leave it out."""
    from robustbench_lfm import group

    out, cache = tmp_path_factory.mktemp("ref") / "run", tmp_path_factory.mktemp("cache")
    group._DATASETS.clear()
    result = CliRunner().invoke(main, _args(out, cache))
    assert result.exit_code == 0, result.output
    return out, cache


def _values(run):
    df = pd.read_csv(run / "results.csv", keep_default_na=False)
    return df.set_index(KEY)["value"].sort_index()


def _copy(reference, tmp_path):
    import shutil

    out, cache = reference
    shutil.copytree(out, tmp_path / "run")
    return tmp_path / "run", cache


def _rerun(run, cache):
    result = CliRunner().invoke(main, _args(run, cache))
    assert result.exit_code == 0, result.output
    return result


def test_a_torn_last_line_is_dropped_and_its_cell_recomputed(reference, tmp_path):
    run, cache = _copy(reference, tmp_path)
    text = (run / "results.csv").read_text()
    (run / "results.csv").write_text(text[: len(text) - 40])  # cut inside the last row
    with pytest.warns(UserWarning, match="torn last line"):
        _rerun(run, cache)
    pd.testing.assert_series_equal(_values(run), _values(reference[0]))


def _drop_three_metrics(df):
    victim = df["cell_id"].iloc[-1]
    return df.drop(index=df[(df["cell_id"] == victim) & df["metric"].isin(["rank5", "rank10", "mINP"])].index)


def _one_nan_value(df):
    df["value"] = df["value"].astype(object)
    df.loc[df.index[0], "value"] = "nan"
    return df


@pytest.mark.parametrize("damage", [_drop_three_metrics, _one_nan_value], ids=["2-of-5-metrics", "nan-value"])
def test_an_incomplete_or_invalid_cell_is_recomputed(reference, tmp_path, damage):
    run, cache = _copy(reference, tmp_path)
    damage(pd.read_csv(run / "results.csv", keep_default_na=False)).to_csv(run / "results.csv", index=False)
    with pytest.warns(UserWarning, match="1 recorded cell"):
        _rerun(run, cache)
    pd.testing.assert_series_equal(_values(run), _values(reference[0]))


@pytest.mark.parametrize("side", ["queries.csv", "cmc.csv"])
def test_a_deleted_side_table_is_rebuilt(reference, tmp_path, side):
    run, cache = _copy(reference, tmp_path)
    (run / side).unlink()
    with pytest.warns(UserWarning, match="lack their queries.csv / cmc.csv rows"):
        _rerun(run, cache)
    rebuilt = pd.read_csv(run / side, keep_default_na=False).sort_values(list(pd.read_csv(run / side).columns))
    original = pd.read_csv(reference[0] / side, keep_default_na=False).sort_values(list(rebuilt.columns))
    pd.testing.assert_frame_equal(rebuilt.reset_index(drop=True), original.reset_index(drop=True))


def test_an_unknown_column_is_refused_before_any_work(reference, tmp_path):
    run, cache = _copy(reference, tmp_path)
    text = (run / "results.csv").read_text()
    (run / "results.csv").write_text(text.replace("attack_params", "attack_opts", 1))
    before = (run / "manifest.json").read_text()
    result = CliRunner().invoke(main, _args(run, cache))
    assert result.exit_code == 2 and "has column 'attack_opts', which this version does not know" in result.output
    assert (run / "manifest.json").read_text() == before  # refused before the sweep started


def test_the_lock_holds_when_its_file_is_deleted(tmp_path):
    with RunLock(tmp_path / "run"):
        (tmp_path / "run" / ".lock").unlink()
        with pytest.raises(RunLockedError):
            RunLock(tmp_path / "run").__enter__()


@pytest.mark.parametrize("content", ["[]", "{}", '{"sha256": 3}', "not json"])
def test_a_malformed_checkpoint_sidecar_is_reported_and_retrained(reference, tmp_path, content):
    import shutil

    out, cache = reference
    shutil.copytree(cache, tmp_path / "cache")
    for sidecar in (tmp_path / "cache" / "checkpoints").glob("*.json"):
        sidecar.write_text(content)
    with pytest.warns(UserWarning, match="unreadable or of another format; retraining"):
        result = CliRunner().invoke(main, _args(tmp_path / "run", tmp_path / "cache"))
    assert result.exit_code == 0, result.output
    pd.testing.assert_series_equal(_values(tmp_path / "run"), _values(out))  # retrained identically
    assert json.loads(next((tmp_path / "cache" / "checkpoints").glob("*.json")).read_text())["sha256"]


def test_a_checkpoint_and_a_dataset_copied_under_another_key_are_reported_and_rebuilt(reference, tmp_path, monkeypatch):
    import shutil

    from robustbench_lfm import group

    monkeypatch.setattr(group, "_DATASETS", {})  # read the cache as a new process would
    out, cache = reference
    shutil.copytree(cache, tmp_path / "cache")
    ckpts = sorted((tmp_path / "cache" / "checkpoints").glob("*.safetensors"))
    assert len(ckpts) == 2  # plain and lfm: swap them, each with its sidecar
    for suffix in (".safetensors", ".json"):
        a, b = (c.with_suffix(suffix) for c in ckpts)
        a_bytes = a.read_bytes()
        a.write_bytes(b.read_bytes())
        b.write_bytes(a_bytes)
    (data,) = (tmp_path / "cache" / "datasets").glob("*.safetensors")
    load_dataset("synthreid", {**TINY, "seed": 1}, tmp_path / "cache")  # another entry: seed 1's images
    (other,) = set((tmp_path / "cache" / "datasets").glob("*.safetensors")) - {data}
    for suffix in (".safetensors", ".json"):  # seed 1's entry copied under seed 0's key
        shutil.copy(other.with_suffix(suffix), data.with_suffix(suffix))
    with pytest.warns(UserWarning, match="was written for key") as caught:
        result = CliRunner().invoke(main, _args(tmp_path / "run", tmp_path / "cache"))
    assert result.exit_code == 0, result.output
    messages = " ".join(str(w.message) for w in caught)
    assert "checkpoint" in messages and "cached dataset" in messages
    pd.testing.assert_series_equal(_values(tmp_path / "run"), _values(out))  # retrained: plain's own numbers
