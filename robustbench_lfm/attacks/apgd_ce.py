"""APGD-CE: auto-PGD on the cross-entropy (Croce & Hein, ICML 2020, arXiv 2003.01690), via torchattacks.

Threat model: white-box, L-inf (default) or L2. Step size is adapted from 2 eps by checkpoints
and momentum 0.75; no step size to tune. Defaults: 100 iterations and 1 restart (AutoAttack's
standard APGD-CE), rho = 0.75.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from robustbench_lfm.attacks.registry import register_attack
from robustbench_lfm.attacks.wrapped import TorchattacksAttack


@register_attack("apgd-ce")
class APGDCE(TorchattacksAttack):
    """Auto-PGD with the cross-entropy loss.

    Args:
        norm: `linf` or `l2`.
        steps: iterations per restart.
        restarts: random restarts.
        rho: step-size decrease condition.
        seed: generator seed (drawn into torchattacks' seed).
    """

    loss: ClassVar[str] = "ce"

    def __init__(
        self, norm: str | None = None, steps: int = 100, restarts: int = 1, rho: float = 0.75, seed: int = 0
    ) -> None:
        super().__init__(norm, seed)
        if int(steps) < 1 or int(restarts) < 1 or not 0 < rho < 1:
            raise ValueError(
                f"{self.name}: need steps >= 1, restarts >= 1, 0 < rho < 1 (got {steps}, {restarts}, {rho})"
            )
        self.steps, self.restarts, self.rho = int(steps), int(restarts), float(rho)

    def build(self, model: nn.Module, eps: float, seed: int, n_classes: int) -> Any:
        import torchattacks  # only where it runs: importing it costs scipy.stats at start-up

        return torchattacks.APGD(
            model, norm=self.ta_norm(), eps=eps, steps=self.steps, n_restarts=self.restarts,
            seed=seed, loss=self.loss, rho=self.rho,
        )  # fmt: skip

    def schedule(self, eps: float) -> tuple[int, float]:
        return self.steps * self.restarts, 2 * eps  # APGD's initial step; it adapts from there
