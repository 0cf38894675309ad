"""The board's HTML: the index (every leaderboard, its setting, why it stands apart, the runs) and
one page per model entry (its provenance and figures).

Every text that comes from a run directory (model names, options, paths, commands, sanity
details) goes through `esc` (html.escape, quotes included), so a model named `<script>` prints as
text. The pages load only the site's own stylesheet and script (assets/), so they work from
file:// with no network. Torch-free.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from robustbench_lfm.board.settings import FIELDS, Board, neighbours
from robustbench_lfm.board.table import CLEAN, Entry, LeaderTable

NO_COMMAND = "not recorded (a run made before lfm-bench recorded its command, or through the Python API)"


def esc(value: object) -> str:
    """`value` as HTML text: every markup character escaped, quotes included."""
    return html.escape(str(value), quote=True)


def page(title: str, body: str, depth: int = 0) -> str:
    """A whole page linking the site's stylesheet and script (`depth` folders below the site root)."""
    up = "../" * depth
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)}</title><link rel='stylesheet' href='{up}assets/board.css'>"
        f"<script defer src='{up}assets/board.js'></script></head>\n<body>\n{body}\n</body></html>\n"
    )


def _setting(board: Board) -> str:
    rows = "".join(f"<dt>{esc(name)}</dt><dd>{esc(value or '(empty)')}</dd>" for name, value in board.key)
    return f"<dl class='setting'>{rows}</dl>"


def _cell(table: LeaderTable, entry: Entry, index: int) -> str:
    column = table.columns[index]
    cell = table.cells.get((entry.id, index))
    flags = {"worst": column.worst_case, "best": (entry.id, index) in table.bold, "missing": cell is None}
    classes = " ".join(name for name, on in flags.items() if on)
    attrs = f" data-attack='{esc(column.attack)}'" + (f" class='{classes}'" if classes else "")
    if cell is None:
        return f"<td{attrs} data-value=''>-</td>"
    text = f"{100 * cell.mean:.1f}"
    if np.isfinite(cell.spread):
        text += f" ± {100 * cell.spread:.1f}"
        if cell.n_seeds == 1 and table.mixed:
            text += "†"
    if np.isfinite(cell.delta) and abs(cell.delta) >= 0.0005:  # the change against plain, as the report shows it
        text += f" ({100 * cell.delta:+.1f})"
    return f"<td{attrs} data-value='{cell.mean:.6f}'>{esc(text)}</td>"


def leaderboard(table: LeaderTable, entry_href: str = "models/") -> str:
    """The <table> of one board, sortable and filterable (assets/board.js)."""
    head = (
        "<th class='sortable text' data-type='text' tabindex='0'>model</th>"
        "<th class='sortable text' data-type='text' tabindex='0'>regularizer</th>"
        "<th class='sortable text' data-type='text' tabindex='0'>backbone</th>"
        "<th class='sortable' data-type='num' tabindex='0'>seeds</th>"
    )
    head += "".join(
        f"<th class='sortable{' worst' if c.worst_case else ''}' data-type='num' tabindex='0' "
        f"data-attack='{esc(c.attack)}'>{esc(c.label)}{' (worst case)' if c.worst_case else ''}</th>"
        for c in table.columns
    )
    body = []
    for e in table.entries:
        cells = "".join(_cell(table, e, i) for i in range(len(table.columns)))
        body.append(
            f"<tr data-model='{esc(e.label)}' data-regularizer='{esc(e.regularizer)}' "
            f"data-backbone='{esc(e.backbone)}'>"
            f"<td class='text'><a href='{entry_href}{esc(e.id)}.html'>{esc(e.label)}</a></td>"
            f"<td class='text'>{esc(e.regularizer)}</td><td class='text'>{esc(e.backbone)}</td>"
            f"<td data-value='{len(e.seeds)}'>{len(e.seeds)}</td>{cells}</tr>"
        )
    return (
        f"<div class='scroll'><table class='leaderboard' id='t-{esc(table.board.id)}'>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _options(name: str, values: Iterable[str], label: str) -> str:
    opts = "".join(f"<option value='{esc(v)}'>{esc(v)}</option>" for v in sorted(set(values)))
    return f"<label>{esc(label)} <select id='filter-{name}'><option value=''>any</option>{opts}</select></label>"


def filters(tables: list[LeaderTable]) -> str:
    """The filter bar: a model text box and regularizer, backbone and attack menus."""
    entries = [e for t in tables for e in t.entries]
    attacks = [c.attack for t in tables for c in t.columns if c.attack != CLEAN]
    return (
        "<nav class='filters'><label>model <input id='filter-model' type='search' placeholder='name contains'></label>"
        f"{_options('regularizer', (e.regularizer for e in entries), 'regularizer')}"
        f"{_options('backbone', (e.backbone for e in entries), 'backbone')}"
        f"{_options('attack', attacks, 'attack')}<output id='filter-count'></output></nav>"
    )


@dataclass
class IndexContent:
    """What the index shows besides the tables: the runs, those left out, the figures per board."""

    runs: list[str]
    refused: list[str]
    figures: dict[str, str] = field(default_factory=dict)  # board id -> figure path (relative)


def _why_apart(table: LeaderTable, boards: list[Board]) -> str:
    near = neighbours(table.board, boards)
    if not near:
        return ""
    parts = [f"<a href='#b-{esc(b.id)}'>{esc(b.title)}</a> (differs in {esc(', '.join(d))})" for b, d in near]
    return f"<p class='why'>Not one board with: {'; '.join(parts)}.</p>"


def _board_section(table: LeaderTable, boards: list[Board], figure: str | None) -> str:
    b = table.board
    attacks = " ".join(sorted({c.attack for c in table.columns if c.attack != CLEAN}))
    notes = "".join(f"<p class='note warn'>{esc(c)}</p>" for c in table.conflicts)
    if table.versioned:
        notes += (f"<p class='note'>{esc(', '.join(table.versioned))}: made by two or more versions of its code "
                  "(CSV `code` of the clean cells): one row per version, never averaged.</p>")  # fmt: skip
    runs = ", ".join(esc(r) for r in table.runs)
    fig = (f"<figure><img src='{esc(figure)}' alt='clean against robust, {esc(b.title)}'>"
           "<figcaption>clean against attacked headline metric (report figure `scatter`)</figcaption></figure>"
           if figure else "")  # fmt: skip
    return (
        f"<section class='board' id='b-{esc(b.id)}' data-attacks='{esc(attacks)}'>"
        f"<h2>{esc(b.title)}</h2>{leaderboard(table)}<p class='legend'>{esc(table.legend)}</p>{notes}"
        f"<details><summary>setting</summary>{_setting(b)}</details>{_why_apart(table, boards)}"
        f"<p class='note'>runs: {runs}</p>{fig}</section>"
    )


def _board_list(tables: list[LeaderTable]) -> str:
    head = "".join(f"<th class='text'>{esc(n)}</th>" for n in ("board", "models", "seeds", "runs"))
    rows = "".join(
        f"<tr data-board='b-{esc(t.board.id)}'>"
        f"<td class='text'><a href='#b-{esc(t.board.id)}'>{esc(t.board.title)}</a></td>"
        f"<td>{len(t.entries)}</td><td>{max((len(e.seeds) for e in t.entries), default=0)}</td>"
        f"<td>{len(t.runs)}</td></tr>"
        for t in tables
    )
    return (
        f"<div class='scroll'><table class='boards'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"
    )


def _fields_that_vary(tables: list[LeaderTable]) -> str:
    varying = [f for f in FIELDS if len({t.board.fields.get(f) for t in tables}) > 1]
    if not varying:
        return "every board shares one setting"
    return "the boards differ in " + ", ".join(f"<code>{esc(f)}</code>" for f in varying)


def index(tables: list[LeaderTable], content: IndexContent) -> str:
    """The site's index.html."""
    boards = [t.board for t in tables]
    refused = (
        "<h2 id='left-out'>Run directories left out</h2><ul>"
        + "".join(f"<li class='fail'>{esc(r)}</li>" for r in content.refused)
        + "</ul>"
        if content.refused
        else ""
    )
    runs = "".join(f"<li><code>{esc(r)}</code></li>" for r in content.runs)
    body = (
        "<header><h1>lfm-bench leaderboards</h1>"
        f"<p class='lead'>{len(tables)} boards from {len(content.runs)} run directories. "
        "A board holds only numbers made under one setting: the same task, data and its options, scored data, "
        "training share, recipe, evaluation options, threat and budget. Cells in % (mean ± as each legend says); "
        f"click a column to sort; {_fields_that_vary(tables)}.</p></header>"
        f"{filters(tables)}<h2>Boards</h2>{_board_list(tables)}"
        + "".join(_board_section(t, boards, content.figures.get(t.board.id)) for t in tables)
        + f"<h2 id='runs'>Run directories</h2><ul>{runs}</ul>{refused}"
    )
    return page("lfm-bench leaderboards", body)


@dataclass
class Provenance:
    """What a model page shows besides its figures."""

    entry: Entry
    boards: list[Board]
    model: dict[str, Any]  # model-role values of the entry (label, backbone, regularizer, params, weights)
    recipe: dict[str, Any]
    plugins: list[str]
    checkpoints: pd.DataFrame  # train_seed, checkpoint_sha256, run, command
    sanity: pd.DataFrame
    figures: list[tuple[str, str]]  # (caption, path relative to the page)


def _rows_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p class='note'>none recorded</p>"
    head = "".join(f"<th class='text'>{esc(c)}</th>" for c in df.columns)
    rows = []
    for _, r in df.iterrows():
        tds = []
        for c in df.columns:
            value = r[c]
            cls = " class='pass'" if c == "passed" and str(value) == "True" else ""
            cls = " class='fail'" if c == "passed" and str(value) == "False" else cls
            tds.append(f"<td{cls}>{esc(value)}</td>")
        rows.append(f"<tr>{''.join(tds)}</tr>")
    body = "".join(rows)
    return f"<div class='scroll'><table class='rows'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def model_page(p: Provenance) -> str:
    """models/<entry id>.html: provenance, sanity verdicts and figures of one entry."""
    e = p.entry
    boards = "".join(f"<li><a href='../index.html#b-{esc(b.id)}'>{esc(b.title)}</a></li>" for b in p.boards)
    model = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v if v != '' else '(none)')}</dd>" for k, v in p.model.items())
    plugins = ", ".join(esc(x) for x in p.plugins) or "none (built-in registries)"
    recipe = "".join(f"<dt>{esc(k)}</dt><dd>{esc(json.dumps(v))}</dd>" for k, v in sorted(p.recipe.items()))
    figures = "".join(
        f"<figure><img src='{esc(path)}' alt='{esc(caption)}'><figcaption>{esc(caption)}</figcaption></figure>"
        for caption, path in p.figures
    )
    body = (
        f"<p><a href='../index.html'>all boards</a></p><h1>{esc(e.label)}</h1>"
        f"<p class='lead'>{esc(e.model)} on {esc(e.backbone)}, regularizer {esc(e.regularizer)}; "
        f"seeds {esc(', '.join(map(str, e.seeds)))}; code {esc(e.code or '(not recorded)')}.</p>"
        f"<h2>Boards</h2><ul>{boards}</ul>"
        f"<h2>Model</h2><dl class='setting'>{model}<dt>plugins</dt><dd>{plugins}</dd></dl>"
        f"<h2>Recipe</h2><dl class='setting'>{recipe}</dl>"
        f"<h2>Checkpoints and the runs that made them</h2>{_rows_table(p.checkpoints)}"
        f"<h2>Sanity checks</h2>{_rows_table(p.sanity)}"
        f"<h2>Figures</h2>{figures or '<p class=note>none</p>'}"
    )
    return page(f"{e.label}: lfm-bench board", body, depth=1)
