"""Attack objectives: what an attack maximizes, independent of how it searches.

* `sma` — Self Metric Attack (Bouniot et al., CVPRW 2020; reference/reid.md D2): push the
  L2-normalized embedding of the perturbed image away from its own clean embedding,
  L = sum_i ||f^(x'_i) - f^(x_i)||^2 (cosine geometry, the harness's default distance). Needs no
  other image and no label. Its gradient is zero at x' = x, so it needs a random start.
* `ce` — cross-entropy of the logits against the true labels (classification; Goodfellow et
  al. 2015, Madry et al. 2018).

An objective is prepared once per batch on the clean input (`prepare`, no gradient), then
evaluated on the perturbed input (`loss`, summed over the batch so per-sample gradients are
independent of the batch size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.registry import UnknownAttackError, did_you_mean

Task = Literal["reid", "classification"]


@dataclass(frozen=True)
class AttackContext:
    """What an attack may know besides the model and the images.

    Attributes:
        task: `reid` (the model returns embeddings in eval mode) or `classification` (logits).
        labels: true labels of the batch (classification objectives), shape (N,).
    """

    task: Task
    labels: Tensor | None = None


class Objective:
    """Base class: `prepare` once on clean inputs, then `loss` (to maximize) on perturbed ones."""

    name: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]]
    needs_random_start: ClassVar[bool] = False

    def prepare(self, model: nn.Module, x: Tensor, context: AttackContext) -> Any:
        """State computed once from the clean batch (under no_grad)."""
        raise NotImplementedError

    def loss(self, model: nn.Module, x_adv: Tensor, state: Any) -> Tensor:
        """Scalar to maximize, summed over the batch."""
        raise NotImplementedError


class SelfMetric(Objective):
    """SMA: squared distance between normalized embeddings of x' and of clean x."""

    name = "sma"
    tasks = ("reid",)
    needs_random_start = True

    def prepare(self, model: nn.Module, x: Tensor, context: AttackContext) -> Tensor:
        with torch.no_grad():
            return F.normalize(model(x), dim=1)

    def loss(self, model: nn.Module, x_adv: Tensor, state: Tensor) -> Tensor:
        return (F.normalize(model(x_adv), dim=1) - state).pow(2).sum()


class CrossEntropy(Objective):
    """Untargeted cross-entropy on the true labels."""

    name = "ce"
    tasks = ("classification",)

    def prepare(self, model: nn.Module, x: Tensor, context: AttackContext) -> Tensor:
        if context.labels is None:
            raise ValueError("the 'ce' objective needs labels in the AttackContext")
        return context.labels

    def loss(self, model: nn.Module, x_adv: Tensor, state: Tensor) -> Tensor:
        return F.cross_entropy(model(x_adv), state, reduction="sum")


OBJECTIVES: dict[str, type[Objective]] = {cls.name: cls for cls in (SelfMetric, CrossEntropy)}
DEFAULT_OBJECTIVE: dict[str, str] = {"reid": "sma", "classification": "ce"}


def resolve_objective(name: str, task: Task) -> Objective:
    """The objective `name` for `task`; `auto` picks the task's default (reid: sma, cls: ce)."""
    if task not in DEFAULT_OBJECTIVE:
        raise ValueError(f"unknown task {task!r} (known: {', '.join(DEFAULT_OBJECTIVE)})")
    key = DEFAULT_OBJECTIVE[task] if name == "auto" else name
    if key not in OBJECTIVES:
        raise UnknownAttackError(did_you_mean("objective", key, list(OBJECTIVES)))
    objective = OBJECTIVES[key]()
    if task not in objective.tasks:
        raise ValueError(f"objective {key!r} does not apply to the {task} task")
    return objective
