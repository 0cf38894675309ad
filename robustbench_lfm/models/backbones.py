"""ResNet backbones for re-ID (He et al., CVPR 2016), split so regularizers can sit between parts.

Every backbone exposes the same parts: `stem_conv` (the first convolution; LFM masks its output,
docs/reference/methods.md §1.2), `stem_post` (BN, ReLU and any stem pooling), `stages` (the residual
stages) and `out_channels` (the width of the pooled feature).

* `resnet-mini` — the CPU-sized default: a 3x3 stride-2 stem (32 channels) and four one-block
  stages of widths 32/64/96/128 with strides 1/2/2/1, about 0.5 M parameters. A 64x32 input
  gives a 32x16 stem map and an 8x4 final map. Real datasets are resized to 128x64 for it
  (Market-1501's native crop size).
* `resnet18` — ResNet-18 with the CIFAR stem (He et al.; the RCM and adversarial-training papers'
  CIFAR-10 backbone, docs/reference/methods.md §2.3): 3x3 stride-1 stem, no pooling, basic-block
  stages [2, 2, 2, 2] of widths 64/128/256/512 with strides 1/2/2/2 ("1222"); 32x32 gives a 4x4
  final map, about 11 M parameters.
* `resnet50` — ResNet-50 with last stride 1 as in the strong re-ID baseline (Luo et al., CVPRW
  2019; docs/reference/reid.md C1): 7x7 stride-2 stem, 3x3 stride-2 max-pool, bottleneck stages
  [3, 4, 6, 3], 2048-d output; a 256x128 input gives a 128x64 stem map and a 16x8 final map.
  Real datasets are resized to 256x128 for it, as every re-ID framework does.
  Weights start random: lfm-bench downloads nothing.

Every factory takes `strides`, one digit per residual stage, so RCM's stride variant (§2.3) changes
an existing backbone: a stage's first block carries the stride on its 3x3 conv and its 1x1
shortcut together. `rcm_strides` gives the RCM setting: the first stride-2 stage set to 1.
"""

from __future__ import annotations

from torch import Tensor, nn

from robustbench_lfm.models.registry import register_backbone


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity or 1x1 projection shortcut."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 3, stride, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x: Tensor) -> Tensor:
        return (self.body(x) + self.shortcut(x)).relu_()


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, with a projection shortcut."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x: Tensor) -> Tensor:
        return (self.body(x) + self.shortcut(x)).relu_()


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class SplitBackbone(nn.Module):
    """What every backbone exposes (module docstring): `stem_conv`, `stem_post`, four `stages`,
    `out_channels` and its `strides` (one digit per down-sampling stage)."""

    stem_conv: nn.Module
    stem_post: nn.Module
    stages: nn.Sequential
    out_channels: int
    strides: tuple[int, ...]

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.stem_post(self.stem_conv(x)))


class ResNetBackbone(SplitBackbone):
    """A ResNet split into stem conv, stem post-processing and residual stages."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        stem: nn.Conv2d,
        stem_pool: bool,
        widths: tuple[int, ...],
        depths: tuple[int, ...],
        strides: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.stem_conv = stem
        post: list[nn.Module] = [nn.BatchNorm2d(stem.out_channels), nn.ReLU(inplace=True)]
        if stem_pool:
            post.append(nn.MaxPool2d(3, 2, 1))
        self.stem_post = nn.Sequential(*post)
        self.strides = tuple(strides)
        stages, cin = [], stem.out_channels
        for width, depth, stride in zip(widths, depths, strides, strict=True):
            blocks = []
            for i in range(depth):
                blocks.append(block(cin, width, stride if i == 0 else 1))
                cin = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.out_channels = cin
        _init_weights(self)


def kaiming_convs(module: nn.Module) -> None:
    """Kaiming-normal (fan-out, ReLU) weights for every convolution of `module`."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def _init_weights(module: nn.Module) -> None:
    """Kaiming-normal convolutions; the last BN of each residual body starts at zero (Goyal et al.)."""
    kaiming_convs(module)
    for m in module.modules():
        if isinstance(m, (BasicBlock, Bottleneck)):
            last_bn = m.body[-1]
            assert isinstance(last_bn, nn.BatchNorm2d)
            nn.init.zeros_(last_bn.weight)


def parse_strides(strides: str | int | tuple[int, ...] | None, default: tuple[int, ...]) -> tuple[int, ...]:
    """'1122' (or 1122, or (1, 1, 2, 2)) -> (1, 1, 2, 2); None -> `default`. One digit per stage, 1 or 2."""
    if strides is None or strides == "":
        return default
    digits = tuple(int(d) for d in str(strides)) if not isinstance(strides, tuple) else strides
    if len(digits) != len(default) or not set(digits) <= {1, 2}:
        raise ValueError(
            f"strides={strides!r}: give one digit (1 or 2) per residual stage, {len(default)} digits, "
            f"e.g. {''.join(map(str, default))}"
        )
    return digits


def rcm_strides(default: tuple[int, ...]) -> tuple[int, ...]:
    """RCM's stride setting for a ResNet (docs/reference/methods.md §2.3): the first stride-2 stage gets
    stride 1. A backbone with another rule registers it (`vgg16`: the first two pools removed)."""
    if 2 not in default:
        raise ValueError(f"strides {default} have no stride-2 stage to shrink")
    i = default.index(2)
    return (*default[:i], 1, *default[i + 1 :])


RESNET_MINI_STRIDES = (1, 2, 2, 1)
RESNET18_STRIDES = (1, 2, 2, 2)
RESNET50_STRIDES = (1, 2, 2, 1)


@register_backbone("resnet-mini", input_size=(128, 64))
def resnet_mini(strides: tuple[int, ...] = RESNET_MINI_STRIDES) -> ResNetBackbone:
    """CPU-sized ResNet: 3x3/2 stem, one basic block per stage, widths 32/64/96/128, last stride 1."""
    stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
    return ResNetBackbone(BasicBlock, stem, False, (32, 64, 96, 128), (1, 1, 1, 1), strides)


@register_backbone("resnet18", input_size=(256, 128))
def resnet18(strides: tuple[int, ...] = RESNET18_STRIDES) -> ResNetBackbone:
    """ResNet-18 with the CIFAR stem (3x3 stride 1, no max-pool), randomly initialised."""
    stem = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    return ResNetBackbone(BasicBlock, stem, False, (64, 128, 256, 512), (2, 2, 2, 2), strides)


@register_backbone("resnet50", input_size=(256, 128))
def resnet50(strides: tuple[int, ...] = RESNET50_STRIDES) -> ResNetBackbone:
    """ResNet-50 with last stride 1 (strong re-ID baseline), randomly initialised."""
    stem = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    return ResNetBackbone(Bottleneck, stem, True, (64, 128, 256, 512), (3, 4, 6, 3), strides)
