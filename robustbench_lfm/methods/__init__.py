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

import inspect
from typing import Any

import torch
from torch import nn

from robustbench_lfm import models
from robustbench_lfm.methods.adversarial import AdversarialTraining
from robustbench_lfm.methods.gwi import GroupWiseInhibition
from robustbench_lfm.methods.mixacm import MixACM
from robustbench_lfm.recipe import TrainRecipe
from robustbench_lfm.training import StepFn, standard_step

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

    Every registered method is a class called as `cls(recipe, seed, device, **its parameters)`,
    plus `teacher_model=` when its constructor takes one; `standard` is the task loss alone.

    Args:
        name: a method name (`ModelEntry.method`).
        params: the model's resolved parameters; the method takes the ones it declares.
        recipe: the training recipe (task, label smoothing, ...).
        seed: the training seed; the method's own random draws come from it.
        device: where the model trains.
        teacher: the trained teacher (eval mode) of a method that distils one (MixACM); else None.
    """
    cls = models.registry.METHODS[name]
    if cls is models.registry.StandardTraining:
        return standard_step(recipe)
    declared = models.method_defaults(name)
    kwargs: dict[str, Any] = {k: v for k, v in params.items() if k in declared}
    if "teacher_model" in inspect.signature(cls).parameters:
        if teacher is None:
            raise ValueError(f"{name} needs its trained teacher model")
        kwargs["teacher_model"] = teacher
    return cls(recipe, seed, device, **kwargs)
