"""FGSM: the fast gradient sign method (Goodfellow et al., ICLR 2015, arXiv 1412.6572).

Threat model: white-box, L-inf ball of radius eps on [0, 1] pixels.
One step x' = x + alpha * sign(grad). Defaults: no random start and alpha = eps for objectives
with a useful gradient at x (`ce`); for objectives whose gradient vanishes at x (`sma`), a
random start delta_0 ~ U(-eps, eps) and alpha = 1.25 eps, the FGSM-RS rule of Wong et al.
("Fast is better than free", ICLR 2020). Both are overridable.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from attacks.base import Attack, gradient, uniform_noise
from attacks.objectives import Objective
from attacks.registry import register_attack


@register_attack("fgsm")
class FGSM(Attack):
    """One signed-gradient step; see the module docstring for the defaults.

    Args:
        objective: objective name, `auto` by task.
        random_start: `None` = only when the objective needs it; True/False to force.
        step_size: absolute step (pixel scale); `None` = eps, or 1.25 eps with a random start.
        seed: generator seed for the random start.
    """

    def __init__(
        self,
        objective: str = "auto",
        random_start: bool | None = None,
        step_size: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(objective, seed)
        self.random_start = random_start
        self.step_size = step_size

    def _uses_random_start(self, objective: Objective) -> bool:
        return objective.needs_random_start if self.random_start is None else self.random_start

    def perturb(
        self,
        model: nn.Module,
        x: Tensor,
        objective: Objective,
        state: Any,
        eps: float,
        generator: torch.Generator,
    ) -> Tensor:
        start = self._uses_random_start(objective)
        x0 = self.project(x + uniform_noise(x, eps, generator), x, eps) if start else x
        alpha = self.step_size if self.step_size is not None else (1.25 * eps if start else eps)
        return x0 + alpha * gradient(model, x0, objective, state).sign()

    def describe(self, eps: float) -> dict[str, Any]:
        return {
            "norm": self.norm,
            "steps": 1,
            "step_size": self.step_size if self.step_size is not None else eps,
        }
