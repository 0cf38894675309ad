"""Square Attack (Andriushchenko et al., ECCV 2020, arXiv 1912.00049), via torchattacks.

Threat model: black-box, score-based (it reads the logits, never a gradient), L-inf (default) or
L2. Random square-shaped updates accepted when they lower the margin loss. Defaults (AutoAttack's
standard setting, github.com/fra31/auto-attack): 5000 queries, p_init = 0.8, 1 restart, and the
size of the squares shrinking on the paper's 10000-query schedule, of which `queries` run
(torchattacks' default would squeeze that schedule into `queries`). Cost is `queries` forward passes.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from robustbench_lfm.attacks.registry import register_attack
from robustbench_lfm.attacks.wrapped import TorchattacksAttack


@register_attack("square")
class Square(TorchattacksAttack):
    """Score-based random search in squares.

    Args:
        norm: `linf` or `l2`.
        queries: model queries per image.
        p_init: initial fraction of pixels changed per update.
        restarts: random restarts.
        seed: generator seed (drawn into torchattacks' seed).
    """

    uses_gradients = False  # a score-based search (Andriushchenko et al. 2020)

    loss = "margin"

    def __init__(
        self, norm: str | None = None, queries: int = 5000, p_init: float = 0.8, restarts: int = 1, seed: int = 0
    ) -> None:
        super().__init__(norm, seed)
        if int(queries) < 1 or not 0 < p_init <= 1 or int(restarts) < 1:
            raise ValueError(f"square: need queries >= 1, 0 < p_init <= 1, restarts >= 1 (got {queries}, {p_init})")
        self.queries, self.p_init, self.restarts = int(queries), float(p_init), int(restarts)

    def build(self, model: nn.Module, eps: float, seed: int, n_classes: int) -> Any:
        import torchattacks  # only where it runs: importing it costs scipy.stats at start-up

        return torchattacks.Square(
            model, norm=self.ta_norm(), eps=eps, n_queries=self.queries, n_restarts=self.restarts,
            p_init=self.p_init, resc_schedule=False, seed=seed,
        )  # fmt: skip

    def schedule(self, eps: float) -> tuple[int, float]:
        return self.queries, 0.0
