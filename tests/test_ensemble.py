"""auto-reid: each query at its worst over a fixed ensemble of metric attacks (robustbench_lfm/attacks/ensemble.py)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from robustbench_lfm import attacks
from robustbench_lfm.attacks.ensemble import MEMBERS, MEMBERS_TEXT
from robustbench_lfm.cli import main
from robustbench_lfm.metrics import evaluate_rank, worst_case
from robustbench_lfm.spec import AttackSpec
from tests.conftest import TINY_CLI


def _gallery(n_q: int = 12, n_g: int = 40, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q_pids, g_pids = torch.arange(n_q) % 6, torch.arange(n_g) % 8
    return q_pids, g_pids, torch.zeros(n_q, dtype=torch.long), torch.ones(n_g, dtype=torch.long), g


def test_worst_case_is_each_query_scored_on_its_worst_member_s_distances():
    """When one member is worst for a query on every metric (its true matches pushed back), the
    ensemble equals evaluate_rank of a matrix taking each query's row from that member."""
    q_pids, g_pids, q_cams, g_cams, g = _gallery()
    a = torch.rand(12, 40, generator=g)
    b = a + 2.0 * (q_pids[:, None] == g_pids[None]) * torch.rand(12, 40, generator=g)  # matches moved back
    worse_in_b = torch.arange(12) % 2 == 0
    c = torch.where(worse_in_b[:, None], a, a + 2.0 * (q_pids[:, None] == g_pids[None]))  # odd rows: c is worse
    mixed = torch.where(worse_in_b[:, None], b, c)
    scored = [evaluate_rank(m, q_pids, g_pids, q_cams, g_cams) for m in (b, c)]
    oracle = evaluate_rank(mixed, q_pids, g_pids, q_cams, g_cams)
    got = worst_case(scored)
    assert torch.equal(got.first_match, oracle.first_match) and torch.allclose(got.ap, oracle.ap)
    assert torch.allclose(got.cmc, oracle.cmc) and got.mAP == pytest.approx(oracle.mAP)
    assert got.mINP == pytest.approx(oracle.mINP)
    for member in scored:  # never above any member, on any metric
        assert got.mAP <= member.mAP and got.mINP <= member.mINP and bool((got.cmc <= member.cmc).all())


def test_worst_case_takes_rank_and_ap_from_different_members():
    """A query can have its worst first match under one member and its worst AP under another."""
    q_pids, g_pids, q_cams, g_cams, _ = _gallery(1, 4)
    g_pids = torch.tensor([0, 0, 1, 2])  # two true matches
    early_then_last = torch.tensor([[0.0, 3.0, 1.0, 2.0]])  # matches at ranks 1 and 4: AP (1 + 2/4) / 2
    second_and_third = torch.tensor([[2.0, 1.0, 0.0, 3.0]])  # ranks 2 and 3: AP (1/2 + 2/3) / 2
    one, two = (evaluate_rank(d, q_pids, g_pids, q_cams, g_cams) for d in (early_then_last, second_and_third))
    got = worst_case([one, two])
    assert int(got.first_match[0]) == 2 and float(got.cmc[0]) == 0.0  # rank from `two`
    assert float(got.ap[0]) == pytest.approx(min(0.75, (0.5 + 2 / 3) / 2))  # AP from whichever is lower
    with pytest.raises(ValueError, match="at least one"):
        worst_case([])


def test_the_members_are_fixed_recorded_and_both_geometries():
    spec = AttackSpec.create("auto-reid")
    assert json.loads(spec.params_json())["members"] == MEMBERS_TEXT and spec.label == "auto-reid"
    geometries = {dict(options).get("geometry") for name, options in MEMBERS if name in ("sma", "fna")}
    assert geometries == {"cosine", "euclidean"}
    assert all(dict(o).get("side", "query") == "query" for _, o in MEMBERS)  # per query: query-side only
    with pytest.raises(ValueError, match="the members are fixed"):
        AttackSpec.create("auto-reid", {"members": "sma"}).build(0)
    l2 = attacks.create_attack("auto-reid", norm="l2")
    assert {o["norm"] for _, o in l2.member_options()} == {"l2"}  # one norm, one budget


def _args(out, cache, attack_list: str) -> list[str]:
    return ["run", "--models", "lfm", "--no-baseline", "--attacks", attack_list, "--eps", "8/255", "--distance",
            "euclidean", "--dataset", TINY_CLI, "--epochs", "2", "--n-eval", "8", "-q", "--out", str(out),
            "--cache-dir", str(cache)]  # fmt: skip


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """lfm under auto-reid and three of its members alone (SMA and FNA in Euclidean geometry,
    metric-MI-FGSM), scored in Euclidean distance; and the three alone in a run of their own, where
    no ensemble crafts their queries (robustbench_lfm/shared_runs.py shares them in the first)."""
    root = tmp_path_factory.mktemp("ensemble")
    alone = ",".join(AttackSpec.create(name, dict(options)).label for name, options in MEMBERS[1::2])
    for run, attack_list in (("run", f"auto-reid,{alone}"), ("alone", alone)):
        result = CliRunner().invoke(main, _args(root / run, root / "cache", attack_list))
        assert result.exit_code == 0, result.output
    read = {t: pd.read_csv(root / "run" / f"{t}.csv", keep_default_na=False) for t in ("results", "queries", "members")}
    apart = pd.read_csv(root / "alone" / "queries.csv", keep_default_na=False)
    return {**read, "apart": apart, "run": root / "run", "cache": root / "cache"}


def test_each_member_in_the_ensemble_is_the_same_attack_run_alone(sweep):
    """Each member's per-query outcome equals that attack's run alone, crafted apart (another run);
    in the run with both, the attack alone takes its member's queries: the same outcomes again."""
    results, queries, members, apart = sweep["results"], sweep["queries"], sweep["members"], sweep["apart"]
    cells = results.drop_duplicates("cell_id").set_index("attack_label")
    ensemble = cells.loc["auto-reid", "cell_id"]
    ours = members[members["cell_id"] == ensemble]
    assert sorted(ours["member"].unique()) == sorted(AttackSpec.create(n, dict(o)).label for n, o in MEMBERS)
    compared = 0
    for label, rows in ours[ours["member"].isin(cells.index)].groupby("member"):
        for source in (apart, queries):  # crafted apart, and shared with the member
            run_alone = source[source["cell_id"] == cells.loc[label, "cell_id"]].set_index("query")
            assert len(run_alone) == 8, label
            got = rows.set_index("query").loc[run_alone.index]
            assert ((got["first_match"] == 1).astype(int) == run_alone["hit"]).all(), label
            assert (got["ap"] - run_alone["ap"]).abs().max() < 1e-6, label
            compared += 1
    assert compared == 6


def test_the_ensemble_scores_each_query_at_its_worst_and_is_never_weaker(sweep):
    results, queries, members = sweep["results"], sweep["queries"], sweep["members"]
    ensemble = results.loc[results["attack"] == "auto-reid", "cell_id"].iloc[0]
    scored = queries[queries["cell_id"] == ensemble].set_index("query")
    ours = members[members["cell_id"] == ensemble]
    assert (scored["ap"] - ours.groupby("query")["ap"].min()).abs().max() < 1e-6
    assert ((ours.groupby("query")["first_match"].max() == 1).astype(int) == scored["hit"]).all()
    value = results.pivot_table(index="attack_label", columns="metric", values="value")
    assert len(value) == 5  # clean, auto-reid and three members alone
    for metric in ("rank1", "rank5", "rank10", "mAP", "mINP"):
        assert (value.loc["auto-reid", metric] <= value.drop(index=["auto-reid", "none"])[metric] + 1e-9).all()
    row = results[results["attack"] == "auto-reid"].iloc[0]
    assert row["objective"] == "worst-case" and row["perturbed"] == "query" and row["distance"] == "euclidean"
    assert float(row["projected"]) <= 1e-5  # each member's output checked against the budget


def test_the_report_says_which_member_decided_and_refuses_members_that_disagree(sweep, tmp_path):
    import shutil

    from robustbench_lfm.report import ReportError, build_report

    run = tmp_path / "run"
    shutil.copytree(sweep["run"], run)
    report = build_report(run).markdown.read_text()
    assert "## Worst-case ensemble: which member decided" in report
    for name, options in MEMBERS:
        assert f"| {AttackSpec.create(name, dict(options)).label} " in report
    members = pd.read_csv(run / "members.csv", keep_default_na=False, dtype=str)
    query = members.loc[pd.to_numeric(members["ap"]).idxmin(), "query"]  # a query whose worst AP is below 1
    members.loc[members["query"] == query, "ap"] = "1.0"  # every member's AP raised: no longer the cell's worst
    members.to_csv(run / "members.csv", index=False)
    with pytest.raises(ReportError, match=r"ensemble cell \w+ query \d+: its outcome in queries.csv is not the worst"):
        build_report(run)


def test_an_ensemble_cell_without_its_members_rows_is_recomputed(sweep, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(sweep["run"], run)
    (run / "members.csv").unlink()
    with pytest.warns(UserWarning, match=r"1 recorded cell\(s\) .*\(an ensemble cell its members.csv rows\)"):
        result = CliRunner().invoke(main, _args(run, sweep["cache"], "auto-reid"))
    assert result.exit_code == 0, result.output
    rebuilt = pd.read_csv(run / "members.csv", keep_default_na=False)
    original = sweep["members"]
    assert len(rebuilt) == len(original) and set(rebuilt["member"]) == set(original["member"])


def test_an_attack_alone_that_is_a_member_is_crafted_once_with_the_numbers_of_either_run_apart(tmp_path, monkeypatch):
    """The lfm-paper preset's `sma:steps=15,step_size=1/255` (SMA's default schedule, written out, in
    the scored geometry) beside auto-reid under the default cosine distance is auto-reid's cosine
    SMA: its queries are crafted once, at the sweep's eps and at the large-eps probe, and every
    number equals the runs apart (values, `projected`, members.csv). Another step size is another
    run; under Euclidean distance `sma` is the Euclidean member. The estimate counts a shared run
    once, and a measured rate takes the cells that shared one together."""
    from collections import Counter

    from robustbench_lfm import estimate
    from robustbench_lfm.options import RunOptions
    from robustbench_lfm.shared_runs import run_key
    from robustbench_lfm.spec import build_spec

    crafted: Counter = Counter()
    call = attacks.Attack.__call__

    def spied(self, model, x, context, *, eps, generator=None):
        crafted[self.name, getattr(self, "geometry", None), round(eps * 255)] += 1
        return call(self, model, x, context, eps=eps, generator=generator)

    monkeypatch.setattr(attacks.Attack, "__call__", spied)
    cache = tmp_path / "cache"
    paper, other = "sma:step_size=1/255,steps=15", "sma:step_size=2/255"  # as labels write them

    def run(out: str, attack_list: str) -> dict[str, pd.DataFrame]:
        args = ["run", "--models", "plain", "--no-baseline", "--attacks", attack_list, "--eps", "8/255",
                "--dataset", TINY_CLI, "--epochs", "1", "--n-eval", "6", "-q", "--out", str(tmp_path / out),
                "--cache-dir", str(cache)]  # fmt: skip
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        tables = [t for t in ("results", "probes", "members") if (tmp_path / out / f"{t}.csv").is_file()]
        return {t: pd.read_csv(tmp_path / out / f"{t}.csv", keep_default_na=False, dtype=str) for t in tables}

    both = run("both", f"auto-reid,{paper},{other}")
    probe = max(eps for *_, eps in crafted)
    assert probe > 8
    for eps in (8, probe):
        assert crafted["sma", "cosine", eps] == 1  # auto-reid's member, which `paper` took
        assert crafted["sma", None, eps] == 1  # `other` alone: its own run
    crafted.clear()
    apart = [run("ensemble", "auto-reid"), run("alone", f"{paper},{other}")]
    assert crafted["sma", None, 8] == 2 and crafted["sma", "cosine", 8] == 1  # each crafted in its own run
    for table in ("results", "probes", "members"):
        key = ["cell_id", "rerank", "metric"] if table != "members" else ["cell_id", "rerank", "member", "query"]
        columns = ["first_match", "ap"] if table == "members" else ["value", "projected", "steps", "step_size"]
        mine = both[table].sort_values(key).reset_index(drop=True)
        theirs = pd.concat([a[table] for a in apart if table in a]).drop_duplicates(key)
        theirs = theirs.sort_values(key).reset_index(drop=True)
        assert len(mine) > 0
        pd.testing.assert_frame_equal(mine[key + columns], theirs[key + columns], check_dtype=False)

    def spec_of(attack_list: str, distance: str = "cosine"):
        return build_spec(RunOptions(dataset=TINY_CLI, models="plain", no_baseline=True, attacks=attack_list,
                                     eps="8/255", distance=distance, epochs=1, n_eval=6, out=tmp_path / "r",
                                     cache_dir=cache))  # fmt: skip  # the runs' options: their cell ids

    def key_of(spec, label: str) -> str | None:
        return run_key(spec, next(c for c in spec.cells() if c.attack is not None and c.attack.label == label))

    for scored, unscored in (("cosine", "euclidean"), ("euclidean", "cosine")):  # the scored geometry, named
        spec = spec_of(f"sma,sma:geometry={scored},sma:geometry={unscored}", scored)
        assert key_of(spec, "sma") == key_of(spec, f"sma:geometry={scored}") != key_of(spec, f"sma:geometry={unscored}")
    shape = estimate.Shape(6, 40, (32, 16), 100, 12)
    nothing_done: dict[str, set[str]] = {"results": set(), "probes": set()}
    work = {a: sum(estimate.pending_work(spec_of(a), shape, nothing_done).cells.values())
            for a in ("auto-reid", f"auto-reid,{paper}", f"auto-reid,{other}")}  # fmt: skip
    assert work[f"auto-reid,{paper}"] == pytest.approx(work["auto-reid"])
    assert work[f"auto-reid,{other}"] > work["auto-reid"] * 1.1  # its own 15 steps, at eps and at the probe
    spec = spec_of(f"auto-reid,{paper},{other}")
    rows = both["results"].to_dict("records")
    cells = {c.attack.label: c for c in spec.cells() if c.attack is not None}
    rates = estimate.measured_rates(spec, {}, rows, shape)["cell"][cells["auto-reid"].model.backbone]
    walls = both["results"].drop_duplicates("cell_id").set_index("attack_label")["wall_s"].astype(float)
    pair = [cells["auto-reid"], cells[paper]]
    assert len(rates) == 2  # the pair that shared a run, measured together, then `other`
    assert rates[0] == pytest.approx((walls["auto-reid"] + walls[paper]) / estimate.cells_work(spec, pair, shape))


def test_the_gpu_bench_prices_the_paper_s_sma_as_auto_reid_s_cosine_member(monkeypatch):
    """scripts/bench_gpu.py prices `--preset lfm-paper`'s attacks as the sweep runs them: auto-reid's
    members at 5/255 and their large-eps probes; the paper's SMA-15 is the cosine member, crafted once."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_gpu", bench)  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    ensemble = attacks.create_attack("auto-reid", seed=0)
    members = sum(
        attacks.create_attack(n, seed=0, **o).schedule_for(5 / 255, "reid")[0] for n, o in ensemble.member_options()
    )
    assert members == 72 and bench.preset_attack_steps() == 2 * members  # 174 when SMA-15 was crafted again
