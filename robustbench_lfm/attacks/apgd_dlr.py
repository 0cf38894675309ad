"""APGD-DLR: auto-PGD on the difference-of-logits-ratio loss (Croce & Hein, ICML 2020), via torchattacks.

Threat model: white-box, L-inf (default) or L2. DLR = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)
is invariant to shifting and rescaling the logits, which defeats one kind of gradient masking;
it needs at least 3 classes. Defaults as APGD-CE: 100 iterations, 1 restart, rho = 0.75.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from robustbench_lfm.attacks.apgd_ce import APGDCE
from robustbench_lfm.attacks.registry import register_attack


@register_attack("apgd-dlr")
class APGDDLR(APGDCE):
    """Auto-PGD with the DLR loss; options as `apgd-ce`."""

    loss = "dlr"

    def build(self, model: nn.Module, eps: float, seed: int, n_classes: int) -> Any:
        if n_classes < 3:
            raise ValueError(f"apgd-dlr needs at least 3 classes (the model has {n_classes}); use apgd-ce")
        return super().build(model, eps, seed, n_classes)
