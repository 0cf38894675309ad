"""DeepFool (Moosavi-Dezfooli et al., CVPR 2016, arXiv 1511.04599), via torchattacks.

Threat model: white-box, L2. DeepFool linearises the classifier and steps to the nearest
decision boundary until the label flips (minimum norm, no budget); the base class projects its
result onto the L2 ball of radius eps. Defaults (torchattacks'): at most 50 steps, overshoot
0.02. It loops over images and classes, so it is slow on large batches and many classes.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from robustbench_lfm.attacks.registry import register_attack
from robustbench_lfm.attacks.wrapped import TorchattacksAttack


@register_attack("deepfool")
class DeepFool(TorchattacksAttack):
    """DeepFool-L2 projected onto the eps-ball.

    Args:
        steps: maximum linearisation steps per image.
        overshoot: relative overshoot past the boundary.
        norm: `l2` (the only one).
        seed: generator seed (DeepFool itself is deterministic).
    """

    stays_in_budget = False  # a minimum-norm search: the base class projects its result by design

    loss = "deepfool"
    norms = ("l2",)

    def __init__(self, steps: int = 50, overshoot: float = 0.02, norm: str | None = None, seed: int = 0) -> None:
        super().__init__(norm, seed)
        if int(steps) < 1 or overshoot < 0:
            raise ValueError(f"deepfool: need steps >= 1 and overshoot >= 0 (got {steps}, {overshoot})")
        self.steps, self.overshoot = int(steps), float(overshoot)

    def build(self, model: nn.Module, eps: float, seed: int, n_classes: int) -> Any:
        import torchattacks  # only where it runs: importing it costs scipy.stats at start-up

        return torchattacks.DeepFool(model, steps=self.steps, overshoot=self.overshoot)

    def schedule(self, eps: float) -> tuple[int, float]:
        return self.steps, 0.0
