"""The report's figures as a reader meets them: a title that fits its figure, a scatter on fixed
axes where no model hides behind another, error bars said and drawn only where they exist."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from robustbench_lfm.identity import labelled
from robustbench_lfm.plotting import fitted_title
from robustbench_lfm.report import figures
from robustbench_lfm.summary import error_bar_note

BASELINE = Path(__file__).parent.parent / "results" / "baseline" / "ci-synthreid" / "results.csv"


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


def test_the_eps_figure_keeps_its_panels_wide_beside_a_long_legend(monkeypatch, tmp_path):
    """rcm-cifar's twelve models under two attacks: 24 long legend labels. An axes legend made
    tight_layout squeeze the panels to slivers, or give up with a warning that every run printed;
    the legend now stands outside the layout, as the CMC figure's does."""
    import warnings

    from robustbench_lfm import summary

    backbones = ("resnet18", "preact-resnet18", "vgg16", "alexnet")
    models = [f"{m}:backbone={b}" for b in backbones for m in ("plain", "rcm-up", "rcm-stride")]
    baseline = pd.read_csv(BASELINE, keep_default_na=False)  # a real run's rows: clean and PGD
    one = baseline[baseline["model"] == "plain"]
    frames = []
    for model in models:
        for attack, label in (("pgd", "pgd:steps=20,step_size=0.00784313725490196"), ("autoattack", "autoattack")):
            rows = one.assign(model=model, cell_id=one["cell_id"] + model + attack)
            attacked = rows["attack"] != "none"
            rows.loc[attacked, "attack"], rows.loc[attacked, "attack_label"] = attack, label
            frames.append(rows if attack == "pgd" else rows[attacked])
    frame = pd.concat(frames, ignore_index=True)
    kept: list = []
    monkeypatch.setattr(summary, "save_figure", lambda fig, path, **options: kept.append(fig))
    monkeypatch.setattr(summary.plt, "close", lambda fig: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Tight layout not applied" fails here
        summary.plot_eps_curves(frame, tmp_path / "robustness.png")
    (fig,) = kept
    panels = [ax for ax in fig.axes if ax.get_visible()]
    widths = [ax.get_position().width * fig.get_figwidth() for ax in panels]
    assert len(panels) == 2 and min(widths) > 3.5  # inches of a 4.8-inch panel, beside a legend wider than that
    (legend,) = fig.legends
    assert len(legend.get_texts()) == 24 and {t.get_text() for t in legend.get_texts()} >= {
        "rcm-stride:backbone=preact-resnet18 (pgd:steps=20,step_size=2/255)"
    }
    plt.close(fig)


def test_a_figure_saved_in_two_formats_is_cropped_as_matplotlib_crops_each(tmp_path):
    """`save_figure(..., also=...)` measures the tight crop once for the PNG and the PDF: the PNG is
    what matplotlib's own `bbox_inches="tight"` writes, pixel for pixel; the PDF's page is its own
    within half a point (the crop is measured with the raster's text metrics)."""
    import re

    from PIL import Image

    from robustbench_lfm.plotting import save_figure
    from robustbench_lfm.summary import plot_eps_curves

    baseline = pd.read_csv(BASELINE, keep_default_na=False)
    ours = plot_eps_curves(baseline, tmp_path / "ours.png", also=[tmp_path / "ours.pdf"])
    assert ours == tmp_path / "ours.png" and (tmp_path / "ours.png").stat().st_size > 10_000
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.set_title("a title wider than its axes, which the crop must keep whole")
    ax.plot([0, 1], label="a legend outside the axes")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    save_figure(fig, tmp_path / "mine.png", dpi=150, also=[tmp_path / "mine.pdf"])
    for suffix in (".png", ".pdf"):
        fig.savefig(tmp_path / f"theirs{suffix}", dpi=150, bbox_inches="tight")
    plt.close(fig)
    mine, theirs = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in ("mine", "theirs"))
    assert mine.shape == theirs.shape and (mine == theirs).all()

    def page(name: str) -> np.ndarray:
        (box,) = re.findall(rb"/MediaBox \[([^\]]*)\]", (tmp_path / name).read_bytes())
        return np.array(box.split(), dtype=float)

    assert np.abs(page("mine.pdf") - page("theirs.pdf")).max() <= 0.5  # points
    assert page("ours.pdf")[2] > 300  # the eps figure's two panels and legend, in points
