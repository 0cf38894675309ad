"""`corrupt`: the common corruptions as a threat family (Hendrycks & Dietterich, ICLR 2019;
re-ID: Market-1501-C / DukeMTMC-reID-C, Chen et al., NeurIPS 2021 Datasets and Benchmarks).

Threat model: no adversary and no budget. The images are degraded by one of the 15 corruptions
(robustbench_lfm/attacks/corruptions.py) at a severity from 1 to 5; the model is not consulted. The severity
takes the place of eps: a corruption cell has eps 0 and its severity in the CSV `severity`
column, and the figures put severity on their own axis.

Options (`corrupt:type=fog,severity=3`):
* `type` — one of the 15 names, a group (`noise`, `blur`, `weather`, `digital`), or `all`;
  default all;
* `severity` — 1..5 or `all`; default all. `corrupt` alone is the full benchmark, 15 x 5 cells;
* `side` — re-ID: which images are corrupted, `both` (the default: query and gallery, Chen et
  al.'s "corrupted eval"), `query` or `gallery`; classification: the test images;
* `table` — the reference's parameters: `imagenet` (imagecorruptions, any size, Market-1501-C's)
  or `cifar` (CIFAR-10-C's, for 32x32 images); `auto` = cifar for classification, imagenet for
  re-ID. The CSV records the table used.
* `source` — `generated` (corrupted here, seeded by the training seed, so every model of a seed
  sees the same images) or `published` (the published CIFAR-10-C arrays from --data-root; see
  robustbench_lfm/datasets/corrupted.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from robustbench_lfm.attacks.base import Attack, _check_inputs
from robustbench_lfm.attacks.corruptions import CORRUPTIONS, GROUPS, SEVERITIES, TABLES, corrupt
from robustbench_lfm.attacks.objectives import AttackContext
from robustbench_lfm.attacks.registry import register_attack

SIDES = ("both", "query", "gallery")
SOURCES = ("generated", "published")


@register_attack("corrupt")
class Corrupt(Attack):
    """One corruption at one severity; options as the module docstring."""

    uses_gradients = False  # it consults no model

    budgeted = False
    axis = "severity"
    default_side = "both"

    def __init__(
        self,
        type: Any = None,
        severity: Any = None,
        side: str = "both",
        table: str = "auto",
        source: str = "generated",
        seed: int = 0,
    ) -> None:
        if type not in CORRUPTIONS:
            raise ValueError(f"corrupt: type={type!r} is not one of {', '.join(CORRUPTIONS)} (or a group, or all)")
        if isinstance(severity, bool) or severity not in SEVERITIES:
            raise ValueError(f"corrupt: severity={severity!r} must be an integer from 1 to 5 (or all)")
        choices = ((side, "side", SIDES), (table, "table", (*TABLES, "auto")), (source, "source", SOURCES))
        for value, key, known in choices:
            if value not in known:
                raise ValueError(f"corrupt: {key}={value!r} is not one of {', '.join(known)}")
        self.type, self.severity, self.side, self.table, self.source = type, int(severity), side, table, source
        self.objective, self.norm, self.seed = "none", "none", int(seed)

    @classmethod
    def expand(cls, options: dict[str, Any], task: str) -> list[dict[str, Any]]:
        """One option set per (type, severity) the item names; an `auto` table resolved by the task
        (kept when no task is given)."""
        types = _names(options.get("type"))
        severities = _severities(options.get("severity"))
        table = options.get("table", "auto")
        resolved = {**options, "table": cls.task_defaults(task)["table"] if table == "auto" and task else table}
        return [{**resolved, "type": t, "severity": s} for t in types for s in severities]

    @classmethod
    def task_defaults(cls, task: str) -> dict[str, Any]:
        """`table=auto` on `task`: CIFAR-10-C's parameters for classification (32x32 images),
        imagecorruptions' for re-ID."""
        return {"table": "cifar" if task == "classification" else "imagenet"}

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        context: AttackContext,
        *,
        eps: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """`x` under the corruption; the model is not consulted and eps plays no part."""
        self.check_task(context.task)
        _check_inputs(x, 0.0, "linf")
        if generator is None:
            generator = torch.Generator(x.device).manual_seed(self.seed)
        table = self.table if self.table != "auto" else self.task_defaults(context.task)["table"]
        return corrupt(x.detach(), self.type, self.severity, table, generator).to(x.dtype)

    def describe(self, eps: float, task: str) -> dict[str, Any]:
        return {"objective": "", "norm": "", "steps": 0, "step_size": 0.0,
                "perturbed": self.side if task == "reid" else "input", "severity": self.severity}  # fmt: skip

    def sides(self) -> tuple[str, ...]:
        """The re-ID sides corrupted."""
        return ("query", "gallery") if self.side == "both" else (self.side,)

    def resolved_objective(self, task: str) -> str:
        return ""


def _names(value: Any) -> tuple[str, ...]:
    """The corruption names `value` stands for (None or `all`: every one; a group: its members)."""
    if value is None or value == "all":
        return CORRUPTIONS
    if isinstance(value, str) and value in GROUPS:
        return GROUPS[value]
    if value not in CORRUPTIONS:
        groups = ", ".join(GROUPS)
        raise ValueError(f"corrupt: type={value!r} is not one of {', '.join(CORRUPTIONS)}, a group ({groups}) or all")
    return (value,)


def _severities(value: Any) -> tuple[Any, ...]:
    """The severities `value` stands for (None or `all`: 1..5)."""
    return SEVERITIES if value is None or value == "all" else (value,)
