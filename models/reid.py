"""`ReIDNet`: backbone + BNNeck re-ID model with regularizer sites, and the registered models.

Architecture (the strong re-ID baseline, Luo et al., CVPRW 2019; reference/reid.md C1): images in
[0, 1] are normalized inside the model (ImageNet mean/std), so attack budgets stay on the pixel
scale; the backbone feature map is global-average-pooled to f_t; a BatchNorm1d "BNNeck" with its
shift frozen at 0 gives f_i; a bias-free linear layer gives the ID logits.

In eval mode the model returns f_i, the retrieval embedding (compared by cosine distance by
default). In train mode it returns (ID logits, f_t): the ID loss sees the logits and the triplet
loss sees the pre-neck feature.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from models import backbones as _backbones  # noqa: F401  (registers the backbones)
from models.registry import (
    ModelEntry,
    get_backbone,
    get_model_entry,
    get_regularizer,
    register_model,
)
from models.regularizers import SITES, Regularizer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ReIDNet(nn.Module):
    """Normalize -> [input reg] -> stem conv -> [stem reg] -> stem post -> stages -> GAP -> BNNeck."""

    def __init__(self, backbone: nn.Module, num_classes: int, regularizer: Regularizer | None) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"ReIDNet needs num_classes >= 2 training identities, got {num_classes}")
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.backbone = backbone
        self.regularizers = nn.ModuleDict(
            {
                site: regularizer if regularizer is not None and regularizer.site == site else nn.Identity()
                for site in SITES
            }
        )
        dim = backbone.out_channels
        self.neck = nn.BatchNorm1d(dim)
        self.neck.bias.requires_grad_(False)
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)
        self.embedding_dim = dim

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        x = self.regularizers["input"]((x - self.mean) / self.std)
        f = self.regularizers["stem"](self.backbone.stem_conv(x))
        f = self.backbone.stages(self.backbone.stem_post(f))
        pooled = f.mean(dim=(2, 3))
        emb = self.neck(pooled)
        if not self.training:
            return emb
        return self.classifier(self.regularizers["head"](emb)), pooled

    def reseed(self, seed: int) -> None:
        """Reseed every regularizer's generator (called once per training seed)."""
        for module in self.regularizers.values():
            if isinstance(module, Regularizer):
                module.reseed(seed)


class FlipAveraged(nn.Module):
    """Wraps a re-ID model so its eval embedding is the mean of the image's and its mirror's.

    Flip-averaged test features are a common re-ID option (reference/reid.md B1); wrapping the
    model, rather than the feature extraction, makes attacks see the same model that is scored.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            raise RuntimeError("FlipAveraged is for evaluation; train the wrapped model itself")
        return (self.net(x) + self.net(x.flip(-1))) / 2


def create_model(name: str, num_classes: int, **overrides: Any) -> ReIDNet:
    """Build the registered model `name` with a classifier over `num_classes` identities.

    Args:
        name: a registry name (see `list_models()`).
        num_classes: number of training identities.
        **overrides: `backbone=<name>`, `seed=<int>` and regularizer keyword arguments that
            replace the entry's defaults (e.g. `p=0.3` for LFM).

    Raises:
        UnknownNameError: unknown model or backbone name (the message lists close matches).
        TypeError: an override the regularizer does not accept.
    """
    entry = get_model_entry(name)
    backbone = get_backbone(overrides.pop("backbone", entry.backbone))()
    seed = int(overrides.pop("seed", 0))
    params = {**entry.params, **overrides}
    regularizer = None
    if entry.regularizer != "none":
        regularizer = get_regularizer(entry.regularizer)(seed=seed, **params)
    elif params:
        raise TypeError(f"model {name!r} has no regularizer parameters; got {sorted(params)}")
    return ReIDNet(backbone, num_classes, regularizer)


register_model(ModelEntry("plain", "none", description="backbone + BNNeck, no regularizer"))
register_model(
    ModelEntry(
        "dropout",
        "dropout",
        params={"p": 0.5},
        description="dropout p=0.5 before the ID classifier",
    )
)
register_model(
    ModelEntry(
        "cutout",
        "cutout",
        params={"p": 1.0, "size": 0.5},
        description="Cutout: one square of half the short side, input space",
    )
)
register_model(
    ModelEntry(
        "lfm",
        "lfm",
        params={"p": 0.15, "channels": 0.5, "area": (0.02, 0.4), "aspect": 0.3},
        description="Local Feature Masking on the stem conv output (paper-intended, p=0.15)",
    )
)
