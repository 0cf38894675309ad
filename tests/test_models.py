"""Contract tests over every registered model and both tasks, plus the networks and backbones.

Each entry is one of three kinds (robustbench_lfm/models/zoo.py): a regularizer module (identity in eval, active
in train, deterministic under a seed), an architecture change (RCM: the same weights give another
function in every mode), or a training method (the network is plain's; tests/test_methods.py
covers the method itself).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustbench_lfm import models

ALL_MODELS = models.list_models()
CASES = [(name, task) for name in ALL_MODELS for task in models.TASKS]
SHAPE = {"reid": (3, 64, 32), "classification": (3, 32, 32)}


def _kind(name: str) -> str:
    entry = models.get_model_entry(name)
    if entry.regularizer != "none":
        return "regularizer"
    if entry.arch:
        return "arch"
    return "method" if entry.method != "standard" else "plain"


REGULARIZED = [(n, t) for n, t in CASES if _kind(n) == "regularizer"]


def _fresh(name: str, task: str, **kw):
    torch.manual_seed(0)
    return models.create_model(name, 10, task, **kw)


def _x(task: str, n: int = 6) -> torch.Tensor:
    return torch.rand(n, *SHAPE[task], generator=torch.Generator().manual_seed(1))


GATED = ("lfm", "lfm-code", "random-erasing")  # p is the chance to act at all (a batch may be left alone)


def _always_on(name: str) -> dict:
    """Overrides that make a regularizer act on every call; drop-rate regularizers always act."""
    return {"p": 1.0} if name in GATED else {}


@pytest.mark.parametrize(("name", "task"), CASES)
def test_output_shapes_in_eval_and_train(name, task):
    net = _fresh(name, task).eval()
    out = net(_x(task, 4))
    assert out.shape == ((4, net.embedding_dim) if task == "reid" else (4, 10))
    train_out = net.train()(_x(task, 4))
    if task == "reid":
        logits, feat = train_out
        assert logits.shape == (4, 10) and feat.shape == (4, net.embedding_dim)
    else:
        assert train_out.shape == (4, 10)


@pytest.mark.parametrize(("name", "task"), [c for c in CASES if _kind(c[0]) != "arch"])
def test_eval_is_the_plain_network(name, task):
    """Regularizers are identity in eval; training methods leave plain's architecture."""
    net, plain = _fresh(name, task).eval(), _fresh("plain", task).eval()
    plain.load_state_dict(net.state_dict())
    assert torch.equal(net(_x(task)), plain(_x(task)))


@pytest.mark.parametrize(("name", "task"), REGULARIZED)
def test_regularizer_is_active_in_training(name, task):
    net, plain = _fresh(name, task, seed=1, **_always_on(name)).train(), _fresh("plain", task).train()
    plain.load_state_dict(net.state_dict())
    out, ref = net(_x(task, 32)), plain(_x(task, 32))
    out, ref = (out[0], ref[0]) if task == "reid" else (out, ref)
    assert not torch.allclose(out, ref)


@pytest.mark.parametrize(("name", "task"), REGULARIZED)
def test_regularizer_is_deterministic_under_a_seed_and_varies_with_it(name, task):
    def run(seed):
        out = _fresh(name, task, seed=seed, **_always_on(name)).train()(_x(task, 16))
        return out[0] if task == "reid" else out

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


@pytest.mark.parametrize("task", models.TASKS)
def test_rcm_up_is_plain_on_the_upsampled_image(task):
    """Nearest upsampling commutes with per-channel normalisation: rcm-up(x) = plain(up(x))."""
    net, plain = _fresh("rcm-up", task).eval(), _fresh("plain", task).eval()
    plain.load_state_dict(net.state_dict())
    x = _x(task)
    assert torch.allclose(net(x), plain(F.interpolate(x, scale_factor=2, mode="nearest")), atol=1e-5)


@pytest.mark.parametrize(
    ("backbone", "expected"), [("resnet-mini", "1121"), ("resnet18", "1122"), ("resnet50", "1121")]
)
def test_rcm_stride_shrinks_the_first_stride_two_stage(backbone, expected):
    """docs/reference/methods.md §2.3: ResNet-18 1222 -> 1122; the final map doubles in each dimension."""
    assert models.resolve_params("rcm-stride", {}, backbone)["strides"] == expected
    if backbone == "resnet50":
        return  # too slow for a shape check on CPU; the strides are what differs
    x = _x("classification", 2)
    sizes = [
        models.create_model(n, 10, "classification", backbone=backbone).eval().trunk(x).shape[-2:]
        for n in ("plain", "rcm-stride")
    ]
    assert sizes[1] == (2 * sizes[0][0], 2 * sizes[0][1])


@pytest.mark.parametrize("task", models.TASKS)
def test_rcm_models_change_the_function_in_eval(task):
    plain = _fresh("plain", task).eval()
    for name in ("rcm-up", "rcm-stride"):
        net = _fresh(name, task).eval()
        net.load_state_dict(plain.state_dict())  # same parameter shapes: RCM adds no parameters
        assert not torch.allclose(net(_x(task)), plain(_x(task)))


@pytest.mark.parametrize(("name", "task"), CASES)
def test_input_size_comes_from_the_input(name, task):
    net = _fresh(name, task).train()
    out = net(torch.rand(4, 3, 96, 48))
    assert (out[0] if task == "reid" else out).shape == (4, 10)


@pytest.mark.parametrize("site", ["stem", "pool", "layer1"])
def test_lfm_insertion_point_moves_the_module(site):
    net = models.create_model("lfm", 10, at=site)
    assert isinstance(net.regularizers[site], models.regularizers.Regularizer)
    others = [s for s, m in net.regularizers.items() if s != site]
    assert all(isinstance(net.regularizers[s], torch.nn.Identity) for s in others)


def test_trunk_runs_any_stretch_of_sites():
    net = _fresh("plain", "classification").eval()
    x = _x("classification")
    mid = net.trunk(x, until="layer2")
    assert torch.allclose(net.trunk(mid, after="layer2"), net.trunk(x))
    assert torch.allclose(net.class_logits(net.trunk(x)), net(x))


@pytest.mark.parametrize(
    ("name", "override", "message"),
    [
        ("lfm", {"q": 1}, "has no parameter"),
        ("lfm", {"at": "head"}, "not a feature-map site"),
        ("lfm", {"area": (0.5, 0.2)}, "low <= high"),
        ("lfm-code", {"max_samples": 0}, "max_samples"),
        ("dropblock", {"block_size": 2}, "odd"),
        ("rcm-stride", {"strides": "12"}, "one digit"),
        ("rcm-up", {"upsample": 0}, "upsample"),
        ("cutout", {"at": "stem"}, "has no parameter"),
    ],
)
def test_bad_parameters_are_refused_with_the_fix(name, override, message):
    with pytest.raises((TypeError, ValueError), match=message):
        models.create_model(name, 10, **override)


def test_parameter_names_are_unique_within_an_entry():
    with pytest.raises(ValueError, match="declared twice"):
        models.ModelEntry("x", params={"p": 1}, method_params={"p": 2})


def test_resnet50_has_last_stride_one_and_bnneck():
    net = models.create_model("plain", 10, backbone="resnet50").eval()
    f = net.backbone.stem_post(net.backbone.stem_conv(torch.rand(1, 3, 256, 128)))
    assert net.backbone.stages(f).shape[-2:] == (16, 8)
    assert net.embedding_dim == 2048 and not net.neck.bias.requires_grad


def test_resnet18_has_the_cifar_stem_and_a_4x4_final_map():
    net = models.create_model("plain", 10, "classification", backbone="resnet18").eval()
    assert net.backbone.stem_conv.stride == (1, 1) and net.backbone.strides == (1, 2, 2, 2)
    assert net.trunk(torch.rand(1, 3, 32, 32)).shape[-2:] == (4, 4)
    assert 10e6 < sum(p.numel() for p in net.parameters()) < 12e6


def test_unknown_model_suggests_close_names():
    with pytest.raises(models.UnknownNameError, match="did you mean 'lfm'"):
        models.create_model("lfn", 10)


def test_flip_averaged_embedding_is_mirror_invariant_and_refuses_training():
    torch.manual_seed(0)
    net = models.FlipAveraged(models.create_model("plain", 4)).eval()
    x = torch.rand(2, 3, 32, 16)
    assert torch.allclose(net(x), net(x.flip(-1)), atol=1e-6)
    assert not torch.allclose(net.net(x), net.net(x.flip(-1)), atol=1e-4)  # the bare model is not
    with pytest.raises(RuntimeError, match="evaluation"):
        net.train()(x)


@pytest.mark.parametrize("backbone", models.list_backbones())
def test_every_backbone_declares_an_input_size(backbone):
    h, w = models.get_input_size(backbone)
    assert h >= w > 0


# RCM's stride table (docs/reference/methods.md §2.3): baseline and RCM strides, and the final map's
# side at 32x32 for each.
RCM_TABLE = {
    "resnet18": ("1222", "1122", 4, 8),
    "preact-resnet18": ("1222", "1122", 4, 8),
    "vgg16": ("22222", "11222", 1, 4),
    "alexnet": ("2222", "1122", 2, 7),
}


@pytest.mark.parametrize("backbone", list(RCM_TABLE))
def test_rcm_strides_and_final_maps_follow_the_papers_table(backbone):
    default, rcm, side, rcm_side = RCM_TABLE[backbone]
    assert "".join(map(str, models.registry.get_default_strides(backbone))) == default
    assert models.resolve_params("rcm-stride", {}, backbone)["strides"] == rcm
    factory = models.registry.get_backbone(backbone)
    x = torch.rand(1, 3, 32, 32)
    assert factory().eval()(x).shape[-2:] == (side, side)
    assert factory(tuple(int(d) for d in rcm)).eval()(x).shape[-2:] == (rcm_side, rcm_side)


@pytest.mark.parametrize("backbone", models.list_backbones())
def test_every_backbone_has_four_site_stages_and_declares_its_width(backbone):
    net = models.registry.get_backbone(backbone)().eval()
    assert len(net.stages) == 4 and isinstance(net.stem_conv, torch.nn.Conv2d)
    with torch.no_grad():
        assert net(torch.rand(2, 3, 32, 32)).shape[1] == net.out_channels
