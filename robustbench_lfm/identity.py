"""The identity of a number: which result columns say how it was made, and the labels built on them.

Two rows are the same measurement only when every column of `IDENTITY` is equal; the tuples are
derived from the columns' declared roles (robustbench_lfm.columns). The
tables, figures, report conditions, sanity series, paired tests and the regression gate all key on
these tuples, from this module:

* `RUN`      — the task, the data and its options, the data scored and its options (--test-dataset;
               the training data's own test split when not given), the training share, the training
               recipe, the evaluation options
               (with the feature precision and `eval_subset`, the --n-eval subset scored);
* `MODEL`    — the model label, backbone, regularizer, every resolved model parameter and the
               sha256 of the pretrained weights it started from (empty: random init);
* `ATTACK`   — the attack, every resolved option, the threat (side, surrogate, quantization) and
               the precision the attack ran in;
* `SCHEDULE` — the budget (or a corruption's severity) and the steps and step size actually run at it;
* `SERIES`   — an attack configuration across eps: the identity without the schedule;
* `IDENTITY` — all of it, plus the training seed and the re-ranking mode.

`labelled` adds the display labels: `row` (a model), `condition` (`clean`, `pgd:steps=1 8/255`,
`sma:side=gallery 5/255 +rerank`) and `series` (the condition without its eps). A label is made
injective on its key: when two keys would print alike, each gets a short hash of its key, so two
measurements never share a table cell, a curve or a test. Reads only the CSV: no torch here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import pandas as pd

from robustbench_lfm import columns
from robustbench_lfm.hashing import content_hash
from robustbench_lfm.parsing import PIXEL_OPTIONS, as_level, format_eps

__all__ = ["format_eps"]  # re-exported: labels and tables meet it here

RUN = columns.of_role("run")
MODEL = columns.of_role("model")
ATTACK = columns.of_role("attack")
SCHEDULE = columns.of_role("schedule")
IDENTITY = (*RUN, *MODEL, "train_seed", *ATTACK, *SCHEDULE, "rerank")
SERIES = tuple(c for c in IDENTITY if c not in SCHEDULE)
ROW = (*RUN, *MODEL)
CONDITION = (*ATTACK, *SCHEDULE, "rerank")
SERIES_CONDITION = (*ATTACK, "rerank")
MEASUREMENT = (*IDENTITY, "metric")

LARGE_EPS = {"linf": 64 / 255, "l2": 16.0}  # the probes' budget per norm: far past any sweep's eps

FLOATS = tuple(c.name for c in columns.RESULTS if c.dtype == "float" and c.name in MEASUREMENT)
INTS = tuple(c.name for c in columns.RESULTS if c.dtype == "int" and c.name in MEASUREMENT)


def canonical(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with its identity columns in one dtype each (text, float or int), so that keys read
    from two CSVs compare equal exactly when the written values were equal."""
    present = [c for c in MEASUREMENT if c in df.columns]
    casts = {c: (float if c in FLOATS else int if c in INTS else str) for c in present}
    out = df.copy()
    for column, kind in casts.items():
        if kind is str:
            out[column] = out[column].fillna("").astype(str)
        else:
            out[column] = pd.to_numeric(out[column], errors="raise").astype(kind)
    return out


def as_written_now(label: str) -> str:
    """An attack label as `AttackSpec.label_on` writes it now: tables written before pixel-scale
    options were written as 8-bit levels say `pgd:step_size=0.00784313725490196`, which reads
    `pgd:step_size=2/255` (parsing.as_level), so an older run and a newer one of one attack
    share a column."""
    name, colon, options = label.partition(":")
    if not colon:
        return label
    parts = [part.partition("=") for part in options.split(",")]
    return name + colon + ",".join(key + equals + _option_now(key, value) for key, equals, value in parts)


def _option_now(key: str, value: str) -> str:
    """`value` as a level when it is a pixel-scale option's exact k/255; else the text as written."""
    if key not in PIXEL_OPTIONS:
        return value
    try:
        number = float(value)
    except ValueError:  # already a level (`2/255`), or not a number
        return value
    return as_level(number) or value


def series_label(row: pd.Series) -> str:
    """The attack configuration without its eps: `clean`, `pgd:steps=1`, `fgsm from plain q8`."""
    if row["attack"] == "none":
        return "clean"
    label = row.get("attack_label")
    label = as_written_now(label) if isinstance(label, str) and label else str(row["attack"])
    if row.get("surrogate"):
        label += f" from {row['surrogate']}"
    if str(row.get("quantize")) == "True":
        label += " q8"
    return label


def condition_label(row: pd.Series) -> str:
    """The one place a condition's text is built: `clean`, `pgd:steps=1 8/255` or, for a
    corruption, its severity: `corrupt:type=fog s3`; ` +rerank` for re-ranked scores."""
    base = series_label(row)
    if row["attack"] != "none":
        head, _, threat = base.partition(" ")
        level = f"s{s}" if (s := severity(row)) else format_eps(float(row["eps"]))
        base = f"{head} {level}" + (f" {threat}" if threat else "")
    return base + (" +rerank" if row.get("rerank", "") else "")


def severity(row: pd.Series) -> int:
    """A row's corruption severity, 0 for every other row."""
    value = row.get("severity", 0)
    return 0 if value is None or value == "" or pd.isna(value) else int(value)


def corrupted(df: pd.DataFrame) -> pd.Series:
    """Which rows measure a common corruption (severity 1-5) rather than clean or attacked images."""
    if "severity" not in df.columns:
        return pd.Series(False, index=df.index)
    return pd.to_numeric(df["severity"], errors="coerce").fillna(0) > 0


def ordered_conditions(df: pd.DataFrame) -> list[str]:
    """The `condition` labels of labelled rows in display order: clean first, then by eps and text
    (corruptions by type, then severity)."""
    eps = pd.to_numeric(df["eps"], errors="coerce").groupby(df["condition"]).first()
    return sorted(eps.index, key=lambda c: (c != "clean", float(eps[c]), c))


def _injective(labels: pd.Series, keys: pd.Series) -> pd.Series:
    """`labels` with a short key hash appended wherever one label stands for several keys."""
    clashing = keys.groupby(labels).transform("nunique") > 1
    if not clashing.any():
        return labels
    hashes = {k: content_hash(k, 4) for k in keys[clashing].unique()}
    return labels.where(~clashing, labels + " #" + keys.map(hashes))


def _key_text(df: pd.DataFrame, columns: tuple[str, ...]) -> pd.Series:
    """The values of `columns` (those present) as one text per row, joined by \\x1f."""
    present = [c for c in columns if c in df.columns]
    if not present:
        return pd.Series("", index=df.index)
    return functools.reduce(lambda a, b: a + "\x1f" + b, (df[c].astype(str) for c in present))


def labelled(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with `row`, `condition` and `series` label columns, each injective on its key."""
    if df.empty:
        return df.assign(row=[], condition=[], series=[])
    rows = df["model"].astype(str)
    if "backbone" in df.columns:  # the same label on two backbones: say which
        several = df.groupby("model")["backbone"].transform("nunique") > 1
        rows = rows.where(~several, rows + " (" + df["backbone"].astype(str) + ")")
    return df.assign(
        row=_injective(rows, _key_text(df, ROW)),
        condition=_injective(_per_distinct(df, condition_label), _key_text(df, CONDITION)),
        series=_injective(_per_distinct(df, series_label), _key_text(df, SERIES_CONDITION)),
    )


# The columns `condition_label` and `series_label` read.
LABEL_COLUMNS = ("attack", "attack_label", "surrogate", "quantize", "eps", "severity", "rerank")


def _per_distinct(df: pd.DataFrame, label: Callable[[pd.Series], str]) -> pd.Series:
    """`label` of every row of `df`, computed once per distinct value of the columns it reads
    (LABEL_COLUMNS): a table holds a few conditions over many models and seeds."""
    part = df[[c for c in LABEL_COLUMNS if c in df.columns]]
    texts: dict[tuple, str] = {}
    out = []
    for i, key in enumerate(zip(*(part[c].tolist() for c in part.columns), strict=True)):
        if key not in texts:  # a NaN is a new object each time: computed again, never mixed up
            texts[key] = label(part.iloc[i])
        out.append(texts[key])
    return pd.Series(out, index=df.index)


def _subsets(df: pd.DataFrame) -> list[str]:
    """The `eval_subset` values of `df` that name a subset (`N/M`), sorted."""
    return sorted({str(v) for v in df.get("eval_subset", pd.Series(dtype=str)).fillna("") if str(v)})


def subset_note(df: pd.DataFrame) -> str:
    """ "" when every number scores the whole query set (test set); else which ones come from a
    seeded --n-eval subset, as `; scored on a seeded subset (--n-eval) of 500/3368 queries`."""
    subsets = _subsets(df)
    if not subsets:
        return ""
    what = "test images" if str(df["task"].iloc[0]) == "classification" else "queries"
    return f"; scored on a seeded subset (--n-eval) of {', '.join(subsets)} {what}, not the whole set"


def subset_title(df: pd.DataFrame) -> str:
    """` (--n-eval subset 100/277)` for a figure title when the numbers come from a subset, else ""."""
    subsets = _subsets(df)
    return f" (--n-eval subset {', '.join(subsets)})" if subsets else ""
