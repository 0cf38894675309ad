"""Transfer and universal attacks (issue 17, part 4): input diversity (DI) and translation
invariance (TI) as options of the iterative attacks, and the universal perturbation (uap)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from scipy.stats import norm
from torch import nn

from robustbench_lfm import attacks
from robustbench_lfm.attacks.transfer import DiverseInputs, gaussian_kernel, smooth_gradient
from robustbench_lfm.cli import main
from robustbench_lfm.spec import AttackSpec, SpecError, resolve_attack
from tests.conftest import TINY_CLI


def test_ti_smooths_the_gradient_with_dong_et_als_kernel():
    """The kernel is the outer product of N(0, 1) sampled at k points over +-3 std (scipy as the
    oracle), and an impulse gradient comes back as that kernel."""
    for k in (3, 5, 7):
        pdf = norm.pdf(np.linspace(-3, 3, k))
        expected = np.outer(pdf, pdf) / np.outer(pdf, pdf).sum()
        assert np.allclose(gaussian_kernel(k).numpy(), expected)
        impulse = torch.zeros(1, 3, 15, 15)
        impulse[0, :, 7, 7] = 1
        smoothed = smooth_gradient(impulse, k)[0, 1, 7 - k // 2 : 8 + k // 2, 7 - k // 2 : 8 + k // 2]
        assert np.allclose(smoothed.numpy(), expected, atol=1e-6)


def test_di_transforms_some_steps_and_keeps_the_gradient():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 16 * 8, 2))
    x = torch.rand(2, 3, 16, 8, requires_grad=True)
    always = DiverseInputs(net, 1.0, 1.1, torch.Generator().manual_seed(0))
    never = DiverseInputs(net, 0.0, 1.1, torch.Generator().manual_seed(0))
    assert torch.equal(never(x), net(x)) and not torch.allclose(always(x), net(x))
    (grad,) = torch.autograd.grad(always(x).sum(), x)
    assert grad.abs().sum() > 0


def test_di_and_ti_are_options_that_reach_the_identity_and_leave_old_ids_alone():
    pgd, di, ti = (AttackSpec.create("pgd", o) for o in ({}, {"di_prob": 0.5}, {"ti_kernel": 5}))
    assert "di_prob" not in pgd.params_json() and "ti_kernel" not in pgd.params_json()  # earlier ids stand
    assert (di.label, ti.label) == ("pgd:di_prob=0.5", "pgd:ti_kernel=5")
    assert len({pgd, di, ti}) == 3 and AttackSpec.create("pgd", {"di_prob": 0.0}) == pgd
    for name in ("fgsm", "sma", "fna", "metric-mifgsm", "odfa", "uap"):
        resolve_attack(f"{name}:di_prob=0.5,ti_kernel=3", "reid")


@pytest.mark.parametrize(
    ("item", "message"),
    [("pgd:di_prob=1.5", "di_prob=1.5 must lie in"), ("pgd:di_scale=0.9", "di_scale=0.9"),
     ("pgd:di_scale=100", "di_scale=100 in \\(1, 2\\]"),
     ("pgd:ti_kernel=2", "ti_kernel=2 must be 0"), ("pgd:ti_kernel=-3", "ti_kernel=-3"),
     ("pgd:ti_kernel=2.5", "ti_kernel=2.5 must be of type int"),
     ("pgd:ti_kernel=4", "ti_kernel=4 must be odd"), ("sma:ti_kernel=16", "ti_kernel=16 must be odd"),
     ("pgd:backend=torchattacks,ti_kernel=5", "no input diversity"), ("cw:di_prob=0.5", "cw has no option"),
     ("uap:batch=0", "batch=0 must be a whole number"), ("uap:images=-1", "images=-1")],
)  # fmt: skip
def test_bad_transfer_options_are_refused(item, message):
    with pytest.raises(SpecError, match=message):
        resolve_attack(item, "classification" if item.startswith("cw") else "reid")


def _reid():
    torch.manual_seed(0)
    from robustbench_lfm import models

    net = models.create_model("plain", 4, "reid", backbone="resnet-mini")
    net.train()
    with torch.no_grad():
        net(torch.rand(16, 3, 64, 32))
    return net.eval()


def test_uap_is_one_perturbation_learnt_on_the_training_images_only():
    net = _reid()
    x = torch.rand(6, 3, 64, 32, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.25  # no clamping at 8/255
    fit = torch.randint(0, 256, (12, 3, 64, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    context = attacks.AttackContext("reid", labels=torch.arange(6), fit=attacks.Fit(fit, torch.arange(12)))
    attack = attacks.create_attack("uap", steps=2, batch=4)
    x_adv = attack(net, x, context, eps=8 / 255)
    delta = x_adv - x
    assert torch.allclose(delta, delta[:1].expand_as(delta), atol=1e-6)  # the same perturbation on every image
    assert float(delta.abs().max()) <= 8 / 255 + 1e-6 and float(delta.abs().max()) > 4 / 255
    other = attacks.AttackContext("reid", labels=torch.arange(6), fit=attacks.Fit(255 - fit, torch.arange(12)))
    assert not torch.allclose(attacks.create_attack("uap", steps=2, batch=4)(net, x, other, eps=8 / 255), x_adv)
    with pytest.raises(attacks.AttackError, match="learns its perturbation on training images"):
        attacks.create_attack("uap")(net, x, attacks.AttackContext("reid", labels=torch.arange(6)), eps=8 / 255)


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory):
    out, cache = tmp_path_factory.mktemp("transfer") / "run", tmp_path_factory.mktemp("cache")
    args = ["run", "--models", "lfm", "--surrogate", "plain", "--dataset", TINY_CLI, "--epochs", "1", "-q",
            "--attacks", "pgd:steps=3,pgd:steps=3,di_prob=0.5,pgd:steps=3,ti_kernel=3,uap:steps=1",
            "--eps", "8/255", "--out", str(out), "--cache-dir", str(cache)]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out, cache


def test_di_ti_and_uap_transfer_from_a_surrogate_and_stay_apart(transfer_run):
    out, cache = transfer_run
    df = pd.read_csv(out / "results.csv", keep_default_na=False)
    attacked = df[(df["attack"] != "none") & (df["metric"] == "rank1")]
    labels = set(attacked["attack_label"])
    assert labels == {"pgd:steps=3", "pgd:di_prob=0.5,steps=3", "pgd:steps=3,ti_kernel=3", "uap:steps=1"}
    assert set(attacked["surrogate"]) == {"plain"} and attacked["cell_id"].nunique() == 8  # 4 attacks x 2 models
    # crafted once on the surrogate per (attack, eps) and stored, so both targets see the same images:
    # the 4 cells, each attack's large-eps probe, and FGSM for the pgd<=fgsm check
    assert len(list((cache / "adversarial").glob("*.safetensors"))) == 4 + 4 + 1
