"""Networks with named regularizer sites: `ReIDNet` (BNNeck embedding) and `ClassifierNet` (logits).

Both share one trunk (`SiteNet`): images in [0, 1] are normalized inside the model, so attack
budgets stay on the pixel scale; an optional nearest-neighbour upsampling follows (RCM's input
upsampling, docs/reference/methods.md §2.2, done after normalisation as in the RCM code); then the
backbone runs part by part, with one regularizer site after each part:

    input -> stem (stem conv output, before its BN) -> pool (after the stem BN/ReLU/pooling)
          -> layer1 -> layer2 -> layer3 -> layer4 -> [global average pooling] -> head

`trunk(x, after=..., until=...)` runs any contiguous stretch of that chain, which the training
methods use to tap features (MixACM) or to mask them and finish the pass (group-wise inhibition).

* `ReIDNet` — the strong re-ID baseline head (Luo et al., CVPRW 2019; docs/reference/reid.md C1): a
  BatchNorm1d "BNNeck" with its shift frozen at 0 gives the embedding f_i; a bias-free linear
  layer gives the ID logits. Eval mode returns f_i; train mode returns (ID logits, pooled f_t).
* `ClassifierNet` — global average pooling and a linear layer; logits in both modes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_lfm.models.backbones import SplitBackbone
from robustbench_lfm.models.regularizers import SITES, Regularizer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRUNK_SITES = SITES[:-1]  # every site but "head"


class SiteNet(nn.Module):
    """Normalization, optional upsampling and a backbone, with a regularizer slot at every site."""

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        backbone: SplitBackbone,
        regularizer: Regularizer | None,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        upsample: int = 1,
    ) -> None:
        super().__init__()
        if upsample < 1:
            raise ValueError(f"upsample={upsample} must be an integer >= 1 (2 = RCM's x2 input upsampling)")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.upsample = int(upsample)
        self.backbone = backbone
        self.regularizers = nn.ModuleDict(
            {
                site: regularizer if regularizer is not None and regularizer.site == site else nn.Identity()
                for site in SITES
            }
        )
        self.embedding_dim = backbone.out_channels

    def _part(self, site: str, x: Tensor) -> Tensor:
        """The computation that ends at `site` (before that site's regularizer)."""
        if site == "input":
            x = (x - self.mean) / self.std
            return F.interpolate(x, scale_factor=self.upsample, mode="nearest") if self.upsample > 1 else x
        if site == "stem":
            return self.backbone.stem_conv(x)
        if site == "pool":
            return self.backbone.stem_post(x)
        return self.backbone.stages[int(site.removeprefix("layer")) - 1](x)

    def trunk(self, x: Tensor, after: str | None = None, until: str = "layer4") -> Tensor:
        """Run from just after site `after` (None: from [0, 1] images) through site `until`, each
        part followed by its site's regularizer."""
        start = 0 if after is None else TRUNK_SITES.index(after) + 1
        for site in TRUNK_SITES[start : TRUNK_SITES.index(until) + 1]:
            x = self.regularizers[site](self._part(site, x))
        return x

    def head(self, fmap: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """What `forward` returns, from the final feature map."""
        raise NotImplementedError

    def class_logits(self, fmap: Tensor) -> Tensor:
        """Class (or training-identity) logits from the final feature map, in any mode."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        return self.head(self.trunk(x))

    def reseed(self, seed: int) -> None:
        """Reseed every regularizer's generator (called once per training seed)."""
        for module in self.regularizers.values():
            if isinstance(module, Regularizer):
                module.reseed(seed)


class ReIDNet(SiteNet):
    """Re-ID model: trunk -> GAP -> BNNeck; eval returns the embedding, train (ID logits, f_t)."""

    task = "reid"

    def __init__(self, backbone: SplitBackbone, num_classes: int, regularizer: Regularizer | None, upsample: int = 1):
        super().__init__(backbone, regularizer, IMAGENET_MEAN, IMAGENET_STD, upsample)
        if num_classes < 2:
            raise ValueError(f"ReIDNet needs num_classes >= 2 training identities, got {num_classes}")
        dim = backbone.out_channels
        self.neck = nn.BatchNorm1d(dim)
        self.neck.bias.requires_grad_(False)
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def head(self, fmap: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        pooled = fmap.mean(dim=(2, 3))
        emb = self.neck(pooled)
        if not self.training:
            return emb
        return self.classifier(self.regularizers["head"](emb)), pooled

    def class_logits(self, fmap: Tensor) -> Tensor:
        return self.classifier(self.regularizers["head"](self.neck(fmap.mean(dim=(2, 3)))))


class ClassifierNet(SiteNet):
    """Image classifier: trunk -> GAP -> [head regularizer] -> linear; logits in both modes."""

    task = "classification"

    def __init__(
        self,
        backbone: SplitBackbone,
        num_classes: int,
        regularizer: Regularizer | None,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        upsample: int = 1,
    ) -> None:
        super().__init__(backbone, regularizer, mean, std, upsample)
        if num_classes < 2:
            raise ValueError(f"ClassifierNet needs num_classes >= 2, got {num_classes}")
        self.fc = nn.Linear(backbone.out_channels, num_classes)

    def head(self, fmap: Tensor) -> Tensor:
        return self.class_logits(fmap)

    def class_logits(self, fmap: Tensor) -> Tensor:
        return self.fc(self.regularizers["head"](fmap.mean(dim=(2, 3))))


class FlipAveraged(nn.Module):
    """Wraps a re-ID model so its eval embedding is the mean of the image's and its mirror's.

    Flip-averaged test features are a common re-ID option (docs/reference/reid.md B1); wrapping the
    model, rather than the feature extraction, makes attacks see the same model that is scored.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            raise RuntimeError("FlipAveraged is for evaluation; train the wrapped model itself")
        return (self.net(x) + self.net(x.flip(-1))) / 2
