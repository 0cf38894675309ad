"""Initialising our ResNet-50 from a torchvision-layout state dict (models/pretrained.py)."""

from __future__ import annotations

import re

import pytest
import torch

from models.pretrained import PretrainedError, load_torchvision
from models.registry import get_backbone


def torchvision_resnet50_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under every name and shape torchvision's resnet50 has (written out here from
    the architecture, not from our key map): conv1, bn1, layer1-4 bottlenecks, downsample, fc."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def bn(name: str, c: int) -> None:
        for part in ("weight", "bias", "running_mean", "running_var"):
            state[f"{name}.{part}"] = torch.rand(c, generator=g)
        state[f"{name}.num_batches_tracked"] = torch.tensor(7)

    state["conv1.weight"] = torch.randn(64, 3, 7, 7, generator=g)
    bn("bn1", 64)
    cin = 64
    for stage, (width, depth) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True), start=1):
        for block in range(depth):
            p = f"layer{stage}.{block}"
            state[f"{p}.conv1.weight"] = torch.randn(width, cin, 1, 1, generator=g)
            bn(f"{p}.bn1", width)
            state[f"{p}.conv2.weight"] = torch.randn(width, width, 3, 3, generator=g)
            bn(f"{p}.bn2", width)
            state[f"{p}.conv3.weight"] = torch.randn(4 * width, width, 1, 1, generator=g)
            bn(f"{p}.bn3", 4 * width)
            if block == 0:
                state[f"{p}.downsample.0.weight"] = torch.randn(4 * width, cin, 1, 1, generator=g)
                bn(f"{p}.downsample.1", 4 * width)
            cin = 4 * width
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 2048, generator=g), torch.randn(1000, generator=g)
    return state


def test_every_tensor_of_a_torchvision_resnet50_lands_in_ours():
    state = torchvision_resnet50_state()
    net = get_backbone("resnet50")()
    load_torchvision(net, state)
    ours = net.state_dict()
    assert len(ours) == len(state) - 2  # everything but fc.weight and fc.bias
    assert sorted(float(v.double().sum()) for v in ours.values()) == pytest.approx(
        sorted(float(v.double().sum()) for k, v in state.items() if not k.startswith("fc."))
    )
    spots = {
        "conv1.weight": net.stem_conv.weight,
        "bn1.running_var": net.stem_post[0].running_var,
        "layer1.0.downsample.0.weight": net.stages[0][0].shortcut[0].weight,
        "layer3.5.conv3.weight": net.stages[2][5].body[6].weight,
        "layer4.2.bn2.bias": net.stages[3][2].body[4].bias,
        "layer2.3.conv2.weight": net.stages[1][3].body[3].weight,
    }
    for theirs, tensor in spots.items():
        assert torch.equal(tensor, state[theirs]), theirs


def test_the_last_stride_one_and_rcm_strides_take_the_same_weights():
    state = torchvision_resnet50_state()
    for strides in ((1, 2, 2, 1), (1, 1, 2, 1)):
        load_torchvision(get_backbone("resnet50")(strides), state)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("layer2.1.bn3.weight"), "missing: layer2.1.bn3.weight"),
        (lambda s: s.update({"layer5.0.conv1.weight": torch.zeros(1)}), "unexpected: layer5.0.conv1.weight"),
        (lambda s: s.update({"conv1.weight": torch.zeros(64, 3, 3, 3)}), "misshapen: conv1.weight (64, 3, 3, 3)"),
    ],
)
def test_a_state_dict_that_does_not_fit_is_refused_whole(change, message):
    state = torchvision_resnet50_state()
    change(state)
    net = get_backbone("resnet50")()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(PretrainedError, match=re.escape(message)):
        load_torchvision(net, state)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # nothing half-loaded


def test_a_resnet50_file_does_not_fit_our_cifar_stem_resnet18():
    with pytest.raises(PretrainedError, match=re.escape("misshapen: conv1.weight")):
        load_torchvision(get_backbone("resnet18")(), torchvision_resnet50_state())
