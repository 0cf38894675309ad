"""Which numbers may share a leaderboard: one board per comparable setting.

A board's key is every run-role column of the results schema (robustbench_lfm.identity.RUN: the
task, the data and its options, the data scored and its options, the training share, the recipe,
the evaluation options, the scoring passes and the --n-eval subset) plus the threat (the norm, or
`corruption` for the common corruptions) and the budget (eps; the corruptions' severities are
averaged, so they have one board per setting). The key comes from the schema's roles, so an option
added to the schema splits boards the day it is added. Clean cells belong to every board of their
setting. Two runs whose cells fall into two boards differ in at least one of these fields, and
`differences` names them. Torch-free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import pandas as pd

from robustbench_lfm.hashing import content_hash
from robustbench_lfm.identity import RUN, corrupted, format_eps

CORRUPTION = "corruption"  # the threat of a common-corruption board
THREAT = ("threat", "budget")
FIELDS = (*RUN, *THREAT)


@dataclass(frozen=True)
class Board:
    """One leaderboard: its key (FIELDS -> text) and id (a hash of the key); `suffix` tells apart two
    boards whose titles would read alike (`distinct_titles`)."""

    key: tuple[tuple[str, str], ...]
    suffix: str = field(default="", compare=False)

    @property
    def id(self) -> str:
        return content_hash(self.key, 10)

    @property
    def fields(self) -> dict[str, str]:
        return dict(self.key)

    @property
    def title(self) -> str:
        """`synthreid: L-inf 8/255`, `synthreid -> synthreid:domain=b: ...`, `digits: common corruptions`."""
        f = self.fields
        data = f["dataset"] if _same_data(f) else f"{f['dataset']} -> {f['test_dataset']}{_test_options(f)}"
        threat = {"linf": "L-inf", "l2": "L2", CORRUPTION: "common corruptions", "": "clean only"}.get(
            f["threat"], f["threat"]
        )
        budget = f" {f['budget']}" if f["budget"] and f["threat"] != CORRUPTION else ""
        return f"{data}: {threat}{budget}{self.suffix}"


def _short(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


def recipe_notes(recipes: dict[str, dict]) -> dict[str, str]:
    """recipe_key -> the recipe fields in which it differs from the other recipes given (`epochs=12`),
    so that a title says more than a hash."""
    notes = {}
    for key, recipe in recipes.items():
        peers = [r for r in recipes.values() if r.get("task") == recipe.get("task")]
        fields = sorted({k for r in peers for k in r if k != "source"})
        varying = [k for k in fields if len({json.dumps(r.get(k), sort_keys=True) for r in peers}) > 1]
        notes[key] = ", ".join(f"{k}={json.dumps(recipe.get(k))}" for k in varying)
    return notes


def distinct_titles(boards: list[Board], notes: dict[str, str] | None = None) -> list[Board]:
    """`boards` with a suffix naming the fields (and values) that tell apart boards of one title:
    `synthreid: L-inf 8/255 · recipe_key=7219b136bad8 (epochs=8)`; `notes` says what a recipe_key
    stands for (`recipe_notes`)."""
    notes = notes or {}
    out = []
    for board in boards:
        same = [b for b in boards if b.title == board.title]
        varying = [name for name in FIELDS if len({b.fields.get(name) for b in same}) > 1]
        parts = []
        for name in varying:
            value = board.fields[name]
            note = f" ({notes[value]})" if name == "recipe_key" and notes.get(value) else ""
            parts.append(f"{name}={_short(value or '(empty)')}{note}")
        out.append(replace(board, suffix=" · " + ", ".join(parts) if parts else ""))
    return out


def _same_data(f: dict[str, str]) -> bool:
    return f["dataset"] == f["test_dataset"] and f["data_params"] == f["test_data_params"]


def _test_options(f: dict[str, str]) -> str:
    """`:domain=b`, the scored data's options that differ from the training data's."""
    try:
        train, test = json.loads(f["data_params"] or "{}"), json.loads(f["test_data_params"] or "{}")
    except json.JSONDecodeError:
        return ""
    changed = {k: v for k, v in test.items() if train.get(k) != v}
    return ":" + ",".join(f"{k}={v}" for k, v in sorted(changed.items())) if changed else ""


def _threat(row: pd.Series, is_corrupted: bool) -> tuple[str, str]:
    if is_corrupted:
        return CORRUPTION, "severities 1-5"
    return str(row["norm"]), format_eps(float(row["eps"]))


def assign(cells: pd.DataFrame) -> pd.DataFrame:
    """`cells` with a `board` column (the Board of each row); a clean row is repeated once for each
    board of its setting (a setting with clean rows only gets a `clean only` board)."""
    if cells.empty:
        return cells.assign(board=[])
    run_key = cells[list(RUN)].astype(str).apply(tuple, axis=1)
    hurt = corrupted(cells)
    clean = cells["attack"] == "none"
    threats = [_threat(r, bool(h)) for (_, r), h in zip(cells.iterrows(), hurt, strict=True)]
    boards = [
        Board((*zip(RUN, k, strict=True), *zip(THREAT, t, strict=True))) for k, t in zip(run_key, threats, strict=True)
    ]
    attacked = cells.assign(board=pd.Series(boards, index=cells.index, dtype=object))[~clean]
    per_setting: dict[tuple, list[Board]] = {}
    for key, board in zip(run_key[~clean], attacked["board"], strict=True):
        per_setting.setdefault(key, [])
        if board not in per_setting[key]:
            per_setting[key].append(board)
    parts = [attacked]
    for key, rows in cells[clean].groupby(run_key[clean], sort=False):
        targets = per_setting.get(key) or [Board((*zip(RUN, key, strict=True), ("threat", ""), ("budget", "")))]
        parts += [rows.assign(board=[b] * len(rows)) for b in targets]
    return pd.concat(parts, ignore_index=True)


def differences(a: Board, b: Board) -> list[str]:
    """The fields in which two boards' settings differ, in FIELDS order."""
    fa, fb = a.fields, b.fields
    return [name for name in FIELDS if fa.get(name) != fb.get(name)]


def neighbours(board: Board, boards: list[Board], limit: int = 4) -> list[tuple[Board, list[str]]]:
    """The boards of the same task closest to `board` (fewest differing fields), with those fields."""
    task = board.fields["task"]
    others = [(b, differences(board, b)) for b in boards if b != board and b.fields["task"] == task]
    return sorted(others, key=lambda o: (len(o[1]), o[0].title))[:limit]
