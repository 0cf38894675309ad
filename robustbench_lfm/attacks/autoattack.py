"""AutoAttack, standard version (Croce & Hein, ICML 2020, arXiv 2003.01690), via torchattacks.

Threat model: white-box plus black-box, L-inf (default; 8/255 on CIFAR-10) or L2 (0.5). The
standard ensemble runs APGD-CE, APGD-T (targeted DLR, 9 target classes), FAB-T and Square
(5000 queries) in turn, each on the images still classified correctly; an image counts as
robust only if it survives all four. Needs at least 3 classes (the targeted DLR loss).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from robustbench_lfm.attacks.registry import register_attack
from robustbench_lfm.attacks.wrapped import TorchattacksAttack


@register_attack("autoattack")
class AutoAttack(TorchattacksAttack):
    """The standard AutoAttack ensemble.

    Args:
        norm: `linf` or `l2`.
        version: `standard` (the published ensemble), `plus` or `rand` (torchattacks' others).
        seed: generator seed (drawn into torchattacks' seed).
    """

    loss = "ensemble"

    def __init__(self, norm: str | None = None, version: str = "standard", seed: int = 0) -> None:
        super().__init__(norm, seed)
        if version not in ("standard", "plus", "rand"):
            raise ValueError(f"autoattack: version={version!r} is not one of standard, plus, rand")
        self.version = version

    def build(self, model: nn.Module, eps: float, seed: int, n_classes: int) -> Any:
        if n_classes < 3:
            raise ValueError(f"autoattack needs at least 3 classes (the model has {n_classes})")
        import torchattacks  # only where it runs: importing it costs scipy.stats at start-up

        return torchattacks.AutoAttack(
            model, norm=self.ta_norm(), eps=eps, version=self.version, n_classes=n_classes, seed=seed
        )

    def schedule(self, eps: float) -> tuple[int, float]:
        return 0, 0.0  # an ensemble: steps differ per member
