"""Threat models end to end, in process: metric attacks on either side, transfer, quantization."""

from __future__ import annotations

import pandas as pd
import pytest

from robustbench_lfm.options import RunOptions
from robustbench_lfm.runner import run_sweep
from robustbench_lfm.spec import build_spec

# At synthreid's own 64x32: every metric attack lowers mAP there by 3 points or more.
DATA_64 = "synthreid:train_ids=20,test_ids=8,distractor_ids=2,cameras=3,max_cameras=3,occlusion_p=0,noise_std=0.01"
# Small enough to train in seconds, learnable enough (clean mAP about 34%) that attacks show; at 32x16,
# ODFA lowers mAP by 1.8 points only.
DATA = DATA_64 + ",height=32,width=16"


def sweep(out, cache, **overrides):
    options = {"models": "plain", "eps": "8/255", "dataset": DATA, "epochs": 20, "out": out,
               "cache_dir": cache, "device": "cpu", "batch_size": 64, "quiet": True, **overrides}  # fmt: skip
    df = run_sweep(build_spec(RunOptions(**options)), log=lambda _: None)
    return df, pd.read_csv(out / "sanity.csv")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _metric(df, metric="rank1", **where):
    sel = df[df["metric"] == metric]
    for k, v in where.items():
        sel = sel[sel[k] == v]
    return sel.set_index("model")["value"]


def test_every_metric_attack_lowers_map_on_its_side(cache, tmp_path):
    df, checks = sweep(tmp_path / "m", cache, attacks="sma,fna,metric-ifgsm,metric-mifgsm,odfa", dataset=DATA_64)
    attacked = df[df["attack"] != "none"]
    sides = attacked.groupby("attack")["perturbed"].first().to_dict()
    assert sides == {
        "sma": "query",
        "fna": "query",
        "odfa": "query",
        "metric-ifgsm": "gallery",
        "metric-mifgsm": "gallery",
    }
    objectives = attacked.groupby("attack")["objective"].first().to_dict()
    assert objectives["metric-ifgsm"] == "bai" and objectives["odfa"] == "odfa" and objectives["fna"] == "fna"
    clean = _metric(df, "mAP", attack="none")
    for name in sides:
        assert (_metric(df, "mAP", attack=name) < clean - 0.03).all(), name
    # the seconds-sized model scores within noise of chance on 8 test identities (above-chance may
    # flag it); the attacks' own checks must pass
    attack_checks = checks[checks["check"] != "above-chance"]
    assert attack_checks["passed"].all(), attack_checks[~attack_checks["passed"]]
    assert {"eps0-clean", "monotone", "large-eps"} <= set(checks["check"])


def test_side_and_norm_options_reach_the_csv(cache, tmp_path):
    df, _ = sweep(tmp_path / "s", cache, attacks="sma:side=gallery,norm=l2", eps="0.5")
    attacked = df[df["attack"] == "sma"]
    assert set(attacked["perturbed"]) == {"gallery"} and set(attacked["norm"]) == {"l2"}


def test_surrogate_equal_to_the_target_reproduces_white_box(cache, tmp_path):
    white, _ = sweep(tmp_path / "w", cache, models="plain")
    transfer, _ = sweep(tmp_path / "t", cache, models="dropout", surrogate="plain")
    assert set(transfer.loc[transfer["attack"] != "none", "surrogate"]) == {"plain"}
    assert set(transfer.loc[transfer["attack"] == "none", "surrogate"]) == {""}
    pd.testing.assert_series_equal(_metric(white, attack="pgd"), _metric(transfer, attack="pgd")[["plain"]])
    stored = list((cache / "adversarial").glob("*.safetensors"))
    assert len(stored) == 3  # pgd at 8/255 and at the 64/255 probe, the fgsm probe at 8/255
    again, _ = sweep(tmp_path / "t2", cache, models="dropout", surrogate="plain")  # read back, not re-crafted
    pd.testing.assert_series_equal(_metric(transfer, attack="pgd"), _metric(again, attack="pgd"))


def test_quantize_is_recorded_and_keeps_eps_zero_clean(cache, tmp_path):
    plain, _ = sweep(tmp_path / "f", cache)
    quant, checks = sweep(tmp_path / "q", cache, quantize=True)
    assert set(quant.loc[quant["attack"] == "pgd", "quantize"]) == {True}
    assert not set(plain.loc[plain["attack"] == "pgd", "cell_id"]) & set(quant["cell_id"])
    assert checks.loc[checks["check"] == "eps0-clean", "passed"].all()
