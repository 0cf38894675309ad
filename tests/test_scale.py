"""Market-1501 scale: the replica folders, stored adversarial images, --n-eval subsets, precision,
and re-ranking's single N x N buffer."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from robustbench_lfm import attacking, attacks, environment
from robustbench_lfm.check import compare
from robustbench_lfm.datasets import as_float, evaluated_subset, load_dataset, replica
from robustbench_lfm.datasets.folders import DUKEMTMC, MARKET1501, FolderConfig, build
from robustbench_lfm.files import write_verified
from robustbench_lfm.options import RunOptions
from robustbench_lfm.report import build_report
from robustbench_lfm.rerank import _normalised_transpose
from robustbench_lfm.runner import run_sweep
from robustbench_lfm.spec import EvalSpec, SpecError, build_spec
from robustbench_lfm.summary import summary_table

DATA = "synthreid:train_ids=20,test_ids=8,distractor_ids=2,cameras=3,max_cameras=3,occlusion_p=0,noise_std=0.01"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def sweep(out, cache, **overrides):
    options = {"models": "plain", "no_baseline": True, "attacks": "fgsm", "eps": "8/255",
               "dataset": DATA, "epochs": 2, "out": out, "cache_dir": cache, "device": "cpu", "batch_size": 64,
               "quiet": True, **overrides}  # fmt: skip
    return run_sweep(build_spec(RunOptions(**options)), log=lambda _: None)


@pytest.mark.parametrize(("sizes", "layout"), [(replica.MARKET, MARKET1501), (replica.DUKE, DUKEMTMC)])
def test_a_scaled_replica_has_the_published_proportions_and_parses(tmp_path, sizes, layout):
    small = sizes.scaled(0.02)
    files = replica.write(tmp_path, small, height=32, width=16)
    data = build(layout, FolderConfig(32, 16), tmp_path)
    assert (data.train.num_ids, len(data.train)) == small.train
    assert (data.query.num_ids, len(data.query)) == small.query
    gallery_ids = small.query[0] + (small.distractor_ids or (1 if small.distractor_images else 0))
    assert (data.gallery.num_ids, len(data.gallery)) == (gallery_ids, small.gallery_test + small.distractor_images)
    on_disk = sorted(p.name for p in (tmp_path / sizes.folder / "bounding_box_test").glob("*.jpg"))
    assert sum(n.startswith("-1_") for n in on_disk) == small.junk == files.pid.count(-1)
    assert not set(data.train.pids.tolist()) & set(data.query.pids.tolist())  # disjoint identities
    for pid, cam in zip(data.query.pids.tolist(), data.query.camids.tolist(), strict=True):  # a cross-camera match
        same = (data.gallery.pids == pid) & (data.gallery.camids != cam)
        assert bool(same.any()), (pid, cam)


def test_the_full_size_plan_has_the_published_counts():
    p = replica.plan(replica.MARKET)
    folders = pd.Series(p.folder)
    pids = pd.Series(p.pid)
    assert (folders == "bounding_box_train").sum() == 12936 and pids[folders == "bounding_box_train"].nunique() == 751
    assert (folders == "query").sum() == 3368 and pids[folders == "query"].nunique() == 750
    test = pids[folders == "bounding_box_test"]
    assert len(test) == 19732 and (test == 0).sum() == 2793 and (test == -1).sum() == 3819
    duke = replica.plan(replica.DUKE)
    d_folders, d_pids = pd.Series(duke.folder), pd.Series(duke.pid)
    assert (d_folders == "bounding_box_train").sum() == 16522 and (d_folders == "query").sum() == 2228
    assert (d_folders == "bounding_box_test").sum() == 17661 and d_pids[
        d_folders == "bounding_box_test"
    ].nunique() == 1110


def test_the_replica_script_refuses_to_overwrite(tmp_path):
    cmd = [sys.executable, "scripts/market_replica.py", str(tmp_path), "--scale", "0.01", "--size", "32x16"]
    assert subprocess.run(cmd, capture_output=True, text=True).returncode == 0
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode != 0 and "exists" in again.stderr


def _adversarial(norm: str, eps: float):
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 256, (6, 3, 16, 8), generator=g, dtype=torch.uint8)
    x = as_float(clean)
    x_adv = attacks.project(x + torch.empty_like(x).uniform_(-1, 1, generator=g), x, eps, norm)
    return clean, x, x_adv


def test_quantized_images_are_stored_as_uint8_bit_for_bit():
    clean, x, x_adv = _adversarial("linf", 8 / 255)
    q = attacks.quantize(x_adv, x, 8 / 255, "linf")
    stored = attacking.encode_adversarial(q, clean, quantized=True)
    assert stored["images"].dtype == torch.uint8 and stored["images"].element_size() * 4 == q.element_size()
    assert torch.equal(attacking.decode_adversarial(stored, x, 8 / 255, "linf"), q)


@pytest.mark.parametrize(("norm", "eps"), [("linf", 8 / 255), ("linf", 64 / 255), ("l2", 0.5)])
def test_float16_perturbations_stay_within_eps_over_2048_and_the_budget(norm, eps):
    clean, x, x_adv = _adversarial(norm, eps)
    stored = attacking.encode_adversarial(x_adv, clean, quantized=False)
    assert stored["delta"].dtype == torch.float16
    back = attacking.decode_adversarial(stored, x, eps, norm)
    assert float((back - x_adv).abs().max()) <= eps / 2048 + 1e-7
    assert bool((attacks.budget(back, x, norm) <= eps * (1 + 1e-6)).all()) and 0 <= float(back.min()) <= 1


@pytest.mark.parametrize(("quantize", "bytes_per_pixel"), [(True, 1), (False, 2)])
def test_transfer_cells_store_a_quarter_or_half_of_float32(cache, tmp_path, quantize, bytes_per_pixel):
    store = tmp_path / "own-cache"
    df = sweep(tmp_path / "t", store, models="dropout", surrogate="plain", quantize=quantize, epochs=1)
    files = sorted((store / "adversarial").glob("*.safetensors"))
    queries = int(df["n_eval"].iloc[0])
    pixels = queries * 3 * 64 * 32
    assert files and all(abs(f.stat().st_size - bytes_per_pixel * pixels) < 4096 for f in files)
    again = sweep(tmp_path / "t2", store, models="dropout", surrogate="plain", quantize=quantize, epochs=1)
    pd.testing.assert_series_equal(df["value"], again["value"])  # read back: the same images


def test_n_eval_scores_a_fixed_subset_and_stays_apart_end_to_end(cache, tmp_path):
    full = sweep(tmp_path / "full", cache)
    sub = sweep(tmp_path / "sub", cache, n_eval=5)
    assert set(sub["n_eval"]) == {5} and set(sub["eval_subset"].astype(str)) == {f"5/{full['n_eval'].iloc[0]}"}
    assert set(full["eval_subset"].fillna("")) == {""}
    assert not set(sub["cell_id"]) & set(full["cell_id"])
    assert json.loads((tmp_path / "sub" / "fingerprint.json").read_text())["evaluation"]["n_eval"] == 5
    again = sweep(tmp_path / "sub2", cache, n_eval=5)  # the subset is fixed: the same numbers
    pd.testing.assert_series_equal(sub["value"], again["value"])
    with pytest.raises(SpecError, match="n_eval"):  # one directory measures one subset
        sweep(tmp_path / "sub", cache)
    gate = compare(tmp_path / "sub", tmp_path / "full" / "results.csv")
    assert gate.missing and not gate.passed  # a subset never stands in for the full set
    report = build_report(tmp_path / "sub")
    assert "seeded subset (--n-eval) of 5/" in report.markdown.read_text()
    assert "seeded subset (--n-eval) of 5/" in summary_table(sub) and "subset" not in summary_table(full)


def test_n_eval_on_classification_and_out_of_range(cache, tmp_path):
    data = evaluated_subset(load_dataset("digits", {}, cache), 50)
    assert len(data.test) == 50
    with pytest.raises(SpecError, match="exceeds the 454 test images of digits"):
        sweep(tmp_path / "c", cache, dataset="digits", n_eval=455)
    with pytest.raises(SpecError, match="n-eval"):
        EvalSpec(n_eval=-1)


def test_bf16_precision_reaches_the_recipe_the_columns_and_the_identity(cache, tmp_path):
    fp32 = sweep(tmp_path / "a", cache, epochs=1, precision="fp32")
    bf16 = sweep(tmp_path / "b", cache, epochs=1, precision="bf16", attack_precision="bf16")
    assert set(bf16["precision"]) == {"bf16"} and set(fp32["precision"]) == {"fp32"}
    attacked = bf16["attack"] != "none"
    assert set(bf16.loc[attacked, "attack_precision"]) == {"bf16"}
    assert set(bf16["recipe_key"]) != set(fp32["recipe_key"])  # trained in bf16: another checkpoint
    assert not set(bf16["cell_id"]) & set(fp32["cell_id"])
    assert bf16["value"].between(0, 1).all()
    with pytest.raises(SpecError, match="precision"):
        EvalSpec(precision="fp16")


def test_rerank_builds_the_released_codes_matrix_in_one_buffer():
    g = torch.Generator().manual_seed(0)
    q_q, q_g, g_g = (torch.rand(n, m, generator=g) for n, m in ((5, 5), (5, 9), (9, 9)))
    d = np.block([[q_q.numpy(), q_g.numpy()], [q_g.T.numpy(), g_g.numpy()]]) ** 2
    want = np.transpose(d / np.max(d, axis=0))  # the authors' released code, in float32
    assert np.array_equal(_normalised_transpose(q_q, q_g, g_g).numpy(), want.astype(np.float32))


def test_a_report_of_attacked_rows_without_clean_ones_still_renders(cache, tmp_path):
    sweep(tmp_path / "r", cache, epochs=1)
    path = tmp_path / "r" / "results.csv"
    df = pd.read_csv(path, keep_default_na=False, dtype=str)
    df[df["attack"] != "none"].to_csv(path, index=False)
    assert build_report(tmp_path / "r").markdown.exists()


def test_a_gpu_index_past_the_visible_ones_is_refused_and_determinism_is_recorded(cache, tmp_path, monkeypatch):
    sweep(tmp_path / "d", cache, epochs=1)
    recorded = json.loads((tmp_path / "d" / "manifest.json").read_text())["machine"]["determinism"]
    assert recorded["cudnn_benchmark"] is False and "cuda_matmul_tf32" in recorded
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="sees 1 GPU"):
        environment.resolve_device("cuda:3")


def test_a_stored_file_of_another_layout_is_recrafted_not_used(tmp_path):
    path = tmp_path / "adv.safetensors"
    old = {"images": torch.rand(2, 3, 4, 4)}  # the float32 layout of earlier versions
    write_verified(path, lambda tmp: save_file(old, str(tmp)), {"surrogate": "k"})
    with pytest.warns(UserWarning, match="crafting them again"):
        assert attacking._read_stored(path) is None


def test_without_the_flag_training_follows_the_recipe_and_features_run_in_fp32(tmp_path):
    """A recipe's precision is how it trains (the cpu re-ID recipe's: bf16); features run in fp32
    unless --precision, which sets both (and, for training, makes another recipe_key)."""
    recipe = tmp_path / "bf16.toml"
    recipe.write_text('task = "reid"\nepochs = 1\nprecision = "bf16"\n')

    def spec(**given):
        return build_spec(RunOptions(**{"dataset": DATA, "out": tmp_path / "r", "cache_dir": tmp_path / "c", **given}))

    for built in (spec(recipe=str(recipe)), spec()):
        assert (built.recipe.precision, built.evaluation.precision) == ("bf16", "fp32")
    fp32, bf16 = spec(precision="fp32"), spec(precision="bf16")
    assert (fp32.recipe.precision, fp32.evaluation.precision) == ("fp32", "fp32")
    assert (bf16.recipe.precision, bf16.evaluation.precision) == ("bf16", "bf16")
    assert fp32.recipe.fingerprint() != spec().recipe.fingerprint() == bf16.recipe.fingerprint()


@pytest.mark.parametrize(
    ("n", "size", "sizes"),
    [(277, 256, [277]), (300, 256, [300]), (320, 256, [256, 64]), (600, 256, [256, 256, 88]), (9, 8, [9]),
     (10, 8, [8, 2]), (256, 256, [256]), (3, 256, [3]), (0, 8, [0])],
)  # fmt: skip
def test_a_short_last_batch_joins_the_one_before(n, size, sizes):
    """Evaluation batches: a last batch under a quarter of --batch-size (277 queries at 256: 21)
    joins the one before; every item once, in order."""
    items = torch.arange(n)
    parts = attacking.batches(items, size)
    assert [len(p) for p in parts] == sizes
    assert torch.equal(torch.cat(parts), items)


def test_a_bf16_recipe_on_a_cpu_without_fast_bf16_warns_once_per_training(cache, tmp_path, monkeypatch):
    """Where torch has no fast bf16 convolution (no AVX-512, AMX or Arm BF16), the recipe's bf16
    training is slower than fp32: the run says so and names the way out; fp32 training does not warn."""
    from robustbench_lfm import precision

    monkeypatch.setattr(precision, "slow_bf16", lambda device: device.type == "cpu")
    with pytest.warns(UserWarning, match=r"training plain@seed0 under bf16 .* --precision fp32 trains in float32"):
        sweep(tmp_path / "bf16", tmp_path / "own-cache", epochs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        sweep(tmp_path / "fp32", tmp_path / "own-cache", epochs=1, precision="fp32")
