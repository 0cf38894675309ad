"""PGD adversarial training (Madry et al., "Towards deep learning models resistant to adversarial
attacks", ICLR 2018, arXiv 1706.06083), model `pgd-at`.

Each batch is replaced by its PGD adversarial version, crafted with the model in eval mode and a
random start (as the RCM code does, docs/reference/methods.md §2.4), and the standard task loss is
minimised on it in train mode. The objective is the task's: cross-entropy for classification, and
for re-ID SMA (reid.md D2: push each embedding away from its own clean embedding), the attack the
LFM authors evaluate with. Defaults: L-inf eps = 8/255, 10 steps of 2/255 (PGD-10, the AT recipe
of docs/reference/methods.md §2.4). Units: pixel scale [0, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustbench_lfm import attacks
from robustbench_lfm.attacks.objectives import Task
from robustbench_lfm.recipe import TrainRecipe
from robustbench_lfm.training import optimize, task_loss


class AdversarialTraining:
    """The pgd-at step: PGD on the batch (eval mode), then the task loss on it (train mode)."""

    def __init__(
        self,
        recipe: TrainRecipe,
        seed: int,
        device: torch.device,
        eps: float = 8 / 255,
        steps: int = 10,
        step_size: float = 2 / 255,
    ) -> None:
        if not 0 < eps <= 1 or int(steps) < 1 or not step_size > 0:
            raise ValueError(f"pgd-at: need 0 < eps <= 1, steps >= 1, step_size > 0; got {eps}, {steps}, {step_size}")
        self.recipe, self.eps = recipe, float(eps)
        objective = "ce" if recipe.task == "classification" else "sma"
        self.attack = attacks.create_attack(
            "pgd", objective=objective, steps=int(steps), step_size=float(step_size), random_start=True, seed=seed
        )
        self.generator = torch.Generator(device).manual_seed(seed)

    @staticmethod
    def passes(params: dict) -> float:
        """Forward-backward passes per training image (robustbench_lfm/estimate.py): the update, and
        each PGD step at two thirds of a pass (a forward and a backward to the input, without the
        weights' gradients, which are half of a backward). Measured against plain on the 2-core
        machine, PGD-10 training cost 7.4x (resnet-mini) and 8.2x (resnet18), PGD-3 3.0x: this
        gives 7.7x and 3x; counting each step as a whole pass gave 11x and 4x."""
        return 1 + 2 / 3 * int(params["steps"])

    def adversarial(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The PGD version of the batch (the attack restores the model's train mode)."""
        task: Task = "classification" if self.recipe.task == "classification" else "reid"
        context = attacks.AttackContext(task, labels=y)
        return self.attack(model, x, context, eps=self.eps, generator=self.generator)

    def __call__(self, model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor) -> float:
        x_adv = self.adversarial(model, x, y).contiguous(memory_format=torch.channels_last)
        return optimize(opt, task_loss(model(x_adv), y, self.recipe))
