"""The registered models and `create_model`, which builds one for a task.

Every entry is a backbone plus one of: a regularizer module (identity in eval), an architecture
change (RCM), or a training method that the harness runs (group-wise inhibition, PGD adversarial
training, MixACM); their papers and defaults are in the modules named by each entry.
"""

from __future__ import annotations

from typing import Any

import robustbench_lfm.models.cifar_backbones  # noqa: F401  (registers preact-resnet18 and vgg16)
from robustbench_lfm.models import backbones as _backbones
from robustbench_lfm.models import lfm as _lfm  # noqa: F401  (registers lfm, lfm-code)
from robustbench_lfm.models.nets import ClassifierNet, ReIDNet, SiteNet
from robustbench_lfm.models.registry import (
    ModelEntry,
    get_backbone,
    get_default_strides,
    get_model_entry,
    get_rcm_strides,
    get_regularizer,
)
from robustbench_lfm.models.registry import register_model as _register
from robustbench_lfm.models.regularizers import Regularizer

DEFAULT_BACKBONE = "resnet-mini"
TASKS = ("reid", "classification")


def resolve_params(name: str, overrides: dict[str, Any], backbone: str | None = None) -> dict[str, Any]:
    """Every parameter of model `name`: the entry's defaults replaced by `overrides`, with
    `strides="rcm"` turned into the backbone's RCM strides ("1121" for resnet-mini).

    Raises:
        UnknownNameError: unknown model.
        TypeError: an override the model does not declare (the message lists the ones it does).
    """
    entry = get_model_entry(name)
    known = entry.defaults()
    bad = sorted(set(overrides) - set(known))
    if bad:
        listed = ", ".join(sorted(known)) or "none"
        raise TypeError(f"model {name!r} has no parameter(s) {', '.join(bad)} (it takes: {listed})")
    params = {**known, **overrides}
    if "strides" in params:
        name_ = backbone or entry.backbone or DEFAULT_BACKBONE
        default = get_default_strides(name_)
        rcm = get_rcm_strides(name_) or _backbones.rcm_strides(default)
        strides = rcm if params["strides"] == "rcm" else params["strides"]
        params["strides"] = "".join(map(str, _backbones.parse_strides(strides, default)))
    return params


def create_model(
    name: str,
    num_classes: int,
    task: str = "reid",
    mean: tuple[float, ...] = (0.5, 0.5, 0.5),
    std: tuple[float, ...] = (0.25, 0.25, 0.25),
    **overrides: Any,
) -> SiteNet:
    """Build the registered model `name` for `task`.

    Args:
        name: a registry name (see `list_models()`).
        num_classes: training identities (re-ID) or classes (classification).
        task: "reid" (a `ReIDNet`; ImageNet normalisation) or "classification" (a `ClassifierNet`).
        mean: per-channel mean of the [0, 1] images, normalised inside a classifier.
        std: per-channel std of the [0, 1] images.
        **overrides: `backbone=<name>`, `seed=<int>` and parameter values that replace the entry's
            defaults (`p=0.3` for LFM); training-method parameters are accepted and left to the harness.

    Raises:
        UnknownNameError: unknown model or backbone name (the message lists close matches).
        TypeError: an override the model does not declare.
        ValueError: a parameter value out of range, or an unknown task.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r} (known: {', '.join(TASKS)})")
    entry = get_model_entry(name)
    backbone_name = overrides.pop("backbone", None) or entry.backbone or DEFAULT_BACKBONE
    seed = int(overrides.pop("seed", 0))
    params = resolve_params(name, overrides, backbone_name)
    factory = get_backbone(backbone_name)
    backbone = factory(_backbones.parse_strides(params.get("strides"), get_default_strides(backbone_name)))
    regularizer: Regularizer | None = None
    if entry.regularizer != "none":
        made = get_regularizer(entry.regularizer)(seed=seed, **{k: params[k] for k in entry.regularizer_params()})
        if not isinstance(made, Regularizer):
            raise TypeError(f"regularizer {entry.regularizer!r} is not a models.regularizers.Regularizer")
        regularizer = made
    upsample = int(params.get("upsample", 1))
    if task == "reid":
        return ReIDNet(backbone, num_classes, regularizer, upsample)
    return ClassifierNet(backbone, num_classes, regularizer, mean, std, upsample)


for _entry in (
    ModelEntry("plain", description="backbone + head, no regularizer"),
    ModelEntry("dropout", "dropout", description="dropout p=0.5 before the classifier"),
    ModelEntry(
        "spatial-dropout",
        "spatial-dropout",
        params={"at": "stem"},
        description="channel dropout p=0.1 at LFM's insertion point (stem conv output)",
    ),
    ModelEntry(
        "dropblock",
        "dropblock",
        params={"at": "layer3"},
        description="DropBlock p=0.1, 3x3 blocks, after layer3",
    ),
    ModelEntry(
        "cutout",
        "cutout",
        description="Cutout: one square of half the short side, input space",
    ),
    ModelEntry(
        "random-erasing",
        "random-erasing",
        description="Random Erasing p=0.5 (the re-ID standard), mean-colour fill",
    ),
    ModelEntry(
        "lfm",
        "lfm",
        params={"at": "stem"},
        description="Local Feature Masking on the stem conv output (paper-intended, p=0.15)",
    ),
    ModelEntry(
        "lfm-code",
        "lfm-code",
        params={"at": "stem"},
        description="LFM as the released code runs: batch gate, first 8 samples, shared channels, row bands",
    ),
    ModelEntry(
        "rcm-up",
        arch={"upsample": 2},
        description="RCM: x2 nearest input upsampling inside the model (larger final feature map)",
    ),
    ModelEntry(
        "rcm-stride",
        arch={"strides": "rcm"},
        description="RCM: the first stride-2 stage gets stride 1 (ResNet-18 1222 -> 1122)",
    ),
    ModelEntry(
        "gwi",
        method="gwi",
        description="group-wise inhibition (TENET): extra step on inhibited layer3 features",
    ),
    ModelEntry(
        "pgd-at",
        method="pgd-at",
        description="PGD-10 adversarial training at 8/255 (SMA objective on re-ID)",
    ),
    ModelEntry(
        "mixacm",
        method="mixacm",
        method_params={"teacher": "pgd-at"},  # a model name: no method class holds it
        description="MixACM: distil a pgd-at teacher's activated channel maps on mixup inputs",
    ),
):
    _register(_entry)
