"""PGD-L2: projected gradient ascent in an L2 ball (Madry et al., ICLR 2018, arXiv 1706.06083).

Threat model: white-box, L2 ball of radius eps (the Euclidean norm of one image's whole
perturbation, [0, 1] pixel scale; 0.5 is the CIFAR-10 standard).
Steps along g / ||g||_2 with projection onto the ball. Defaults: 20 steps of alpha = 2.5 eps / 20
(the robustness library's rule), random start (uniform direction, U(0, eps) radius), 1 restart.
The objective is `auto`: SMA for re-ID, cross-entropy for classification.
`backend=torchattacks` runs torchattacks.PGDL2 instead (classification, cross-entropy only).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from robustbench_lfm.attacks.backends import choose_backend
from robustbench_lfm.attacks.iterative import IterativeAttack, l2_step
from robustbench_lfm.attacks.registry import register_attack


@register_attack("pgd-l2")
class PGDL2(IterativeAttack):
    """Normalized-gradient steps with L2 projection; options as `IterativeAttack` (norm fixed to l2),
    plus `backend`."""

    default_random_start = True

    def __init__(self, *args: Any, backend: str = "native", **kwargs: Any) -> None:
        if kwargs.setdefault("norm", "l2") != "l2":
            raise ValueError("pgd-l2: the norm is l2 (use pgd for linf)")
        super().__init__(*args, **kwargs)
        self.backend = choose_backend(self, backend)

    @classmethod
    def class_defaults(cls, signature: dict[str, Any]) -> dict[str, Any]:
        return {**super().class_defaults(signature), "norm": "l2"}

    def default_schedule(self, eps: float, started: bool) -> tuple[int, float]:
        return 20, l2_step(eps, 20)

    def torchattacks_attack(self, model: nn.Module, eps: float) -> Any:
        steps, alpha = self.schedule(eps)
        import torchattacks  # only where it runs: importing it costs scipy.stats at start-up

        return torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=steps, random_start=bool(self.random_start))
