"""ImageNet-style initialisation of our ResNet backbones from a torchvision-layout state dict.

torchvision names a ResNet's tensors `conv1.weight`, `bn1.*`, `layer{1-4}.{block}.conv{1,2,3}.*`,
`layer*.*.bn{1,2,3}.*`, `layer*.*.downsample.{0,1}.*` and `fc.*`. `torchvision_key_map` maps them
to our parts (`stem_conv`, `stem_post.0`, `stages.{i}.{block}.body.{k}`, `...shortcut.{k}`);
`fc.*` (the ImageNet classifier) is dropped. Strides do not change any tensor's shape, so the
last-stride-1 `resnet50` and RCM's stride variants take the same weights. `load_torchvision`
refuses a state dict with any missing, unexpected or misshapen key and names them all
(`PretrainedError`), so a ResNet-18 file never half-loads into ours (which has the CIFAR 3x3
stem). Reads no file: the harness reads it (robustbench_lfm/pretrained.py). Imports torch only.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from models.backbones import BasicBlock, Bottleneck, ResNetBackbone

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


def load_torchvision(backbone: ResNetBackbone, state: Mapping[str, Tensor]) -> None:
    """Copy a torchvision-layout ResNet state dict into `backbone` (in place), all or nothing.

    Raises:
        PretrainedError: keys the backbone lacks (unexpected), keys the file lacks (missing) or
            tensors of another shape (misshapen), all listed; nothing is copied then.
    """
    if not any(isinstance(m, (BasicBlock, Bottleneck)) for m in backbone.modules()):
        raise PretrainedError("the backbone has no residual blocks to initialise")
    mapping = torchvision_key_map(backbone)
    given = {k: v for k, v in state.items() if not k.startswith(_IGNORED_PREFIXES)}
    ours = backbone.state_dict()
    unexpected = sorted(set(given) - set(mapping))
    missing = sorted(set(mapping) - set(given))
    misshapen = sorted(
        f"{k} {tuple(given[k].shape)} (needs {tuple(ours[mapping[k]].shape)})"
        for k in set(given) & set(mapping)
        if tuple(given[k].shape) != tuple(ours[mapping[k]].shape)
    )
    problems = [
        f"{label}: {', '.join(keys[:8])}{f' and {len(keys) - 8} more' if len(keys) > 8 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("misshapen", misshapen))
        if keys
    ]
    if problems:
        raise PretrainedError(
            "the state dict does not fit this backbone (torchvision ResNet layout): " + "; ".join(problems)
        )
    backbone.load_state_dict({mapping[k]: v for k, v in given.items()}, strict=True)
