"""The low-data regime (--train-fraction): a fixed, stratified share of the training split, kept
apart from full-data numbers end to end."""

from __future__ import annotations

import pytest
import torch

from robustbench_lfm.datasets import load_dataset, training_subset
from robustbench_lfm.options import RunOptions
from robustbench_lfm.rundir import RunDirError
from robustbench_lfm.runner import run_sweep
from robustbench_lfm.spec import DataSpec, SpecError, build_spec
from tests.conftest import TINY_CLI


def test_images_mode_keeps_every_identity_and_its_share_of_images(tiny_reid):
    small = training_subset(tiny_reid, 0.5)
    full_counts = torch.bincount(tiny_reid.train.pids)
    counts = torch.bincount(small.train.pids, minlength=len(full_counts))
    seen = full_counts > 0
    assert torch.equal(counts[seen], torch.clamp((full_counts[seen] * 0.5).round().long(), min=1))
    assert torch.equal(small.query.images, tiny_reid.query.images)  # evaluation splits untouched
    assert torch.equal(training_subset(tiny_reid, 0.5).train.images, small.train.images)  # a fixed draw


def test_ids_mode_keeps_a_share_of_identities_with_all_their_images(tiny_reid):
    small = training_subset(tiny_reid, 0.5, "ids")
    kept = torch.unique(small.train.pids)
    assert len(kept) == round(0.5 * tiny_reid.train.num_ids)
    for pid in kept.tolist():
        assert int((small.train.pids == pid).sum()) == int((tiny_reid.train.pids == pid).sum())


def test_classification_shares_are_stratified_by_class(tmp_path):
    digits = load_dataset("digits", {}, tmp_path)
    small = training_subset(digits, 0.1)
    per_class = torch.bincount(small.train.labels, minlength=10)
    expected = torch.bincount(digits.train.labels, minlength=10).mul(0.1).round().long()
    assert torch.equal(per_class, expected)


def sweep(out, cache, **overrides):
    options = {"models": "plain", "no_baseline": True, "attacks": "fgsm", "eps": "8/255",
               "dataset": TINY_CLI, "epochs": 1, "out": out, "cache_dir": cache, "device": "cpu",
               "quiet": True, **overrides}  # fmt: skip
    return run_sweep(build_spec(RunOptions(**options)), log=lambda _: None)


def test_a_training_share_stays_apart_from_full_data_end_to_end(tmp_path):
    cache = tmp_path / "cache"
    full = sweep(tmp_path / "full", cache)
    half = sweep(tmp_path / "half", cache, train_fraction=0.5)
    ids = sweep(tmp_path / "ids", cache, train_fraction=0.5, train_by="ids")
    assert set(full["train_fraction"].fillna("")) == {""} and set(half["train_fraction"]) == {"0.5 images"}
    assert set(ids["train_fraction"]) == {"0.5 ids"}
    assert len({*full["checkpoint_sha256"], *half["checkpoint_sha256"], *ids["checkpoint_sha256"]}) == 3
    assert not set(full["cell_id"]) & set(half["cell_id"])
    with pytest.raises(RunDirError, match="train_fraction"):
        sweep(tmp_path / "half", cache)


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, float("nan"), float("inf"), True])
def test_a_fraction_outside_zero_one_is_refused(bad):
    with pytest.raises(SpecError, match="train-fraction"):
        DataSpec("synthreid", train_fraction=bad)
