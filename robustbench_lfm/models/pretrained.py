"""ImageNet-style initialisation of our ResNet backbones from a torchvision-layout state dict.

torchvision names a ResNet's tensors `conv1.weight`, `bn1.*`, `layer{1-4}.{block}.conv{1,2,3}.*`,
`layer*.*.bn{1,2,3}.*`, `layer*.*.downsample.{0,1}.*` and `fc.*`. `torchvision_key_map` maps them
to our parts (`stem_conv`, `stem_post.0`, `stages.{i}.{block}.body.{k}`, `...shortcut.{k}`);
`fc.*` (the ImageNet classifier) is dropped. Strides do not change any tensor's shape, so the
last-stride-1 `resnet50` and RCM's stride variants take the same weights. `load_torchvision`
refuses a state dict with any missing, unexpected or misshapen key and names them all
(`PretrainedError`), so a ResNet-18 file never half-loads into ours (which has the CIFAR 3x3
stem). `load_reid_layout` does the same for whole re-ID models trained by lfm-bench, torchreid or
fast-reid (`--models ckpt:PATH`). Reads no file: the harness reads it (robustbench_lfm/pretrained.py).
Imports torch only.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from robustbench_lfm.models.backbones import BasicBlock, Bottleneck, ResNetBackbone, SplitBackbone

# torchvision's module name inside a block -> our index in the block's `body` Sequential
_BODY = {"conv1": 0, "bn1": 1, "conv2": 3, "bn2": 4, "conv3": 6, "bn3": 7}
_IGNORED_PREFIXES = ("fc.",)


class PretrainedError(ValueError):
    """A state dict that does not fit the backbone; the message lists every offending key."""


def torchvision_key_map(backbone: ResNetBackbone) -> dict[str, str]:
    """torchvision key -> our key, for every tensor (parameters and buffers) of `backbone`."""
    ours = set(backbone.state_dict())
    out: dict[str, str] = {}
    for key in ours:
        theirs = _theirs(key)
        if theirs is not None:
            out[theirs] = key
    return out


def _theirs(key: str) -> str | None:
    """Our key's torchvision name (None when torchvision has no such tensor)."""
    parts = key.split(".")
    if parts[0] == "stem_conv":
        return "conv1." + ".".join(parts[1:])
    if parts[0] == "stem_post" and parts[1] == "0":
        return "bn1." + ".".join(parts[2:])
    if parts[0] != "stages":
        return None
    stage, block, kind, index, *rest = parts[1:]
    prefix = f"layer{int(stage) + 1}.{block}"
    if kind == "shortcut":
        return f"{prefix}.downsample.{index}." + ".".join(rest)
    names = {v: k for k, v in _BODY.items()}
    return f"{prefix}.{names[int(index)]}." + ".".join(rest) if int(index) in names else None


def load_torchvision(backbone: SplitBackbone, state: Mapping[str, Tensor]) -> None:
    """Copy a torchvision-layout ResNet state dict into `backbone` (in place), all or nothing.

    Raises:
        PretrainedError: the backbone is not a ResNet; keys the backbone lacks (unexpected), keys the
            file lacks (missing) or tensors of another shape (misshapen), all listed; nothing is copied then.
    """
    if not isinstance(backbone, ResNetBackbone):
        raise PretrainedError(f"torchvision ResNet weights fit ResNet backbones only, not {type(backbone).__name__}")
    if not any(isinstance(m, (BasicBlock, Bottleneck)) for m in backbone.modules()):
        raise PretrainedError("the backbone has no residual blocks to initialise")
    given = {k: v for k, v in state.items() if not k.startswith(_IGNORED_PREFIXES)}
    mapping = torchvision_key_map(backbone)
    mapped = {ours: given[theirs] for theirs, ours in mapping.items() if theirs in given}
    unexpected = sorted(set(given) - set(mapping))
    _check_fit(backbone, mapped, unexpected, "torchvision ResNet layout", {v: k for k, v in mapping.items()})
    backbone.load_state_dict(mapped, strict=True)


def _check_fit(
    module: nn.Module,
    mapped: Mapping[str, Tensor],
    unexpected: list[str],
    layout: str,
    names: Mapping[str, str] | None = None,
) -> None:
    """PretrainedError listing what keeps `mapped` (our key -> tensor) from loading into `module`
    strictly: keys the file lacks, keys it has that nothing takes, tensors of another shape.
    `names` gives our keys' names in the file's layout, for the message."""
    ours, names = module.state_dict(), names or {}
    missing = sorted(names.get(k, k) for k in set(ours) - set(mapped))
    misshapen = sorted(
        f"{names.get(k, k)} {tuple(v.shape)} (needs {tuple(ours[k].shape)})"
        for k, v in mapped.items()
        if k in ours and tuple(v.shape) != tuple(ours[k].shape)
    )
    problems = [
        f"{label}: {', '.join(keys[:8])}{f' and {len(keys) - 8} more' if len(keys) > 8 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("misshapen", misshapen))
        if keys
    ]
    if problems:
        raise PretrainedError(f"the state dict does not fit ({layout}): " + "; ".join(problems))


# Re-ID checkpoints of other code bases, mapped onto a `ReIDNet` (strong-baseline head).
#
# torchreid (KaiyangZhou/deep-person-reid, torchreid/models/resnet.py, `resnet50`): torchvision
#   names for the trunk, `classifier.{weight,bias}` after global average pooling and no BNNeck;
#   its test feature is the pooled vector, so the net's neck becomes the identity (exact).
#   `fc.*` exists only in the `*_fc512` variants, whose extra embedding layer we do not build:
#   it is refused as unexpected.
# fast-reid (JDAI-CV/fast-reid, Baseline + build_resnet_backbone + EmbeddingHead): the trunk
#   under `backbone.` in torchvision names, the BNNeck as `heads.bottleneck.0.*` (its eval
#   feature, neck_feat "after"), the classifier as `heads.weight` (v1) or `heads.classifier.weight`
#   (older), and `pixel_mean`/`pixel_std` on the 0-255 scale, which become our [0, 1] `mean`/`std`.
# The classifier weights load for completeness (evaluation scores embeddings only); a
#   classifier bias (torchreid) has no place in ours and is dropped.
REID_LAYOUTS = ("lfm-bench", "torchreid", "fast-reid")

# What a checkpoint of another project cannot tell about the network that wrote it: a stride and
# a max-pool's padding change no tensor's shape. Each layout's entry is the variant of that
# project's current release; `ckpt:` options select the other.
#   torchreid 0.2.5, `resnet50`: last_stride=2 (stages 1222), torchvision's stem (max-pool 3/2, pad 1).
#   fast-reid 1.4.0, `build_resnet_backbone` with its configs' LAST_STRIDE 1 (1221) and the stem
#     `MaxPool2d(3, 2, ceil_mode=True)` without padding (older code padded by 1: the line 1.4.0
#     keeps commented out).
ARCHITECTURES: dict[str, dict[str, str]] = {
    "torchreid": {"strides": "1222", "stem": "torchvision"},
    "fast-reid": {"strides": "1221", "stem": "fast-reid"},
}
STEMS = {
    "torchvision": lambda: nn.MaxPool2d(3, 2, 1),
    "fast-reid": lambda: nn.MaxPool2d(3, 2, 0, ceil_mode=True),
}


def detect_layout(state: Mapping[str, Tensor]) -> str | None:
    """Which of `REID_LAYOUTS` a state dict is in, from its keys (None: none of them)."""
    if "backbone.stem_conv.weight" in state:
        return "lfm-bench"
    if "backbone.conv1.weight" in state and any(k.startswith("heads.") for k in state):
        return "fast-reid"
    if "conv1.weight" in state and "layer1.0.conv1.weight" in state:
        return "torchreid"
    return None


def set_architecture(backbone: SplitBackbone, strides: tuple[int, ...], stem: str) -> None:
    """Give a ResNet backbone (in place, before its weights load) one stride per stage and the stem
    max-pool `stem` names (`STEMS`); no tensor changes shape.

    Raises:
        PretrainedError: not a ResNet with a pooled stem, an unknown stem, or a stride-2 stage
            whose first block has no projection shortcut to carry it.
    """
    post = backbone.stem_post
    if not isinstance(backbone, ResNetBackbone) or not isinstance(post, nn.Sequential) or not _pooled(post):
        raise PretrainedError("strides= and stem= apply to a ResNet with a max-pooled stem (resnet50)")
    if stem not in STEMS:
        raise PretrainedError(f"stem={stem!r} is not one of {', '.join(STEMS)}")
    post[-1] = STEMS[stem]()
    for stage, stride in zip(backbone.stages, strides, strict=True):
        assert isinstance(stage, nn.Sequential)
        first = stage[0]
        assert isinstance(first, (BasicBlock, Bottleneck))
        conv = first.body[3 if isinstance(first, Bottleneck) else 0]
        shortcut = first.shortcut
        if not isinstance(shortcut, nn.Sequential) and stride != 1:
            raise PretrainedError(f"strides={''.join(map(str, strides))}: a stage without a projection cannot stride")
        convs = [conv, *([shortcut[0]] if isinstance(shortcut, nn.Sequential) else [])]
        for c in convs:
            assert isinstance(c, nn.Conv2d)
            c.stride = (stride, stride)
    backbone.strides = tuple(strides)


def _pooled(stem_post: nn.Sequential) -> bool:
    return isinstance(stem_post[-1], nn.MaxPool2d)


def classifier_rows(state: Mapping[str, Tensor], layout: str) -> int | None:
    """Number of classes (training identities) of the state dict's classifier, if it has one."""
    for key in {"lfm-bench": ("classifier.weight", "fc.weight"), "torchreid": ("classifier.weight",),
                "fast-reid": ("heads.weight", "heads.classifier.weight")}[layout]:  # fmt: skip
        if key in state and state[key].dim() == 2:
            return int(state[key].shape[0])
    return None


def load_reid_layout(net: nn.Module, state: Mapping[str, Tensor], layout: str) -> None:
    """Load a re-ID state dict of `layout` into `net` (a `ReIDNet`, in place), all or nothing.

    Raises:
        PretrainedError: an unknown layout, or keys missing, unexpected or misshapen (all listed).
    """
    if layout == "lfm-bench":
        _check_fit(net, dict(state), sorted(set(state) - set(net.state_dict())), "lfm-bench layout")
        net.load_state_dict(dict(state), strict=True)
        return
    if layout not in REID_LAYOUTS or not isinstance(getattr(net, "neck", None), nn.Module):
        raise PretrainedError(f"unknown re-ID layout {layout!r} (known: {', '.join(REID_LAYOUTS)})")
    trunk, head = ("", _TORCHREID_HEAD) if layout == "torchreid" else ("backbone.", _FASTREID_HEAD)
    if layout == "torchreid":
        net.neck = nn.Identity()  # torchreid's test feature is the pooled vector
    backbone = net.backbone
    if not isinstance(backbone, ResNetBackbone):
        raise PretrainedError("the model has no ResNet backbone to load the checkpoint's trunk into")
    mapping = {trunk + theirs: "backbone." + ours for theirs, ours in torchvision_key_map(backbone).items()}
    mapping.update(head)
    mapped = {ours: _to_ours(ours, state[theirs]) for theirs, ours in mapping.items() if theirs in state}
    if layout == "fast-reid" and "heads.classifier.weight" in state:  # the older versions' name
        mapped.setdefault("classifier.weight", state["heads.classifier.weight"])
    ours = net.state_dict()
    mapped.update({k: v for k, v in ours.items() if k in ("mean", "std") and k not in mapped})
    ignored = {"classifier.bias", "heads.classifier.weight"}
    unexpected = sorted(set(state) - set(mapping) - ignored)
    _check_fit(net, mapped, unexpected, f"{layout} layout", {ours: theirs for theirs, ours in mapping.items()})
    net.load_state_dict(mapped, strict=True)


_TORCHREID_HEAD = {"classifier.weight": "classifier.weight"}
_FASTREID_HEAD = {
    **{f"heads.bottleneck.0.{k}": f"neck.{k}" for k in ("weight", "bias", "running_mean", "running_var")},
    "heads.bottleneck.0.num_batches_tracked": "neck.num_batches_tracked",
    "heads.weight": "classifier.weight",
    "pixel_mean": "mean",
    "pixel_std": "std",
}


def _to_ours(key: str, value: Tensor) -> Tensor:
    """fast-reid's 0-255 pixel statistics as our [0, 1] ones, shaped (1, 3, 1, 1)."""
    if key in ("mean", "std"):
        return (value.double() / 255.0).float().reshape(1, -1, 1, 1)
    return value
