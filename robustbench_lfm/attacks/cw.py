"""CW: the Carlini-Wagner L2 attack (Carlini & Wagner, IEEE S&P 2017, arXiv 1608.04644), via torchattacks.

Threat model: white-box, L2. CW searches for a small misclassifying perturbation (tanh
reparametrisation, Adam) rather than staying in a budget; the base class projects its result
onto the L2 ball of radius eps, so the row reports CW within the budget.
Defaults (torchattacks'): c = 1, kappa = 0 (confidence), 50 Adam steps, lr = 0.01.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from robustbench_lfm.attacks.registry import register_attack
from robustbench_lfm.attacks.wrapped import TorchattacksAttack


@register_attack("cw")
class CW(TorchattacksAttack):
    """CW-L2 projected onto the eps-ball.

    Args:
        c: weight of the misclassification term against the squared L2 norm.
        kappa: confidence margin on the logits.
        steps: Adam steps.
        lr: Adam learning rate (tanh space).
        norm: `l2` (the only one).
        seed: generator seed (CW itself is deterministic).
    """

    stays_in_budget = False  # a minimum-norm search: the base class projects its result by design

    loss = "cw"
    norms = ("l2",)

    def __init__(
        self,
        c: float = 1.0,
        kappa: float = 0.0,
        steps: int = 50,
        lr: float = 0.01,
        norm: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(norm, seed)
        if c <= 0 or kappa < 0 or int(steps) < 1 or lr <= 0:
            raise ValueError(f"cw: need c > 0, kappa >= 0, steps >= 1, lr > 0 (got {c}, {kappa}, {steps}, {lr})")
        self.c, self.kappa, self.steps, self.lr = float(c), float(kappa), int(steps), float(lr)

    def build(self, model: nn.Module, eps: float, seed: int, n_classes: int) -> Any:
        import torchattacks  # only where it runs: importing it costs scipy.stats at start-up

        return torchattacks.CW(model, c=self.c, kappa=self.kappa, steps=self.steps, lr=self.lr)

    def schedule(self, eps: float) -> tuple[int, float]:
        return self.steps, self.lr
