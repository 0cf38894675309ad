"""The classification track: datasets (synthcls, digits, cifar10 from a pickle folder) and sweeps
that train, attack and score classifiers, including a MixACM student and its pgd-at teacher."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from robustbench_lfm import models
from robustbench_lfm.cache import CheckpointCache
from robustbench_lfm.cli import main
from robustbench_lfm.datasets import DatasetFolderError, load_dataset
from robustbench_lfm.datasets.classification import (
    CIFAR_FILES,
    DigitsConfig,
    SynthClsConfig,
    generate_synthcls,
    load_cifar10,
    load_digits,
)
from robustbench_lfm.options import RunOptions
from robustbench_lfm.runner import run_sweep
from robustbench_lfm.spec import build_spec

SMALL = "digits:test_fraction=0.1"  # 1617 training images: 42-44% accuracy after 2 epochs (chance 10%)
TINY_CLS = "synthcls:train_per_class=8,test_per_class=3"  # for the plumbing tests


def test_digits_are_the_real_sklearn_digits_split_per_class():
    data = load_digits(DigitsConfig())
    assert len(data.train) + len(data.test) == 1797 and data.image_size == (32, 32)
    assert data.train.images.dtype == torch.uint8 and data.num_classes == 10
    per_class = torch.bincount(data.test.labels, minlength=10).float() / torch.bincount(
        torch.cat([data.train.labels, data.test.labels]), minlength=10
    )
    assert torch.all((per_class - 0.25).abs() < 0.02)  # stratified 75/25
    assert torch.equal(load_digits(DigitsConfig()).test.images, data.test.images)  # fixed split


def test_synthcls_is_deterministic_balanced_and_seed_dependent():
    a, b = generate_synthcls(SynthClsConfig(train_per_class=5)), generate_synthcls(SynthClsConfig(train_per_class=5))
    assert torch.equal(a.train.images, b.train.images)
    assert torch.equal(torch.bincount(a.train.labels), torch.full((10,), 5))
    c = generate_synthcls(SynthClsConfig(train_per_class=5, seed=1))
    assert not torch.equal(a.train.images, c.train.images)


def _write_cifar(folder, n=20, protocol=2, keys=(b"data", b"labels")):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in CIFAR_FILES:
        data, labels = rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n).tolist()
        (folder / name).write_bytes(pickle.dumps(dict(zip(keys, (data, labels), strict=True)), protocol=protocol))


@pytest.mark.parametrize(
    ("protocol", "keys"),
    [(2, (b"data", b"labels")), (5, (b"data", b"labels")), (4, ("data", "labels")), (5, ("data", "labels"))],
)  # as distributed (protocol 2, bytes keys); re-pickled by Python 3 (protocol 4/5 arrays, str keys)
def test_cifar10_reads_the_python_pickle_folder(tmp_path, protocol, keys):
    _write_cifar(tmp_path / "cifar-10-batches-py", protocol=protocol, keys=keys)
    data = load_cifar10(tmp_path)
    assert len(data.train) == 100 and len(data.test) == 20 and data.image_size == (32, 32)
    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes())
    assert torch.equal(data.test.images[3].flatten(), torch.from_numpy(raw[keys[0]][3]))
    assert data.test.labels.tolist() == list(raw[keys[1]])


def test_a_cifar_batch_without_its_entries_names_the_keys_it_has(tmp_path):
    _write_cifar(tmp_path / "c", keys=("pixels", "targets"))
    with pytest.raises(
        DatasetFolderError, match=r"has no 'data' entry \(bytes or str key; its keys: 'pixels', 'targets'\)"
    ):
        load_cifar10(tmp_path / "c")


class _Planted:
    def __reduce__(self):
        return (os.system, ("touch planted-by-pickle",))


def test_a_crafted_cifar_pickle_is_refused_without_running(tmp_path, monkeypatch):
    _write_cifar(tmp_path / "c")
    (tmp_path / "c" / "data_batch_1").write_bytes(pickle.dumps({b"data": _Planted(), b"labels": [0]}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetFolderError, match="refusing to load"):
        load_cifar10(tmp_path / "c")
    assert not (tmp_path / "planted-by-pickle").exists()


def test_cifar10_without_its_folder_names_the_layout(tmp_path):
    result = CliRunner().invoke(main, ["run", "--dataset", "cifar10", "--data-root", str(tmp_path), "-q"])
    assert result.exit_code == 2 and "data_batch_1" in result.output and "cifar-10-batches-py" in result.output


def test_classification_datasets_round_trip_through_the_cache(tmp_path):
    first = load_dataset("synthcls", {"train_per_class": 3, "test_per_class": 2}, tmp_path)
    again = load_dataset("synthcls", {"train_per_class": 3, "test_per_class": 2}, tmp_path)
    assert torch.equal(first.test.images, again.test.images) and again.classes == first.classes


def _sweep(out, cache, **overrides):
    options = {"dataset": SMALL, "models": "plain", "eps": "8/255", "epochs": 2, "out": out,
               "cache_dir": cache, "device": "cpu", "quiet": True, **overrides}  # fmt: skip
    spec = build_spec(RunOptions(**options))
    return run_sweep(spec, log=lambda _: None), json.loads((out / "manifest.json").read_text()), spec


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cls-cache")


def test_a_classification_sweep_scores_accuracy_clean_and_attacked(cache, tmp_path):
    df, manifest, _ = _sweep(tmp_path / "run", cache, models="lfm", n_eval=90)  # of 180 test images: quick to attack
    acc = df[df["metric"] == "accuracy"].set_index(["model", "attack"])["value"]
    assert set(df["task"]) == {"classification"} and set(df["metric"]) == {"accuracy"}
    assert acc[("plain", "none")] > 0.3  # learned: chance is 0.1
    assert acc[("plain", "pgd")] < acc[("plain", "none")]
    assert set(df.loc[df["attack"] == "pgd", "perturbed"]) == {"input"}
    params = json.loads(df.loc[df["model"] == "lfm", "model_params"].iloc[0])
    assert params["p"] == 0.15 and params["at"] == "stem"  # resolved parameters, not only overrides
    checks = pd.read_csv(tmp_path / "run" / "sanity.csv")
    assert checks["passed"].all() and "large-eps" in set(checks["check"])
    assert manifest["spec"]["recipe"]["source"] == "classification-cpu"


def test_mixacm_trains_its_teacher_first_and_keys_on_the_teacher_checkpoint(cache, tmp_path):
    _, manifest, _ = _sweep(tmp_path / "a", cache, models="mixacm", no_baseline=True, epochs=2, dataset=TINY_CLS)
    assert list(manifest["training"]) == ["pgd-at@seed0", "mixacm@seed0"]
    teacher_key = manifest["training"]["pgd-at@seed0"]["key"]
    # a different teacher checkpoint under the same key (say, retrained elsewhere) must retrain the student
    store = CheckpointCache(cache)
    teacher = models.create_model("pgd-at", 10, "classification")
    teacher.load_state_dict(
        {k: v + 0.01 if v.is_floating_point() else v for k, v in load_file(store.paths(teacher_key)[0]).items()}
    )
    store.save(teacher_key, teacher, json.loads(store.paths(teacher_key)[1].read_text()))
    _, again, _ = _sweep(tmp_path / "b", cache, models="mixacm", no_baseline=True, epochs=2, dataset=TINY_CLS)
    assert again["training"]["pgd-at@seed0"]["cached"] is True
    assert again["training"]["mixacm@seed0"]["cached"] is False
    assert again["training"]["mixacm@seed0"]["key"] != manifest["training"]["mixacm@seed0"]["key"]


def test_logit_attacks_run_in_classification_sweeps(cache, tmp_path):
    df, _, _ = _sweep(tmp_path / "c", cache, attacks="apgd-ce:steps=10", eps="8/255", n_eval=90)
    acc = df[df["metric"] == "accuracy"].set_index("attack")["value"]
    assert acc["apgd-ce"] < acc["none"]


def test_a_white_box_attack_searches_only_the_images_classified_correctly_clean(cache, tmp_path, monkeypatch):
    """AutoAttack's protocol: an image the model gets wrong clean is lost already, so the attack
    never sees it and it counts as wrong; each one it gets right is attacked. A cell scored in
    several passes (--score-repeats, a model random in eval mode) attacks every image, as each pass
    decides afresh which are right."""
    from robustbench_lfm import attacking

    seen: list[tuple[int, float]] = []
    attacked = attacking._attacked

    def spy(ctx, attack, x, context, cell, gen, **bar):
        seen.append((len(x), cell.eps))
        return attacked(ctx, attack, x, context, cell, gen, **bar)

    monkeypatch.setattr(attacking, "_attacked", spy)
    df, _, _ = _sweep(tmp_path / "a", cache, attacks="pgd:steps=2", n_eval=90)
    clean = df[(df["attack"] == "none") & (df["metric"] == "accuracy")]["value"].item()
    right = round(clean * 90)
    assert 0 < right < 90  # the model gets some images wrong, and some right
    attacked_at = {eps: n for n, eps in seen}
    assert attacked_at[8 / 255] == right  # the right ones only: one batch of 90
    per_image = pd.read_csv(tmp_path / "a" / "queries.csv").merge(df[["cell_id", "attack", "eps"]].drop_duplicates())
    hit = per_image[per_image["eps"].isin([0, 8 / 255])].pivot(index="query", columns="attack", values="hit")
    assert (hit["pgd"] <= hit["none"]).all() and hit["none"].sum() == right  # a wrong image stays wrong
    seen.clear()
    _sweep(tmp_path / "b", cache, attacks="pgd:steps=2", n_eval=90, score_repeats=2)
    assert {n for n, eps in seen if eps > 0} == {90}
