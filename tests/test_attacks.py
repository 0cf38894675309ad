"""Contract tests over every registered attack (DESIGN.md step 5)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import attacks
import models

ALL_ATTACKS = attacks.list_attacks()
EPS = 8 / 255


@pytest.fixture(scope="module")
def reid_model():
    torch.manual_seed(0)
    net = models.create_model("lfm", 10)
    net.train()
    with torch.no_grad():  # settle BN statistics so the embedding is not degenerate
        for _ in range(3):
            net(torch.rand(32, 3, 64, 32))
    return net


@pytest.fixture(scope="module")
def images():
    return torch.rand(8, 3, 64, 32, generator=torch.Generator().manual_seed(1))


def _sma(net, x, x_adv):
    with torch.no_grad():
        return (F.normalize(net(x_adv), dim=1) - F.normalize(net(x), dim=1)).pow(2).sum(1)


@pytest.mark.parametrize("name", ALL_ATTACKS)
def test_budget_and_pixel_range_hold(name, reid_model, images):
    x_adv = attacks.create_attack(name)(reid_model, images, attacks.AttackContext("reid"), eps=EPS)
    assert x_adv.shape == images.shape and not x_adv.requires_grad
    assert (x_adv - images).abs().max().item() <= EPS + 1e-6
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0


@pytest.mark.parametrize("name", ALL_ATTACKS)
@pytest.mark.parametrize("training", [True, False])
def test_mode_and_parameter_gradients_are_restored(name, training, reid_model, images):
    reid_model.train(training)
    flags = [p.requires_grad for p in reid_model.parameters()]
    attacks.create_attack(name)(reid_model, images, attacks.AttackContext("reid"), eps=EPS)
    assert reid_model.training is training
    assert [p.requires_grad for p in reid_model.parameters()] == flags
    assert all(p.grad is None for p in reid_model.parameters())


@pytest.mark.parametrize("name", ALL_ATTACKS)
def test_deterministic_under_a_seed(name, reid_model, images):
    runs = [
        attacks.create_attack(name, seed=5)(reid_model, images, attacks.AttackContext("reid"), eps=EPS)
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("name", ALL_ATTACKS)
def test_eps_zero_returns_the_clean_images(name, reid_model, images):
    x_adv = attacks.create_attack(name)(reid_model, images, attacks.AttackContext("reid"), eps=0.0)
    assert torch.equal(x_adv, images)


@pytest.mark.parametrize("name", ALL_ATTACKS)
def test_attack_moves_the_embedding_more_than_random_noise(name, reid_model, images):
    reid_model.eval()
    x_adv = attacks.create_attack(name)(reid_model, images, attacks.AttackContext("reid"), eps=EPS)
    noise = (images + EPS * torch.sign(torch.randn_like(images))).clamp(0, 1)
    assert _sma(reid_model, images, x_adv).mean() > _sma(reid_model, images, noise).mean()


@pytest.mark.parametrize("name", ALL_ATTACKS)
def test_classification_objective_lowers_accuracy(name):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    x = torch.rand(64, 3, 8, 8)
    y = net(x).argmax(1)  # labels the model gets right by construction
    x_adv = attacks.create_attack(name)(net, x, attacks.AttackContext("classification", labels=y), eps=0.1)
    assert (net(x_adv).argmax(1) == y).float().mean() < 0.5


@pytest.mark.parametrize("eps", [-0.1, 1.5, float("nan")])
def test_bad_eps_is_rejected(eps, reid_model, images):
    with pytest.raises(ValueError, match="outside"):
        attacks.create_attack("pgd")(reid_model, images, attacks.AttackContext("reid"), eps=eps)


def test_inputs_outside_pixel_range_are_rejected(reid_model, images):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attacks.create_attack("pgd")(reid_model, images * 2, attacks.AttackContext("reid"), eps=EPS)


def test_pgd_is_at_least_as_strong_as_fgsm(reid_model, images):
    ctx = attacks.AttackContext("reid")
    reid_model.eval()
    pgd = _sma(reid_model, images, attacks.create_attack("pgd")(reid_model, images, ctx, eps=EPS)).mean()
    fgsm = _sma(reid_model, images, attacks.create_attack("fgsm")(reid_model, images, ctx, eps=EPS)).mean()
    assert pgd >= fgsm


def test_unknown_attack_suggests_close_names():
    with pytest.raises(attacks.UnknownAttackError, match="did you mean 'pgd'"):
        attacks.create_attack("pdg")
