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

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from attacks.base import Attack, Problem


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
        return run_torchattacks(lambda seed, n: self.build(p.model, p.eps, seed, n), p)

    def resolved_objective(self, task: str) -> str:
        return self.loss

    def ta_norm(self) -> str:
        """torchattacks' spelling of the norm."""
        return {"linf": "Linf", "l2": "L2"}[self.norm]


def run_torchattacks(build: Callable[[int, int], Any], p: Problem) -> Tensor:
    """Build a torchattacks attack with `build(seed, n_classes)` and run it on p's images and labels.

    The seed comes from p's generator; torchattacks' global-RNG draws happen inside `fork_rng`.
    """
    assert p.context.labels is not None
    seed = int(torch.randint(2**31 - 1, (1,), generator=p.generator, device=p.generator.device))
    with torch.no_grad():
        n_classes = int(p.model(p.x[:1]).shape[1])
    with torch.random.fork_rng(devices=[p.x.device] if p.x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        attack = build(seed, n_classes)
        attack.set_device(p.x.device)
        return attack(p.x, p.context.labels.to(p.x.device))


class TorchattacksBackend:
    """Mixin for our attacks that torchattacks also implements (fgsm, pgd, pgd-l2).

    `backend=torchattacks` runs torchattacks' version instead of ours, for cross-checks and the
    overhead benchmark; it covers classification with the cross-entropy, one restart, no momentum.

    Args:
        backend: `native` (ours, every task and objective) or `torchattacks`.
    """

    def __init__(self, *args: Any, backend: str = "native", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if backend not in ("native", "torchattacks"):
            raise ValueError(f"backend={backend!r} is not one of native, torchattacks")
        plain = self.objective in ("auto", "ce") and self.restarts == 1 and not self.momentum  # type: ignore[attr-defined]
        if backend == "torchattacks" and not plain:
            raise ValueError("backend=torchattacks supports the cross-entropy objective, 1 restart, no momentum")
        self.backend = backend

    def torchattacks_attack(self, model: nn.Module, eps: float) -> Any:
        """The equivalent torchattacks attack at eps."""
        raise NotImplementedError

    def perturb(self, p: Problem) -> Tensor:
        if self.backend == "native":
            return super().perturb(p)  # type: ignore[misc]
        if p.context.task != "classification" or p.context.labels is None:
            raise ValueError("backend=torchattacks runs on classification models with labels only")
        return run_torchattacks(lambda seed, n: self.torchattacks_attack(p.model, p.eps), p)
