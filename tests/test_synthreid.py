"""The embedded synthreid dataset: deterministic, Market-style splits, cached on disk."""

from __future__ import annotations

import torch

from robustbench_lfm.datasets import load_dataset
from robustbench_lfm.datasets.synthreid import SynthReIDConfig, generate
from tests.conftest import TINY


def test_same_config_gives_the_same_bytes_and_another_seed_does_not(tiny_reid):
    again = generate(SynthReIDConfig(**TINY))
    assert torch.equal(again.train.images, tiny_reid.train.images)
    other = generate(SynthReIDConfig(**{**TINY, "seed": 1}))
    assert not torch.equal(other.query.images[:4], tiny_reid.query.images[:4])


def test_market_style_splits(tiny_reid):
    train, query, gallery = set(tiny_reid.train.pids.tolist()), tiny_reid.query, tiny_reid.gallery
    test_ids = set(query.pids.tolist())
    assert not train & set(gallery.pids.tolist())  # disjoint train and test identities
    assert len(test_ids) == TINY["test_ids"] and tiny_reid.num_train_ids == TINY["train_ids"]
    pairs = list(zip(query.pids.tolist(), query.camids.tolist(), strict=True))
    assert len(pairs) == len(set(pairs))  # one query per (identity, camera)
    distractors = set(gallery.pids.tolist()) - test_ids
    assert len(distractors) == TINY["distractor_ids"]
    for pid, cam in pairs:  # every query has a match from another camera
        other_cam = (gallery.pids == pid) & (gallery.camids != cam)
        assert other_cam.any()


def test_images_are_uint8_at_the_configured_size(tiny_reid):
    assert tiny_reid.train.images.dtype == torch.uint8
    assert tiny_reid.image_size == (TINY["height"], TINY["width"])
    assert tiny_reid.train.images.float().std() > 20  # not blank


def test_cached_copy_is_reused_and_a_corrupted_one_regenerated(tmp_path):
    first = load_dataset("synthreid", TINY, tmp_path)
    (path,) = (tmp_path / "datasets").glob("*.safetensors")
    stamp = path.stat().st_mtime_ns
    assert torch.equal(load_dataset("synthreid", TINY, tmp_path).gallery.images, first.gallery.images)
    assert path.stat().st_mtime_ns == stamp
    path.write_bytes(path.read_bytes()[:-10])
    assert torch.equal(load_dataset("synthreid", TINY, tmp_path).gallery.images, first.gallery.images)
