"""The sanity checks flag what they should, on hand-built result rows; chance Rank-1."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from robustbench_lfm import sanity
from robustbench_lfm.metrics import chance_rank1, evaluate_rank

N = 100  # queries: the comparisons' slack is 2 / N


def row(attack, eps, metric, value, model="m", objective="sma", options="{}"):
    clean = attack == "none"
    return {
        "task": "reid", "dataset": "synthreid", "data_params": "{}", "recipe_key": "r", "distance": "cosine",
        "ap": "plain", "flip": False, "backbone": "resnet-mini", "regularizer": "none", "model_params": "{}",
        "pretrained_sha256": "", "model": model, "train_seed": 0, "attack": attack, "attack_label": attack,
        "attack_params": "{}" if clean else options, "objective": "" if clean else objective,
        "norm": "" if clean else "linf", "perturbed": "" if clean else "query", "steps": 0 if clean else 20,
        "step_size": 0.0 if clean else eps / 4, "surrogate": "", "quantize": False, "rerank": "", "eps": eps,
        "metric": metric, "value": value, "n_eval": N, "precision": "fp32", "eval_subset": "", "train_fraction": "",
        "attack_precision": "" if clean else "fp32", "test_dataset": "synthreid", "test_data_params": "{}",
        "severity": 0, "score_repeats": 1,
    }  # fmt: skip


def table(rows):
    return pd.DataFrame(rows)


def healthy():
    results = [row("none", 0.0, m, v) for m, v in (("rank1", 0.9), ("mAP", 0.8))]
    for eps, r1, mAP in ((4 / 255, 0.5, 0.45), (8 / 255, 0.2, 0.2)):
        results += [row("pgd", eps, "rank1", r1), row("pgd", eps, "mAP", mAP)]
    probes = [row("pgd", 0.0, "rank1", 0.9), row("pgd", 0.0, "mAP", 0.8), row("pgd", 64 / 255, "rank1", 0.0)]
    for eps in (4 / 255, 8 / 255):
        probes += [row("fgsm", eps, "rank1", 0.7), row("fgsm", eps, "mAP", 0.6)]
    return results, probes


def failures(results, probes, chance=0.01):
    checks = sanity.run_checks(table(results), table(probes), chance)
    return {c.check for c in checks if not c.passed}, checks


def test_healthy_rows_pass_every_check():
    failed, checks = failures(*healthy())
    assert not failed
    assert {c.check for c in checks} == {"above-chance", "eps0-clean", "monotone", "pgd<=fgsm", "large-eps"}


@pytest.mark.parametrize(("clean_rank1", "flagged"), [(0.0, True), (0.01 + 0.02, True), (0.01 + 0.04, False)])
def test_a_model_within_noise_of_chance_fails_a_check_named_for_it(clean_rank1, flagged):
    """Chance 1%, 100 queries: 3 binomial standard deviations are 2.98 points above it."""
    results, probes = healthy()
    results[0]["value"] = clean_rank1
    failed, checks = failures(results, probes)
    assert ("above-chance" in failed) is flagged
    (check,) = [c for c in checks if c.check == "above-chance"]
    assert check.tolerance == pytest.approx(3 * (0.01 * 0.99 / N) ** 0.5)
    if flagged:
        assert "within noise of chance" in check.warning() and check.model == "m"


def test_two_variants_of_an_attack_are_two_series():
    """PGD-1 is weaker than PGD-20: checked as one series, 50% at 4/255 then 60% at 8/255 would read
    as a rise with eps; as two series each is non-increasing."""
    results, probes = healthy()
    weak = '{"steps": 1}'
    results += [row("pgd", 4 / 255, m, 0.7, options=weak) for m in ("rank1", "mAP")]
    results += [row("pgd", 8 / 255, m, 0.6, options=weak) for m in ("rank1", "mAP")]
    failed, checks = failures(results, probes)
    assert "monotone" not in failed
    assert len([c for c in checks if c.check == "monotone"]) == 4  # (pgd, pgd:steps=1) x (rank1, mAP)


def test_metric_rising_with_eps_is_flagged():
    results, probes = healthy()
    results[-2]["value"] = 0.6  # rank1 at 8/255 above the 4/255 value
    failed, checks = failures(results, probes)
    assert failed == {"monotone"}
    (bad,) = [c for c in checks if not c.passed]
    assert bad.metric == "rank1" and "rises by 10.0 points at 8/255" in bad.detail


def test_rise_within_two_queries_is_tolerated():
    results, probes = healthy()
    results[-2]["value"] = 0.5 + 1.5 / N
    assert not failures(results, probes)[0]


def test_eps_zero_differing_from_clean_is_flagged():
    results, probes = healthy()
    probes[1]["value"] = 0.8 + 1e-9
    assert failures(results, probes)[0] == {"eps0-clean"}


def test_pgd_weaker_than_fgsm_is_flagged():
    results, probes = healthy()
    probes[3]["value"] = 0.3  # FGSM rank1 at 4/255 below PGD's 0.5
    assert failures(results, probes)[0] == {"pgd<=fgsm"}


def test_large_eps_far_from_chance_is_flagged_as_masking():
    results, probes = healthy()
    probes[2]["value"] = 0.4
    failed, checks = failures(results, probes)
    assert failed == {"large-eps"}
    assert "gradient masking" in sanity.summary(checks)


def test_written_checks_read_back(tmp_path):
    _, checks = failures(*healthy())
    sanity.write(checks, tmp_path / "sanity.csv")
    assert sanity.read(tmp_path / "sanity.csv") == checks


def _chance_by_loop(qp, gp, qc, gc):
    values = []
    for i in range(len(qp)):
        kept = ~((gp == qp[i]) & (gc == qc[i]))
        matches = ((gp == qp[i]) & (gc != qc[i])).sum().item()
        if matches:
            values.append(matches / kept.sum().item())
    return sum(values) / len(values)


@pytest.mark.parametrize("seed", [0, 1])
def test_chance_rank1_is_a_random_rankings_expected_rank1(seed):
    gen = torch.Generator().manual_seed(seed)
    qp, gp = torch.randint(0, 8, (30,), generator=gen), torch.randint(0, 10, (200,), generator=gen)
    qc, gc = torch.randint(0, 3, (30,), generator=gen), torch.randint(0, 3, (200,), generator=gen)
    chance = chance_rank1(qp, gp, qc, gc)
    assert chance == pytest.approx(_chance_by_loop(qp, gp, qc, gc), rel=1e-9)
    trials = [evaluate_rank(torch.rand(30, 200, generator=gen), qp, gp, qc, gc).cmc_at(1) for _ in range(400)]
    assert sum(trials) / len(trials) == pytest.approx(chance, abs=0.01)


@pytest.mark.parametrize(
    "table_path",
    [
        "results/baseline/ci-synthreid/results.csv",
        "tests/data/older/ci-synthreid-90633cb/results.csv",  # an older schema, upgraded on reading
    ],
)
def test_the_clean_lookup_finds_what_an_equality_filter_finds(table_path):
    """`clean_values` (one dict for all lookups) against the filter it replaced, on committed tables:
    every attacked row's clean value, and none for a model that was never run clean."""
    from pathlib import Path

    from robustbench_lfm.identity import canonical
    from robustbench_lfm.store import ResultStore

    df = canonical(ResultStore(Path(__file__).resolve().parents[1] / table_path).read())  # older tables upgraded
    clean, attacked = df[df["attack"] == "none"], df[df["attack"] != "none"]
    lookup = sanity.clean_values(clean)
    found = 0
    for _, r in attacked.iterrows():
        sel = clean[clean["metric"] == r["metric"]]
        for column in sanity.CLEAN_KEY:
            sel = sel[sel[column] == r[column]]
        expected = float(sel["value"].iloc[0]) if len(sel) else None
        assert sanity._clean_value(lookup, r.to_dict(), r["metric"]) == expected
        found += expected is not None
    assert found > 0
    stranger = {**attacked.iloc[0].to_dict(), "model": "never-run"}
    assert sanity._clean_value(lookup, stranger, str(stranger["metric"])) is None
