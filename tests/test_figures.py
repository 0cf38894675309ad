"""The report's figures as a reader meets them: a title that fits its figure, a scatter on fixed
axes where no model hides behind another, error bars said and drawn only where they exist."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import pytest

from robustbench_lfm.identity import labelled
from robustbench_lfm.plotting import fitted_title
from robustbench_lfm.report import figures
from robustbench_lfm.summary import error_bar_note


def test_a_long_title_is_wrapped_to_its_figures_width():
    fig = plt.figure(figsize=(4.8, 3.6))
    text = "digits: clean (eps 0) and attacked inputs (--n-eval subset 64/454)\nbars: 95% Wilson interval over the"
    wrapped = fitted_title(text + " test images (one seed)", fig)
    plt.close(fig)
    width = int(4.8 * 72 / (0.55 * 12))
    assert all(len(line) <= width for line in wrapped.splitlines()) and len(wrapped.splitlines()) > 2
    assert wrapped.split() == (text + " test images (one seed)").split()  # every word kept, in order


def _rows(points: dict[str, tuple[float, float]], seeds: int = 1) -> pd.DataFrame:
    """Clean and PGD Rank-1 of each model at (clean, attacked), as result rows."""
    rows = []
    for model, (clean, attacked) in points.items():
        for attack, eps, value in (("none", 0.0, clean), ("pgd", 8 / 255, attacked)):
            for seed in range(seeds):
                rows.append({"task": "reid", "dataset": "synthreid", "model": model, "backbone": "resnet-mini",
                             "attack": attack, "attack_label": attack, "eps": eps, "metric": "rank1",
                             "value": value + 0.01 * seed, "n_eval": 277, "rerank": "", "train_seed": seed,
                             "eval_subset": ""})  # fmt: skip
    return labelled(pd.DataFrame(rows))


@pytest.fixture
def drawn(monkeypatch):
    """The figures `figures._save` would have written, kept open to be read."""
    kept: list = []
    monkeypatch.setattr(figures, "_save", lambda fig, stem: kept.append(fig) or [])
    yield kept
    for fig in kept:
        plt.close(fig)


def test_the_scatter_has_fixed_equal_axes_and_no_model_hides_behind_another(drawn, tmp_path):
    figures.scatter(_rows({"plain": (0.86, 0.30), "lfm": (0.862, 0.302), "dropout": (0.70, 0.10)}), tmp_path / "s")
    (fig,) = drawn
    ax = fig.axes[0]
    assert ax.get_xlim() == (0, 100) and ax.get_ylim() == (0, 100)  # a 2-point gap stays 2 points wide
    sizes = [line.get_markersize() for line in ax.get_lines() if line.get_marker() not in ("None", None, "")]
    assert len(set(sizes)) >= 2  # lfm, on top of plain, is drawn as a ring around it
    notes = [t.get_text() for t in ax.texts]
    assert notes == ["plain, lfm"]  # and both are named at that spot; dropout, alone, is not


def test_the_coincident_points_are_counted_within_one_point():
    points = [(86.0, 30.0), (86.2, 30.2), (70.0, 10.0), (86.5, 29.9)]
    assert figures._coincident_rank(points) == [0, 1, 0, 2]
    assert figures._shared_spots(points, ["a", "b", "c", "a"]) == {(86.0, 30.0): ["a", "b"]}


def test_the_error_bar_note_names_what_has_no_interval():
    one = _rows({"plain": (0.8, 0.3)})
    assert error_bar_note(one, ["rank1"]) == "bars: 95% Wilson interval over the queries (one seed)"
    assert error_bar_note(one, ["rank1", "mAP"]).endswith("; none for mAP")  # the eps figure draws both
    assert error_bar_note(_rows({"plain": (0.8, 0.3)}, seeds=3)) == "bars: ± std over 3 seeds"
