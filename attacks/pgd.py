"""PGD: projected gradient descent, L-inf (Madry et al., ICLR 2018, arXiv 1706.06083).

Threat model: white-box, L-inf ball of radius eps on [0, 1] pixels.
x_0 = x + U(-eps, eps) (random start), then `steps` times
x_{t+1} = Proj_{B(x, eps) ∩ [0, 1]}(x_t + alpha * sign(grad L(x_t))).
Defaults: 10 steps, alpha = eps / 4 (2/255 at 8/255, the step reference/methods.md §5 uses),
random start on. The objective is `auto`: SMA for re-ID, cross-entropy for classification.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from attacks.base import Attack, gradient, uniform_noise
from attacks.objectives import Objective
from attacks.registry import register_attack


@register_attack("pgd")
class PGD(Attack):
    """Iterated signed-gradient steps with projection; see the module docstring.

    Args:
        objective: objective name, `auto` by task.
        steps: number of gradient steps (>= 1).
        step_size: absolute step alpha (pixel scale); `None` = rel_step * eps.
        rel_step: alpha as a fraction of eps when step_size is None (default 0.25).
        random_start: start from a uniform point of the eps-ball (needed by `sma`).
        seed: generator seed for the random start.
    """

    def __init__(
        self,
        objective: str = "auto",
        steps: int = 10,
        step_size: float | None = None,
        rel_step: float = 0.25,
        random_start: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(objective, seed)
        if int(steps) < 1:
            raise ValueError(f"pgd: steps={steps} must be >= 1")
        if step_size is not None and not 0 < step_size <= 1:
            raise ValueError(f"pgd: step_size={step_size} must lie in (0, 1] (pixel scale)")
        self.steps = int(steps)
        self.step_size = step_size
        self.rel_step = float(rel_step)
        self.random_start = bool(random_start)

    def alpha(self, eps: float) -> float:
        """The absolute step size at budget eps."""
        return self.step_size if self.step_size is not None else self.rel_step * eps

    def perturb(
        self,
        model: nn.Module,
        x: Tensor,
        objective: Objective,
        state: Any,
        eps: float,
        generator: torch.Generator,
    ) -> Tensor:
        x_adv = self.project(x + uniform_noise(x, eps, generator), x, eps) if self.random_start else x
        alpha = self.alpha(eps)
        for _ in range(self.steps):
            step = alpha * gradient(model, x_adv, objective, state).sign()
            x_adv = self.project(x_adv + step, x, eps)
        return x_adv

    def describe(self, eps: float) -> dict[str, Any]:
        return {"norm": self.norm, "steps": self.steps, "step_size": self.alpha(eps)}
