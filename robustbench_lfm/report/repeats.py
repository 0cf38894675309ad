"""The spread over repeated scoring of a model random in eval mode (`--score-repeats`).

A model whose eval-mode output is random (dropout left active, a randomized defence) is scored in
several passes, each a fresh forward of the same clean and adversarial images (Athalye et al.,
ICML 2018, score randomized defences by their expected outcome); results.csv holds the mean in
`value` and the standard deviation over the passes in `score_sd`. This section shows both for each
headline metric, so a reader sees how far one pass could have moved the number.

Reads only the CSV (no torch).
"""

from __future__ import annotations

import html

import pandas as pd

from robustbench_lfm import metric_table
from robustbench_lfm.report.tables import FormattedTable, render_html, render_latex, render_markdown

TITLE = "Scoring repeated over the model's randomness"


def repeated_table(results: pd.DataFrame) -> FormattedTable | None:
    """Rows = (model, seed, condition) scored in more than one pass; per headline metric the mean
    and the standard deviation over the passes (%). None when every cell was scored once."""
    rows = results[pd.to_numeric(results["score_repeats"]) > 1]
    if rows.empty:
        return None
    labels = {name: metric_table.label(name) for name in metric_table.headline_names(rows["task"].unique())}
    rows = rows[rows["metric"].isin(labels)]
    index = ["row", "train_seed", "condition", "score_repeats"]
    mean = rows.pivot_table(index=index, columns="metric", values="value", aggfunc="first", sort=False)
    sd = rows.pivot_table(index=index, columns="metric", values="score_sd", aggfunc="first", sort=False)
    text = pd.DataFrame(index=mean.index)
    for name, label in labels.items():
        if name in mean:
            text[f"{label} mean"] = (100 * mean[name]).map("{:.1f}".format)
            text[f"{label} sd"] = (100 * pd.to_numeric(sd[name])).map("{:.1f}".format)
    text.index = pd.Index(
        [f"{row} seed {seed}, {condition}, {passes} passes" for row, seed, condition, passes in text.index],
        name="cell",
    )
    legend = (
        "a model random in eval mode, each cell scored in several passes (fresh forwards of the same clean and "
        "adversarial images); mean = the value every other table shows, sd = the standard deviation over the "
        "passes (n - 1), both in %; the attacks averaged their gradients over eot passes (attack options)"
    )
    return FormattedTable(text, pd.DataFrame(False, index=text.index, columns=text.columns), legend)


def sections(results: pd.DataFrame) -> dict[str, str]:
    """The section per format (`md`, `tex`, `html`); empty when no cell was scored more than once."""
    table = repeated_table(results)
    if table is None:
        return {"md": "", "tex": "", "html": ""}
    return {
        "md": f"## {TITLE}\n\n{render_markdown(table)}\n",
        "tex": render_latex(table, TITLE),
        "html": f"<h2>{html.escape(TITLE)}</h2>{render_html(table)}",
    }
