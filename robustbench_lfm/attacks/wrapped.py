"""Classification attacks from torchattacks (Kim, arXiv 2010.01950), wrapped to our contract.

torchattacks builds an attack around a model; ours are built without one and called with it.
`TorchattacksAttack` builds the torchattacks object inside each call, on the input's device, with
the model already in eval mode and its parameter gradients off (the base class), and draws its
seed from our generator inside `torch.random.fork_rng`, so torchattacks' use of the global RNG
(random starts, APGD's and Square's seeding) is deterministic under our seed and leaves the
caller's RNG untouched. The base class then projects onto the eps-ball of the attack's norm,
which turns minimum-norm attacks (CW, DeepFool) into budgeted ones.

These attacks read logits and labels, so they run on classification models only.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from robustbench_lfm.attacks.backends import run_torchattacks
from robustbench_lfm.attacks.base import Attack, Problem


class TorchattacksAttack(Attack):
    """Base of the wrapped attacks; subclasses implement `build`.

    Args:
        norm: the threat model's norm, `linf` or `l2` (fixed for some attacks).
        seed: seed of the generator the torchattacks seed is drawn from.
    """

    tasks = ("classification",)
    loss: ClassVar[str] = "ce"
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2")

    def __init__(self, norm: str | None = None, seed: int = 0) -> None:
        norm = self.norms[0] if norm is None else norm
        if norm not in self.norms:
            raise ValueError(f"{self.name}: norm={norm!r} is not supported (supported: {', '.join(self.norms)})")
        super().__init__("auto", norm, None, seed)

    @classmethod
    def class_defaults(cls, signature: dict[str, Any]) -> dict[str, Any]:
        return {"norm": cls.norms[0]} if "norm" in signature else {}

    def build(self, model: nn.Module, eps: float, seed: int, n_classes: int) -> Any:
        """The torchattacks attack for `model` at budget eps."""
        raise NotImplementedError

    def perturb(self, p: Problem) -> Tensor:
        if p.context.labels is None:
            raise ValueError(f"{self.name} needs the true labels in the AttackContext")
        return run_torchattacks(lambda model, seed, n: self.build(model, p.eps, seed, n), p)

    def resolved_objective(self, task: str) -> str:
        return self.loss

    def ta_norm(self) -> str:
        """torchattacks' spelling of the norm."""
        return {"linf": "Linf", "l2": "L2"}[self.norm]
