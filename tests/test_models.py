"""Contract tests over every registered model, and the regularizers' own behaviour."""

from __future__ import annotations

import pytest
import torch

import models
from models.regularizers import Cutout, HeadDropout, LocalFeatureMasking

ALL_MODELS = models.list_models()


def _fresh(name: str, **kw):
    torch.manual_seed(0)
    return models.create_model(name, 10, **kw)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_eval_returns_embedding_and_train_returns_logits_and_feature(name):
    net = _fresh(name).eval()
    x = torch.rand(4, 3, 64, 32)
    emb = net(x)
    assert emb.shape == (4, net.embedding_dim)
    net.train()
    logits, feat = net(x)
    assert logits.shape == (4, 10) and feat.shape == (4, net.embedding_dim)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_regularizers_are_identity_in_eval(name):
    net, plain = _fresh(name).eval(), _fresh("plain").eval()
    plain.load_state_dict(net.state_dict())
    x = torch.rand(6, 3, 64, 32)
    assert torch.equal(net(x), plain(x))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_training_forward_is_deterministic_under_a_seed(name):
    x = torch.rand(16, 3, 64, 32)
    outs = []
    for _ in range(2):
        net = _fresh(name, seed=3).train()
        outs.append(net(x)[0])
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("name", [n for n in ALL_MODELS if n != "plain"])
def test_regularized_models_differ_from_plain_in_training(name):
    x = torch.rand(32, 3, 64, 32)
    net, plain = _fresh(name, seed=1).train(), _fresh("plain").train()
    plain.load_state_dict(net.state_dict())
    assert not torch.allclose(net(x)[0], plain(x)[0])


@pytest.mark.parametrize("name", ALL_MODELS)
def test_input_size_comes_from_the_input(name):
    net = _fresh(name).train()
    logits, _ = net(torch.rand(4, 3, 96, 48))
    assert logits.shape == (4, 10)


def test_resnet50_has_last_stride_one_and_bnneck():
    net = models.create_model("plain", 10, backbone="resnet50").eval()
    f = net.backbone.stem_post(net.backbone.stem_conv(torch.rand(1, 3, 256, 128)))
    assert net.backbone.stages(f).shape[-2:] == (16, 8)
    assert net.embedding_dim == 2048 and not net.neck.bias.requires_grad


def test_unknown_model_suggests_close_names():
    with pytest.raises(models.UnknownNameError, match="did you mean 'lfm'"):
        models.create_model("lfn", 10)


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        models.registry.register_model(models.ModelEntry("lfm", "lfm"))


def _lfm_masks(p: float, n: int = 4000, c: int = 16, h: int = 32, w: int = 16, seed: int = 0):
    lfm = LocalFeatureMasking(p=p, seed=seed).train()
    out = lfm(torch.full((n, c, h, w), -5.0))  # fills are in [0, 1], so masked cells are != -5
    return lfm, out != -5.0, out


def test_lfm_gate_probability_and_channel_count():
    _, masked, _ = _lfm_masks(p=0.15)
    per_sample = masked.flatten(1).any(1).float()
    assert abs(per_sample.mean().item() - 0.15) < 0.02  # 4000 samples: 3.5 standard errors
    chans = masked[per_sample.bool()].flatten(2).any(2).sum(1)
    assert chans.max().item() <= 8 and chans.float().mean().item() > 7.5  # 8 = 0.5 x 16 channels


def test_lfm_boxes_are_rectangles_with_one_fill_within_the_area_range():
    _, masked, out = _lfm_masks(p=1.0, n=300)
    rows, cols = masked.any(3), masked.any(2)
    for b, ch in masked.flatten(2).any(2).nonzero()[:200].tolist():
        m = masked[b, ch]
        h, w = rows[b, ch].sum().item(), cols[b, ch].sum().item()
        assert m.sum().item() == h * w  # a full rectangle
        assert 0.02 * 512 * 0.5 <= h * w <= 0.4 * 512 * 1.3  # area fraction [0.02, 0.4], rounding slack
        values = out[b, ch][m]
        assert torch.all(values == values[0]) and 0 <= values[0].item() < 1


def test_lfm_mean_area_matches_configuration():
    _, masked, _ = _lfm_masks(p=1.0, n=500)
    per_channel = masked.flatten(2).float().mean(2)
    area = per_channel[per_channel > 0]
    assert abs(area.mean().item() - 0.21) < 0.03  # E[s] = (0.02 + 0.4) / 2 before rejection


@pytest.mark.parametrize("module", [LocalFeatureMasking(p=0.0), Cutout(p=0.0), HeadDropout(p=0.0)])
def test_zero_probability_is_identity(module):
    x = torch.rand(8, 4, 16, 8) if module.site != "head" else torch.rand(8, 32)
    assert torch.equal(module.train()(x), x)


def test_cutout_zeroes_one_square_per_sample():
    out = Cutout(p=1.0, size=0.5).train()(torch.ones(200, 3, 64, 32))
    zeros = (out == 0).all(1)
    area = zeros.flatten(1).sum(1)
    assert area.max().item() == 16 * 16 and area.min().item() >= 8 * 8  # a square, at most half outside


def test_head_dropout_keeps_the_expectation():
    out = HeadDropout(p=0.5).train()(torch.ones(1000, 64))
    assert abs((out == 0).float().mean().item() - 0.5) < 0.02
    assert abs(out.mean().item() - 1.0) < 0.05


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
