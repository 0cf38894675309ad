"""Shared defaults of the metric-space re-ID attacks (docs/reference/reid.md D1-D4).

The papers state their schedules in 1/255 steps under L-inf. Under L2 (an option of every metric
attack) a 1/255 step has no meaning, so the step becomes 2.5 eps / steps (Madry et al.'s rule)
with the same number of steps.
"""

from __future__ import annotations

from typing import Any, ClassVar

from robustbench_lfm.attacks.iterative import IterativeAttack, kurakin_steps, l2_step

PIXEL = 1 / 255


class MetricAttack(IterativeAttack):
    """A metric attack: a fixed objective, a published schedule, L-inf or L2.

    Subclasses set `metric_objective`, and either `fixed_steps` or `step_rule` (`floor` or
    `round` of Kurakin's min(eps + 4, 1.25 eps)).
    """

    tasks = ("reid",)
    metric_objective: ClassVar[str]
    fixed_steps: ClassVar[int | None] = None
    step_rule: ClassVar[str] = "floor"

    def __init__(self, **options: object) -> None:
        objective = options.pop("objective", self.metric_objective)
        if objective != self.metric_objective:
            raise ValueError(
                f"{self.name}: the objective is {self.metric_objective} (use pgd:objective=... for others)"
            )
        super().__init__(self.metric_objective, **options)  # type: ignore[arg-type]

    @classmethod
    def class_defaults(cls, signature: dict[str, Any]) -> dict[str, Any]:
        return {**super().class_defaults(signature), "objective": cls.metric_objective}

    def default_schedule(self, eps: float, started: bool) -> tuple[int, float]:
        steps = self.fixed_steps or kurakin_steps(eps, self.step_rule)
        return steps, PIXEL if self.norm == "linf" else l2_step(eps, steps)
