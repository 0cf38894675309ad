"""PGD: projected gradient descent, L-inf (Madry et al., ICLR 2018, arXiv 1706.06083).

Threat model: white-box, L-inf ball of radius eps on [0, 1] pixels.
x_0 = x + U(-eps, eps) (random start), then `steps` times
x_{t+1} = Proj_{B(x, eps) ∩ [0, 1]}(x_t + alpha * sign(grad L(x_t))).
Defaults: PGD-20 with alpha = eps / 4 (2/255 at 8/255; docs/reference/methods.md §2.5), random start
on, 1 restart. The objective is `auto`: SMA for re-ID, cross-entropy for classification.
`backend=torchattacks` runs torchattacks.PGD instead (classification, cross-entropy only).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from robustbench_lfm.attacks.backends import choose_backend
from robustbench_lfm.attacks.iterative import IterativeAttack
from robustbench_lfm.attacks.registry import register_attack


@register_attack("pgd")
class PGD(IterativeAttack):
    """Iterated signed-gradient steps with projection; options as `IterativeAttack`, plus
    `backend` (`native` or `torchattacks`)."""

    default_random_start = True

    def __init__(self, *args: Any, backend: str = "native", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.backend = choose_backend(self, backend)

    def default_schedule(self, eps: float, started: bool) -> tuple[int, float]:
        return 20, eps / 4

    def torchattacks_attack(self, model: nn.Module, eps: float) -> object:
        steps, alpha = self.schedule(eps)
        import torchattacks  # only where it runs: importing it costs scipy.stats at start-up

        return torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=bool(self.random_start))
