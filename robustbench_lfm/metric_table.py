"""The metric table: every metric the harness records, once.

Evaluation (`RankResult.as_metrics`, `AccuracyResult.as_metrics`), the per-query record
(queries.csv), the summary and report tables, the figures, the sanity checks and the regression
gate all read this table, so a new metric is one `register_metric(Metric(...))` call. Reads no
torch: the CSV readers (`report`, `check`) import it.

Fields of a `Metric`:

* `name` — the CSV `metric` value; `label` — how tables and figures print it.
* `task` — `reid` or `classification`: the task whose cells record it.
* `compute` — the value (a fraction in [0, 1]) from the evaluation result of one cell
  (`metrics.RankResult` or `metrics.AccuracyResult`).
* `query_column` and `per_query` — the queries.csv column holding each scored query's (or test
  image's) outcome and how to get it from the result (`hit` 0/1, `ap` in [0, 1]); empty when the
  metric has no per-query record. Metrics of a task that share a column share its values.
* `proportion` — a fraction of queries or images (binomial standard error, two-proportion test);
  otherwise a mean of per-query scores (bootstrap over `query_column`).
* `headline` — shown in the summary and report tables, the figures and the sanity checks.
* `gated` — compared by `lfm-bench check` (needs `proportion` or a `query_column`: a test).
* `higher_is_better` — the direction of a regression and of the monotonicity check.
* `chance` — the metric the large-eps sanity check compares with a random ranking's value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from robustbench_lfm.lfm_registry import Registry, calling_module


@dataclass(frozen=True)
class Metric:
    """One recorded metric (module docstring)."""

    name: str
    label: str
    task: str
    compute: Callable[[Any], float]
    query_column: str = ""
    per_query: Callable[[Any], Sequence[float]] | None = None
    proportion: bool = False
    headline: bool = False
    gated: bool = False
    higher_is_better: bool = True
    chance: bool = False

    def __post_init__(self) -> None:
        if bool(self.query_column) != (self.per_query is not None):
            raise ValueError(f"metric {self.name!r}: give query_column and per_query together")
        if self.gated and not (self.proportion or self.query_column):
            raise ValueError(f"metric {self.name!r} is gated but has no test (neither a proportion nor per-query)")

    @property
    def sign(self) -> int:
        """+1 when higher is better, -1 otherwise: `sign * (baseline - value)` is a fall."""
        return 1 if self.higher_is_better else -1


METRICS: Registry[Metric] = Registry("metric")


def register_metric(metric: Metric) -> Metric:
    """Add `metric` to the table; a name already there raises DuplicateNameError."""
    return METRICS.add(metric.name, metric, calling_module())


def get_metric(name: str) -> Metric:
    """The metric registered as `name` (UnknownNameError lists close matches)."""
    return METRICS[name]


def task_metrics(task: str) -> tuple[Metric, ...]:
    """The metrics a cell of `task` records, in table order."""
    return tuple(m for m in METRICS.values() if m.task == task)


def names(task: str, *, headline: bool = False, gated: bool = False, chance: bool = False) -> tuple[str, ...]:
    """The names of `task`'s metrics, or of those with each flag asked for."""
    return tuple(
        m.name
        for m in task_metrics(task)
        if (m.headline or not headline) and (m.gated or not gated) and (m.chance or not chance)
    )


def headline_names(tasks: Sequence[str]) -> list[str]:
    """The headline metrics of `tasks`, in display order, each once."""
    return list(dict.fromkeys(n for task in tasks for n in names(task, headline=True)))


def all_names(*, headline: bool = False, gated: bool = False, chance: bool = False) -> tuple[str, ...]:
    """The names of every task's metrics with each flag asked for."""
    tasks = dict.fromkeys(m.task for m in METRICS.values())
    return tuple(n for task in tasks for n in names(task, headline=headline, gated=gated, chance=chance))


def label(name: str) -> str:
    """How tables print metric `name` (the name itself for a metric not in the table)."""
    return METRICS[name].label if name in METRICS else name


def query_columns() -> tuple[str, ...]:
    """The per-query outcome columns of queries.csv, in table order."""
    return tuple(dict.fromkeys(m.query_column for m in METRICS.values() if m.query_column))


def compute_all(task: str, result: Any) -> dict[str, float]:
    """The CSV metrics of one evaluated cell: name -> value, in table order."""
    return {m.name: float(m.compute(result)) for m in task_metrics(task)}


def per_query_all(task: str, result: Any) -> dict[str, list[float]]:
    """queries.csv columns of one evaluated cell: column -> one value per scored query."""
    return {m.query_column: list(m.per_query(result)) for m in task_metrics(task) if m.per_query is not None}


def _rank(k: int) -> Callable[[Any], float]:
    return lambda result: float(result.cmc_at(k))


def _hits(result: Any) -> Sequence[float]:
    return (result.first_match == 1).int().tolist()


register_metric(Metric("rank1", "Rank-1", "reid", _rank(1), "hit", _hits, proportion=True, headline=True,
                       gated=True, chance=True))  # fmt: skip
register_metric(Metric("rank5", "Rank-5", "reid", _rank(5), proportion=True, gated=True))
register_metric(Metric("rank10", "Rank-10", "reid", _rank(10), proportion=True, gated=True))
register_metric(Metric("mAP", "mAP", "reid", lambda r: r.mAP, "ap", lambda r: r.ap.tolist(), headline=True, gated=True))
register_metric(Metric("mINP", "mINP", "reid", lambda r: r.mINP))  # no per-query record, hence no test: not gated
register_metric(Metric("accuracy", "accuracy", "classification", lambda r: r.accuracy, "hit",
                       lambda r: r.correct.int().tolist(), proportion=True, headline=True, gated=True,
                       chance=True))  # fmt: skip
