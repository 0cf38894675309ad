"""Which member decided each query of an ensemble cell (auto-reid; robustbench_lfm/attacks/ensemble.py).

From `members.csv` (each member's first-match rank and AP per query): per ensemble cell
(model, seed, budget, re-ranking mode), for each member, the queries it decided and its own
value alone. A member decides a query's Rank-k when it gives the query's worst (largest)
first-match rank, and its AP when it gives the lowest AP; when several members tie, the first in
the ensemble's order decides. The ensemble's Rank-1 and mAP are the per-query worst over members,
so a member that decides no query could be dropped without changing the numbers.

Reads only the CSVs (no torch).
"""

from __future__ import annotations

import html

import pandas as pd

from robustbench_lfm.identity import format_eps
from robustbench_lfm.report.tables import FormattedTable, render_html, render_latex, render_markdown


def decided(members: pd.DataFrame) -> pd.DataFrame:
    """Per (cell, rerank, member): queries whose worst rank (`rank_decided`) and worst AP
    (`ap_decided`) this member gave, among the queries where the members differ, and the member's
    own Rank-1 and mAP (fractions); `rank_equal` / `ap_equal`: the cell's queries on which every
    member gave the same outcome, which no member decided."""
    order = {m: i for i, m in enumerate(dict.fromkeys(members["member"]))}  # the ensemble's order, as written
    rows = members.assign(order=members["member"].map(order)).sort_values(["cell_id", "rerank", "query", "order"])
    key = ["cell_id", "rerank", "query"]
    by_query = rows.groupby(key)
    rank_equal = by_query["first_match"].transform("min") == by_query["first_match"].transform("max")
    ap_equal = by_query["ap"].transform("min") == by_query["ap"].transform("max")
    differ_rank, differ_ap = rows[~rank_equal], rows[~ap_equal]
    worst_rank = differ_rank.loc[differ_rank.groupby(key)["first_match"].idxmax()]  # idxmax: the first of tied maxima
    worst_ap = differ_ap.loc[differ_ap.groupby(key)["ap"].idxmin()]
    count = ["cell_id", "rerank", "member"]
    alone = rows.groupby(count).agg(rank1=("first_match", lambda r: float((r == 1).mean())), mAP=("ap", "mean"))
    out = alone.join(worst_rank.groupby(count).size().rename("rank_decided"), how="left")
    out = out.join(worst_ap.groupby(count).size().rename("ap_decided"), how="left").fillna(0)
    out["queries"] = rows.groupby(count).size()
    out["order"] = [order[m] for m in out.index.get_level_values("member")]
    cell = ["cell_id", "rerank"]
    n_members = len(order)
    out = out.reset_index()
    equal = pd.DataFrame({"rank_equal": rank_equal.groupby([rows[c] for c in cell]).sum() // n_members,
                          "ap_equal": ap_equal.groupby([rows[c] for c in cell]).sum() // n_members})  # fmt: skip
    out = out.merge(equal.reset_index(), on=cell, how="left")
    return out.astype({"rank_decided": int, "ap_decided": int, "rank_equal": int, "ap_equal": int})


def decided_tables(results: pd.DataFrame, members: pd.DataFrame) -> list[tuple[str, FormattedTable]]:
    """One table per ensemble cell: members as rows; Rank-1 and mAP alone (%) and the queries decided."""
    if members is None or members.empty:
        return []
    cells = results.drop_duplicates(["cell_id", "rerank"]).set_index(["cell_id", "rerank"])
    out = []
    for (cell, rerank), g in decided(members).groupby(["cell_id", "rerank"], sort=False):
        if (cell, rerank) not in cells.index:
            continue
        c = cells.loc[(cell, rerank)]
        g = g.sort_values("order")
        n = int(g["queries"].iloc[0])
        text = pd.DataFrame(
            {
                "Rank-1 alone": [*(100 * g["rank1"]).map("{:.1f}".format), "-"],
                "mAP alone": [*(100 * g["mAP"]).map("{:.1f}".format), "-"],
                "decided Rank-k": [*(f"{k}/{n}" for k in g["rank_decided"]), f"{int(g['rank_equal'].iloc[0])}/{n}"],
                "decided AP": [*(f"{k}/{n}" for k in g["ap_decided"]), f"{int(g['ap_equal'].iloc[0])}/{n}"],
            },
            index=pd.Index([*g["member"], "(every member alike)"], name="member"),
        )
        bold = pd.DataFrame(False, index=text.index, columns=text.columns)
        title = f"{c['model']} seed {c['train_seed']}, {c['attack_label']} {format_eps(float(c['eps']))}" + (
            f", re-ranked ({rerank})" if rerank else ""
        )
        legend = (
            f"each member run alone in this cell, % over {n} queries; a member decides a query when it gives "
            "its worst first-match rank (Rank-k) or lowest AP while another member gives a better one (the "
            "first in this order on ties); on the last row's queries every member gave the same outcome"
        )
        out.append((title, FormattedTable(text, bold, legend)))
    return out


def sections(results: pd.DataFrame, members: pd.DataFrame | None) -> dict[str, str]:
    """The report's ensemble section per format (`md`, `tex`, `html`); empty without ensemble cells."""
    tables = decided_tables(results, members) if members is not None else []
    if not tables:
        return {"md": "", "tex": "", "html": ""}
    title = "Worst-case ensemble: which member decided"
    return {
        "md": f"## {title}\n\n" + "".join(f"### {name}\n\n{render_markdown(t)}\n" for name, t in tables),
        "tex": "\n".join(render_latex(t, f"{title}: {name}") for name, t in tables),
        "html": f"<h2>{html.escape(title)}</h2>" + "".join(f"<h3>{html.escape(name)}</h3>{render_html(t)}"
                                                         for name, t in tables),
    }  # fmt: skip
