"""Models written by other projects give exactly their own numbers here.

Each test builds the network with the source project's own model file (tests/outside.py: torchreid
0.2.5, fast-reid 1.4.0, torchvision, RobustBench 1.1.1), randomises every BatchNorm's statistics
and affine parameters (so a BN mapped to the wrong tensor cannot hide behind fresh statistics),
and compares the embedding lfm-bench computes through `ckpt:`, `--pretrained` or `evaluate()` with
the one the project's own forward computes on the same images.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from robustbench_lfm.checkpoints import AssumedArchitecture, load_given
from robustbench_lfm.hashing import file_sha256
from robustbench_lfm.models.pretrained import load_torchvision
from robustbench_lfm.models.registry import get_backbone
from robustbench_lfm.pretrained import read_state_dict
from robustbench_lfm.recipe import load_recipe
from robustbench_lfm.spec import resolve_model
from tests import outside
from tests.conftest import TINY_CLI

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 256, 128, generator=torch.Generator().manual_seed(0))


def relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """The largest absolute difference relative to the largest absolute value of `theirs`."""
    return float((ours - theirs).abs().max() / theirs.abs().max())


def through_ckpt(path, options: str = "") -> tuple[nn.Module, dict]:
    """The network `--models ckpt:PATH[options]` evaluates, and its resolved parameters."""
    spec = resolve_model(f"ckpt:{path}{options}", None, load_recipe("paper", "reid"))
    return load_given(spec, CPU), {"label": spec.label, **dict(spec.resolved)}


def torchreid_resnet50(last_stride: int = 2) -> nn.Module:
    resnet, _ = outside.torchreid_models()
    net = resnet.ResNet(751, "softmax", resnet.Bottleneck, [3, 4, 6, 3], last_stride=last_stride)
    return outside.randomise_batch_norm(net)


def test_a_torchreid_resnet50_checkpoint_is_torchreids_network(tmp_path, images):
    path = tmp_path / "torchreid_resnet50.pth"
    torch.save(torchreid_resnet50().state_dict(), path)
    theirs_net = torchreid_resnet50()
    theirs_net.load_state_dict(torch.load(path, weights_only=True))
    with pytest.warns(AssumedArchitecture, match="assumed strides=1222, stem=torchvision"):
        ours, resolved = through_ckpt(path)
    with torch.no_grad():
        assert relative(ours(images), theirs_net((images - MEAN) / STD)) < 1e-4
    assert resolved["label"] == f"ckpt:plain@{file_sha256(path)[:8]}"  # never a method it is not (rcm-stride)
    assert (resolved["layout"], resolved["strides"]) == ("torchreid", "1222")


def test_the_readmes_remedy_for_a_last_stride_1_torchreid_net_works_as_written(tmp_path, images):
    net = torchreid_resnet50(last_stride=1)
    torch.save(net.state_dict(), tmp_path / "r50_ls1.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error", AssumedArchitecture)  # both given: nothing assumed
        ours, resolved = through_ckpt(tmp_path / "r50_ls1.pth", ",strides=1221,stem=torchvision")
    with pytest.warns(AssumedArchitecture):
        assumed, _ = through_ckpt(tmp_path / "r50_ls1.pth")
    with torch.no_grad():
        theirs = net((images - MEAN) / STD)
        assert relative(ours(images), theirs) < 1e-4
        assert relative(assumed(images), theirs) > 1e-2  # the option matters: stride 2 is another network
    assert resolved["strides"] == "1221" and resolved["label"].startswith("ckpt:plain@")


def test_a_fastreid_bag_of_tricks_checkpoint_is_fastreids_network(tmp_path, images):
    net = outside.randomise_batch_norm(outside.FastReIDBaseline(751))
    torch.save(net.state_dict(), tmp_path / "fastreid_bot_r50.pth")
    with pytest.warns(AssumedArchitecture, match="stem=fast-reid"):
        ours, resolved = through_ckpt(tmp_path / "fastreid_bot_r50.pth")
    older, _ = through_ckpt(tmp_path / "fastreid_bot_r50.pth", ",stem=torchvision")
    with torch.no_grad():
        theirs = net(images * 255)  # fast-reid reads 0-255 images
        assert relative(ours(images), theirs) < 1e-4
        assert relative(older(images), theirs) > 1e-3  # the padded stem is another network
    assert (resolved["layout"], resolved["stem"], resolved["strides"]) == ("fast-reid", "fast-reid", "1221")


def test_a_bad_architecture_option_is_one_line(tmp_path):
    torch.save(torchreid_resnet50().state_dict(), tmp_path / "r50.pth")
    with pytest.raises(ValueError, match="strides='12': give one digit"):
        through_ckpt(tmp_path / "r50.pth", ",strides=12")
    with pytest.raises(ValueError, match="stem='caffe' is not one of torchvision, fast-reid"):
        through_ckpt(tmp_path / "r50.pth", ",stem=caffe")


def test_torchvision_weights_through_pretrained_are_torchvisions_trunk(tmp_path, images):
    theirs = outside.randomise_batch_norm(outside.torchvision_resnet().resnet50())
    torch.save(theirs.state_dict(), tmp_path / "resnet50-torchvision.pth")
    ours = get_backbone("resnet50")((1, 2, 2, 2))  # torchvision's strides; the re-ID default is 1221
    load_torchvision(ours, read_state_dict(tmp_path / "resnet50-torchvision.pth", what="--pretrained"))
    theirs.fc = nn.Identity()
    with torch.no_grad():
        x = (images - MEAN) / STD
        assert relative(ours.eval()(x).mean(dim=(2, 3)), theirs(x)) < 1e-4


def test_torchreids_osnet_through_evaluate(tmp_path, tiny_reid):
    from robustbench_lfm import evaluate
    from robustbench_lfm.attacking import embed_images, to_model_input
    from robustbench_lfm.datasets import as_float

    _, osnet = outside.torchreid_models()
    net = outside.randomise_batch_norm(osnet.osnet_x0_25(num_classes=12, pretrained=False))
    model = nn.Sequential(Normalize(), net).eval()
    queries = tiny_reid.query.images
    with torch.no_grad():  # the harness's input path (uint8 -> channels-last float) changes no number
        assert relative(embed_images(model, to_model_input(queries, CPU)), model(as_float(queries))) < 1e-4
    df = evaluate(model, dataset=TINY_CLI, attacks=("pgd",), eps=(4 / 255,), name="osnet_x0_25", out=tmp_path / "run")
    assert set(df["attack"]) == {"none", "pgd"} and df["value"].between(0, 1).all()
    params = json.loads(df["model_params"].iloc[0])
    assert len(params["weights_sha256"]) == 64 and set(df["model"]) == {"osnet_x0_25"}


class Normalize(nn.Module):
    """ImageNet normalisation in front of a model trained on normalised images (the harness feeds [0, 1])."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - MEAN.to(x.device)) / STD.to(x.device)
