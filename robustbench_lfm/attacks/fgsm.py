"""FGSM: the fast gradient sign method (Goodfellow et al., ICLR 2015, arXiv 1412.6572).

Threat model: white-box, L-inf ball of radius eps on [0, 1] pixels.
One step x' = x + alpha * sign(grad). Defaults: no random start and alpha = eps for objectives
with a useful gradient at x (`ce`, `fna`, `bai`); for objectives whose gradient vanishes at x
(`sma`, `odfa`), a random start delta_0 ~ U(-eps, eps) and alpha = 1.25 eps, the FGSM-RS rule of
Wong et al. ("Fast is better than free", ICLR 2020). Both are overridable.
`backend=torchattacks` runs torchattacks.FGSM instead (classification, no random start).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from robustbench_lfm.attacks.backends import choose_backend
from robustbench_lfm.attacks.iterative import IterativeAttack
from robustbench_lfm.attacks.registry import register_attack


@register_attack("fgsm")
class FGSM(IterativeAttack):
    """One signed-gradient step; see the module docstring for the defaults.

    Args:
        objective: objective name, `auto` by task.
        side: re-ID side perturbed, `query` or `gallery`.
        random_start: `None` = only when the objective needs it; True/False to force.
        step_size: absolute step (pixel scale); `None` = eps, or 1.25 eps with a random start.
        geometry: a metric objective's geometry, `cosine` or `euclidean`; `None` = the scored one.
        backend: `native` or `torchattacks`.
        di_prob, di_scale, ti_kernel: input diversity and translation invariance for transfer
            (robustbench_lfm/attacks/transfer.py); off by default.
        eot: gradient passes averaged for the step (expectation over transformation); 1 = one.
        seed: generator seed for the random start.
    """

    def __init__(
        self,
        objective: str = "auto",
        side: str | None = None,
        random_start: bool | None = None,
        step_size: float | None = None,
        geometry: str | None = None,
        backend: str = "native",
        di_prob: float = 0.0,
        di_scale: float = 1.1,
        ti_kernel: int = 0,
        eot: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(
            objective, "linf", side, steps=1, step_size=step_size, random_start=random_start, geometry=geometry,
            di_prob=di_prob, di_scale=di_scale, ti_kernel=ti_kernel, eot=eot, seed=seed,
        )  # fmt: skip
        self.backend = choose_backend(self, backend)

    def default_schedule(self, eps: float, started: bool) -> tuple[int, float]:
        return 1, 1.25 * eps if started else eps

    def torchattacks_attack(self, model: nn.Module, eps: float) -> Any:
        if self.random_start:
            raise ValueError("fgsm: backend=torchattacks has no random start")
        import torchattacks  # only where it runs: importing it costs scipy.stats at start-up

        return torchattacks.FGSM(model, eps=eps)
