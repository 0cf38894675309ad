"""Training methods: how a model's weights are updated, beyond the standard loss.

A method is built per (model, seed) by `build_method` from the model's resolved parameters and
returns a step function `(model, optimizer, x, y) -> loss` that the training loop calls per batch
(robustbench_lfm/training.py). Registered names match `ModelEntry.method`:

* `standard` — the task loss (training.task_loss).
* `gwi` — group-wise inhibition (TENET; methods/gwi.py).
* `pgd-at` — PGD adversarial training (Madry et al.; methods/adversarial.py).
* `mixacm` — activated-channel-map distillation from a robust teacher on mixup inputs (methods/mixacm.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import models
from robustbench_lfm.methods.adversarial import AdversarialTraining
from robustbench_lfm.methods.gwi import GroupWiseInhibition
from robustbench_lfm.methods.mixacm import MixACM
from robustbench_lfm.recipe import TrainRecipe
from robustbench_lfm.training import StepFn, standard_step

METHODS = ("standard", "gwi", "pgd-at", "mixacm")

# The method classes' signatures are the one home of their defaults; the model registry reads them.
for _name, _cls in (("gwi", GroupWiseInhibition), ("pgd-at", AdversarialTraining), ("mixacm", MixACM)):
    models.register_method(_name, _cls)


def build_method(
    name: str,
    params: dict[str, Any],
    recipe: TrainRecipe,
    seed: int,
    device: torch.device,
    teacher: nn.Module | None = None,
) -> StepFn:
    """The step function of training method `name` with the model's resolved `params`.

    Args:
        name: a method name (`ModelEntry.method`).
        params: the model's resolved parameters; the method takes the ones it declares.
        recipe: the training recipe (task, label smoothing, ...).
        seed: the training seed; the method's own random draws come from it.
        device: where the model trains.
        teacher: MixACM's trained teacher (eval mode); None for the other methods.
    """
    if name == "standard":
        return standard_step(recipe)
    if name == "gwi":
        return GroupWiseInhibition(recipe, seed, device, **params)
    if name == "pgd-at":
        return AdversarialTraining(recipe, seed, device, **params)
    if name == "mixacm":
        if teacher is None:
            raise ValueError("mixacm needs its trained teacher model")
        return MixACM(recipe, seed, device, teacher, **{k: v for k, v in params.items() if k != "teacher"})
    raise ValueError(f"unknown training method {name!r} (known: {', '.join(METHODS)})")
