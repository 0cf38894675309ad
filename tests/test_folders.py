"""Market-1501 and DukeMTMC-reID folder readers on replica folders in the published layouts."""

from __future__ import annotations

import os

import pytest
import torch

from robustbench_lfm.datasets import DatasetFolderError, load_dataset
from robustbench_lfm.datasets.folders import DUKEMTMC, MARKET1501, FolderConfig, build, locate
from tests.replica import write_duke, write_market

SIZE = {"height": 32, "width": 16}


def split_counts(split) -> tuple[int, int, int]:
    return split.num_ids, len(split), int(torch.unique(split.camids).numel())


@pytest.mark.parametrize(("layout", "write"), [(MARKET1501, write_market), (DUKEMTMC, write_duke)])
def test_split_counts_after_parsing(tmp_path, layout, write):
    counts = write(tmp_path)
    data = build(layout, FolderConfig(**SIZE), tmp_path)
    assert split_counts(data.train) == counts.train
    assert split_counts(data.query) == counts.query
    assert split_counts(data.gallery) == counts.gallery
    assert data.gallery.images.shape[1:] == (3, 32, 16) and data.gallery.images.dtype == torch.uint8
    assert int(data.train.camids.min()) == 0  # cameras are 0-based
    assert data.train_labels().max() == counts.train[0] - 1


def test_market_junk_dropped_distractors_kept_in_gallery(tmp_path):
    write_market(tmp_path)
    data = build(MARKET1501, FolderConfig(**SIZE), tmp_path)
    assert -1 not in data.gallery.pids.tolist()
    assert data.gallery.pids.tolist().count(0) == 3
    assert 0 not in data.query.pids.tolist()


def test_images_keep_their_identity_colour(tmp_path):
    write_market(tmp_path)
    data = build(MARKET1501, FolderConfig(**SIZE), tmp_path)
    pid = 13
    mean = data.query.images[data.query.pids == pid].float().mean(dim=(0, 2, 3))
    want = torch.tensor([(pid * 53) % 256, (pid * 97) % 256, (pid * 151) % 256], dtype=torch.float)
    assert torch.allclose(mean, want, atol=6)


@pytest.mark.parametrize("where", ["", "market1501"])
def test_the_folder_is_found_where_the_frameworks_put_it(tmp_path, where):
    write_market(tmp_path / where)  # DIR/Market-1501-v15.09.15 (fast-reid), DIR/market1501/... (torchreid)
    assert locate(tmp_path, MARKET1501) == tmp_path / where / "Market-1501-v15.09.15"
    flat = tmp_path / "flat"
    (tmp_path / where / "Market-1501-v15.09.15").rename(flat)  # the split folders directly in DIR
    assert locate(flat, MARKET1501) == flat


def test_missing_folder_names_the_expected_layout(tmp_path):
    with pytest.raises(DatasetFolderError, match="bounding_box_train/, query/, bounding_box_test/"):
        locate(tmp_path, MARKET1501)
    with pytest.raises(DatasetFolderError, match="not a directory"):
        locate(tmp_path / "nowhere", MARKET1501)


def test_malformed_file_name_is_named(tmp_path):
    write_market(tmp_path)
    (tmp_path / "Market-1501-v15.09.15" / "query" / "person_c1.jpg").write_bytes(b"")
    with pytest.raises(DatasetFolderError, match=r"person_c1\.jpg"):
        build(MARKET1501, FolderConfig(**SIZE), tmp_path)


def test_camera_out_of_range_is_an_error(tmp_path):
    write_market(tmp_path)
    (tmp_path / "Market-1501-v15.09.15" / "query" / "0010_c7s1_000001_00.jpg").write_bytes(b"")
    with pytest.raises(DatasetFolderError, match=r"camera 1\.\.6"):
        build(MARKET1501, FolderConfig(**SIZE), tmp_path)


def test_empty_split_is_an_error(tmp_path):
    write_market(tmp_path)
    for f in (tmp_path / "Market-1501-v15.09.15" / "query").iterdir():
        f.unlink()
    with pytest.raises(DatasetFolderError, match="no usable image"):
        build(MARKET1501, FolderConfig(**SIZE), tmp_path)


def test_cache_is_reused_and_invalidated_when_a_file_changes(tmp_path, isolated_cache):
    write_market(tmp_path / "data")
    first = load_dataset("market1501", SIZE, isolated_cache, tmp_path / "data")
    assert len(list((isolated_cache / "datasets").glob("market1501-*.safetensors"))) == 1
    again = load_dataset("market1501", SIZE, isolated_cache, tmp_path / "data")
    assert torch.equal(first.gallery.images, again.gallery.images)
    victim = next((tmp_path / "data" / "Market-1501-v15.09.15" / "query").glob("0010_c1*.jpg"))
    os.utime(victim, ns=(1, 1))  # same bytes, new modification time: the folder changed
    load_dataset("market1501", SIZE, isolated_cache, tmp_path / "data")
    assert len(list((isolated_cache / "datasets").glob("market1501-*.safetensors"))) == 2


def test_folder_dataset_without_root_says_how_to_give_one(isolated_cache):
    with pytest.raises(DatasetFolderError, match="--data-root"):
        load_dataset("market1501", SIZE, isolated_cache)
