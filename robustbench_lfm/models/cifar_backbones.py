"""RCM's other CIFAR architectures (Xu et al., "Understanding Adversarial Robustness from Feature
Maps of Convolutional Layers"; docs/reference/methods.md §2.3), with the same parts as the ResNets
(`stem_conv`, `stem_post`, four `stages`, `out_channels`, `strides`) so every regularizer site and
RCM's two rules apply to them unchanged.

* `preact-resnet18` — pre-activation ResNet-18 (He et al., ECCV 2016) with the CIFAR stem: a 3x3
  stride-1 convolution, then basic blocks of BN-ReLU-conv [2, 2, 2, 2] of widths 64/128/256/512,
  strides "1222", a final BN-ReLU; 32x32 gives a 4x4 final map. RCM strides "1122" (layer2's
  stride 2 -> 1, its 1x1 shortcut with it), as for ResNet-18.
* `vgg16` — VGG-16 with batch norm (Simonyan & Zisserman, ICLR 2015): 13 3x3 convolutions in five
  blocks (64x2, 128x2, 256x3, 512x3, 512x3), each block ending in a 2x2 max-pool; one stride digit
  per pool, and a stride of 1 removes that pool (RCM's code). Default "22222" (32x32 -> 1x1);
  RCM strides "11222" (the first two pools removed; 32x32 -> 4x4). The first convolution is the
  stem (LFM's site), the rest of block 1 with its pool is `stem_post`, blocks 2-5 are layer1-4.
* `alexnet` — RCM's CIFAR AlexNet (Krizhevsky et al., NeurIPS 2012, at CIFAR scale): conv1 5x5
  (64, stride s0, pad 2), 2x2 max-pool (stride s1), conv2 5x5 (192) and a 2x2 max-pool (s2),
  conv3-5 3x3 (384, 256, 256) and a 2x2 max-pool (s3), ReLU after each convolution, no batch
  norm. Strides "s0 s1 s2 s3": default "2222" (32x32 -> 2x2); RCM strides "1122" (conv1 and the
  first pool at stride 1, so k2/s1 shrinks the map by one pixel; 32x32 -> 7x7). conv1 is the
  stem, its ReLU and pool `stem_post`, then layer1 = conv2 + pool, layer2 = conv3, layer3 =
  conv4, layer4 = conv5 + pool.

The harness's head (global average pooling, then its linear classifier or re-ID neck) replaces
RCM's MLP heads (VGG: 512-256-256-10, AlexNet: 256-512-512-10, with dropout), so these networks
are RCM's trunks under the harness's common head. Weights start random (Kaiming-normal convolutions).
"""

from __future__ import annotations

import itertools

from torch import Tensor, nn

from robustbench_lfm.models.backbones import SplitBackbone, kaiming_convs
from robustbench_lfm.models.registry import register_backbone

VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
VGG16_STRIDES = (2, 2, 2, 2, 2)
ALEXNET_STRIDES = (2, 2, 2, 2)
PREACT18_STRIDES = (1, 2, 2, 2)


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3 twice; the shortcut (identity or 1x1 projection) reads the first activation."""

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(width), nn.Conv2d(width, width, 3, 1, 1, bias=False)
        project = stride != 1 or cin != width
        self.shortcut = nn.Conv2d(cin, width, 1, stride, bias=False) if project else None

    def forward(self, x: Tensor) -> Tensor:
        a = self.bn1(x).relu()
        skip = x if self.shortcut is None else self.shortcut(a)
        return self.conv2(self.bn2(self.conv1(a)).relu()) + skip


class PreActResNet(SplitBackbone):
    """Pre-activation ResNet: conv stem, four stages of PreActBlocks, a final BN-ReLU in layer4."""

    def __init__(self, depths: tuple[int, ...], widths: tuple[int, ...], strides: tuple[int, ...]) -> None:
        super().__init__()
        self.stem_conv = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.stem_post = nn.Identity()  # pre-activation: each block opens with its own BN-ReLU
        self.strides = tuple(strides)
        stages, cin = [], widths[0]
        for width, depth, stride in zip(widths, depths, strides, strict=True):
            blocks: list[nn.Module] = [PreActBlock(cin if i == 0 else width, width, stride if i == 0 else 1)
                                       for i in range(depth)]  # fmt: skip
            stages.append(nn.Sequential(*blocks))
            cin = width
        stages[-1].append(nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True)))
        self.stages = nn.Sequential(*stages)
        self.out_channels = cin
        kaiming_convs(self)


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _pool(stride: int) -> list[nn.Module]:
    """A block's 2x2 max-pool, or none at stride 1 (RCM removes the pool)."""
    return [nn.MaxPool2d(2, 2)] if stride == 2 else []


class VGG(SplitBackbone):
    """VGG with batch norm split into the harness's parts (module docstring)."""

    def __init__(self, blocks: tuple[tuple[int, ...], ...], strides: tuple[int, ...]) -> None:
        super().__init__()
        first = blocks[0]
        self.stem_conv = nn.Conv2d(3, first[0], 3, 1, 1, bias=False)
        post: list[nn.Module] = [nn.BatchNorm2d(first[0]), nn.ReLU(inplace=True)]
        for cin, cout in itertools.pairwise(first):
            post += _conv_bn_relu(cin, cout)
        self.stem_post = nn.Sequential(*post, *_pool(strides[0]))
        self.strides = tuple(strides)
        stages, cin = [], first[-1]
        for widths, stride in zip(blocks[1:], strides[1:], strict=True):
            layers: list[nn.Module] = []
            for width in widths:
                layers += _conv_bn_relu(cin, width)
                cin = width
            stages.append(nn.Sequential(*layers, *_pool(stride)))
        self.stages = nn.Sequential(*stages)
        self.out_channels = cin
        kaiming_convs(self)


class AlexNet(SplitBackbone):
    """RCM's CIFAR AlexNet split into the harness's parts (module docstring)."""

    def __init__(self, strides: tuple[int, ...]) -> None:
        super().__init__()
        s0, s1, s2, s3 = strides
        self.stem_conv = nn.Conv2d(3, 64, 5, s0, 2)
        self.stem_post = nn.Sequential(nn.ReLU(inplace=True), nn.MaxPool2d(2, s1))
        self.strides = tuple(strides)
        self.stages = nn.Sequential(
            nn.Sequential(nn.Conv2d(64, 192, 5, 1, 2), nn.ReLU(inplace=True), nn.MaxPool2d(2, s2)),
            nn.Sequential(nn.Conv2d(192, 384, 3, 1, 1), nn.ReLU(inplace=True)),
            nn.Sequential(nn.Conv2d(384, 256, 3, 1, 1), nn.ReLU(inplace=True)),
            nn.Sequential(nn.Conv2d(256, 256, 3, 1, 1), nn.ReLU(inplace=True), nn.MaxPool2d(2, s3)),
        )
        self.out_channels = 256
        kaiming_convs(self)


@register_backbone("preact-resnet18", input_size=(256, 128))
def preact_resnet18(strides: tuple[int, ...] = PREACT18_STRIDES) -> PreActResNet:
    """Pre-activation ResNet-18 with the CIFAR stem, randomly initialised."""
    return PreActResNet((2, 2, 2, 2), (64, 128, 256, 512), strides)


@register_backbone("vgg16", input_size=(256, 128), rcm_strides=(1, 1, 2, 2, 2))
def vgg16(strides: tuple[int, ...] = VGG16_STRIDES) -> VGG:
    """VGG-16 with batch norm, one stride digit per max-pool (1 removes it), randomly initialised."""
    return VGG(VGG16_BLOCKS, strides)


@register_backbone("alexnet", input_size=(256, 128), rcm_strides=(1, 1, 2, 2))
def alexnet(strides: tuple[int, ...] = ALEXNET_STRIDES) -> AlexNet:
    """RCM's CIFAR AlexNet, strides (conv1, pool1, pool2, pool3), randomly initialised."""
    if len(strides) != 4:
        raise ValueError(f"alexnet takes 4 strides (conv1 and three pools), not {len(strides)}")
    return AlexNet(tuple(strides))
