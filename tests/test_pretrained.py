"""Initialising our ResNet-50 from a torchvision-layout state dict (robustbench_lfm/models/pretrained.py)."""

from __future__ import annotations

import re

import pytest
import torch

from robustbench_lfm.models.pretrained import PretrainedError, load_torchvision
from robustbench_lfm.models.registry import get_backbone


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


def torchvision_layout(backbone_name: str, seed: int = 1) -> dict[str, torch.Tensor]:
    """Random weights for our `backbone_name` under torchvision's names (the map is checked on
    ResNet-50 above against names written out from the architecture)."""
    from robustbench_lfm.models.pretrained import torchvision_key_map

    net = get_backbone(backbone_name)()
    g = torch.Generator().manual_seed(seed)
    ours = net.state_dict()
    state = {t: torch.rand(ours[o].shape, generator=g) if ours[o].is_floating_point() else ours[o].clone()
             for t, o in torchvision_key_map(net).items()}  # fmt: skip
    state["fc.weight"] = torch.zeros(10, 4)  # the ImageNet classifier: ignored
    return state


def _run(out, cache, *extra):
    from click.testing import CliRunner

    from robustbench_lfm.cli import main
    from tests.test_threats import DATA

    args = ["run", "--models", "lfm", "--attacks", "fgsm", "--eps", "4/255", "--dataset", DATA, "--epochs", "1",
            "--out", str(out), "--cache-dir", str(cache), "-q", *extra]  # fmt: skip
    return CliRunner().invoke(main, args)


def test_lfm_and_plain_start_from_the_same_file_and_stay_apart_from_random_init(tmp_path):
    import pandas as pd
    from safetensors.torch import save_file

    from robustbench_lfm.hashing import file_sha256

    weights = tmp_path / "mini.pth"
    torch.save(torchvision_layout("resnet-mini"), weights)
    pretrained = _run(tmp_path / "run", tmp_path / "cache", "--pretrained", str(weights))
    assert pretrained.exit_code == 0, pretrained.output
    random = _run(tmp_path / "run", tmp_path / "cache")  # the same run directory: more models may join it
    assert random.exit_code == 0, random.output
    df = pd.read_csv(tmp_path / "run" / "results.csv", keep_default_na=False)
    sha = file_sha256(weights)
    assert set(df["pretrained_sha256"]) == {sha, ""} and set(df["model"]) == {"plain", "lfm"}
    from_file = df[df["pretrained_sha256"] == sha]
    assert set(from_file["model"]) == {"plain", "lfm"}  # both models start from the one file
    assert df.groupby("pretrained_sha256")["checkpoint_sha256"].agg(set).map(len).min() == 2
    clean = df[(df["attack"] == "none") & (df["metric"] == "rank1")]
    assert len(clean) == 4 and clean["cell_id"].nunique() == 4  # two inits x two models: four cells
    safetensors_copy = tmp_path / "mini.safetensors"
    save_file(torchvision_layout("resnet-mini"), str(safetensors_copy))
    assert file_sha256(safetensors_copy) != sha  # another file is another identity (same tensors or not)


def test_the_backbone_is_loaded_before_training(tmp_path):
    from robustbench_lfm import group
    from robustbench_lfm.hashing import file_sha256
    from robustbench_lfm.options import RunOptions
    from robustbench_lfm.spec import build_spec
    from tests.test_threats import DATA

    weights = tmp_path / "mini.pth"
    state = torchvision_layout("resnet-mini")
    torch.save(state, weights)
    spec = build_spec(RunOptions(**{"models": "lfm", "dataset": DATA, "out": tmp_path / "o",
                         "cache_dir": tmp_path / "c", "pretrained": weights, "device": "cpu"}))  # fmt: skip
    model = spec.models[0]
    assert model.pretrained == file_sha256(weights)
    net = group._new_model(spec, model, 0, group.run_dataset(spec))
    assert torch.equal(net.backbone.stem_conv.weight, state["conv1.weight"])
    assert torch.equal(net.backbone.stages[1][0].shortcut[0].weight, state["layer2.0.downsample.0.weight"])


class _Planted:
    def __reduce__(self):
        return (print, ("a planted pickle ran",))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("pickle", "is not a readable state dict"),
        ("text", "is not a readable state dict"),
        ("list", "holds no mapping of names to tensors"),
        ("misshapen", "misshapen: conv1.weight"),
        ("absent", "is not a file"),
    ],
)
def test_a_bad_pretrained_file_is_one_line_and_status_2(tmp_path, capfd, content, message):
    import pickle

    path = tmp_path / "weights.pth"
    if content == "pickle":
        path.write_bytes(pickle.dumps({"conv1.weight": _Planted()}))
    elif content == "text":
        path.write_text("not a state dict")
    elif content == "list":
        torch.save([torch.zeros(1)], path)
    elif content == "misshapen":
        torch.save({**torchvision_layout("resnet-mini"), "conv1.weight": torch.zeros(1, 1)}, path)
    result = _run(tmp_path / "run", tmp_path / "cache", "--pretrained", str(path))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lfm-bench: error: ") and message in lines[0]
    assert "a planted pickle ran" not in capfd.readouterr().out + result.output
    assert not (tmp_path / "run" / "results.csv").exists()
