"""Training methods (robustbench_lfm/methods): group-wise inhibition, PGD-AT and MixACM.

For every model trained by a method, on both tasks: one step changes the weights, differs from a
standard step, and is deterministic under a seed. Then each method's own pieces.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from robustbench_lfm import models
from robustbench_lfm.methods import build_method
from robustbench_lfm.methods.gwi import group_channels, inhibition_mask, orthogonality
from robustbench_lfm.methods.mixacm import channel_map
from robustbench_lfm.options import RunOptions
from robustbench_lfm.recipe import load_recipe
from robustbench_lfm.runner import run_sweep
from robustbench_lfm.spec import build_spec
from robustbench_lfm.training import make_optimizer, standard_step

METHOD_MODELS = [n for n in models.list_models() if models.get_model_entry(n).method != "standard"]
CASES = [(n, t) for n in METHOD_MODELS for t in models.TASKS]
SHAPE = {"reid": (3, 64, 32), "classification": (3, 32, 32)}
FORCE = {"gwi": {"start_iter": 0, "every": 1, "min_batch": 2}}  # the TENET step on the first iteration


def _batch(task: str, n: int = 16):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 4 if task == "reid" else torch.randint(0, 10, (n,), generator=g)
    return torch.rand(n, *SHAPE[task], generator=g), y


def _setup(name: str, task: str, seed: int = 0):
    recipe = load_recipe("cpu", task)
    torch.manual_seed(0)
    net = models.create_model(name, 10, task).train()
    params = {**models.resolve_params(name, {}), **FORCE.get(name, {})}
    teacher = models.create_model("plain", 10, task).eval() if name == "mixacm" else None
    step = build_method(models.get_model_entry(name).method, params, recipe, seed, torch.device("cpu"), teacher)
    return net, step, recipe


def _after_step(net, step, recipe, task, correct_labels: bool = False):
    x, y = _batch(task)
    if correct_labels:  # gwi's extra step needs correctly classified samples
        with torch.no_grad():
            out = net(x)
            y = (out[0] if isinstance(out, tuple) else out).argmax(1)
    step(net, make_optimizer(net, recipe), x, y)
    return torch.cat([p.detach().flatten() for p in net.parameters()])


@pytest.mark.parametrize(("name", "task"), CASES)
def test_method_step_differs_from_the_standard_step_and_is_deterministic(name, task):
    net, step, recipe = _setup(name, task)
    before = torch.cat([p.detach().flatten() for p in net.parameters()])
    after = _after_step(net, step, recipe, task, correct_labels=name == "gwi")
    assert not torch.equal(before, after)
    net2, step2, _ = _setup(name, task)
    assert torch.equal(after, _after_step(net2, step2, recipe, task, correct_labels=name == "gwi"))
    net3, _, _ = _setup(name, task)
    standard = _after_step(net3, standard_step(recipe), recipe, task, correct_labels=name == "gwi")
    assert not torch.allclose(after, standard)


def test_pgd_at_trains_on_images_within_the_budget():
    net, step, _ = _setup("pgd-at", "classification")
    x, y = _batch("classification")
    x_adv = step.adversarial(net, x, y)
    assert (x_adv - x).abs().max().item() <= 8 / 255 + 1e-6 and not torch.equal(x_adv, x)
    assert net.training  # the attack ran in eval mode and restored train mode


def test_pgd_at_uses_the_task_objective():
    for task, objective in (("classification", "ce"), ("reid", "sma")):
        _, step, _ = _setup("pgd-at", task)
        assert step.attack.resolved_objective(task) == objective


def test_gwi_kmeans_recovers_planted_channel_groups():
    torch.manual_seed(0)
    centres = torch.randn(3, 1, 16) * 5
    member = torch.arange(12) % 3
    fmap = (centres[member] + 0.05 * torch.randn(12, 1, 16)).view(1, 12, 4, 4)
    groups = group_channels(fmap, 3, torch.Generator().manual_seed(0))[0]
    for g in range(3):  # channels planted together end up together, and apart from the others
        assert len(set(groups[member == g].tolist())) == 1
    assert len(set(groups.tolist())) == 3


def test_gwi_mask_inhibits_the_strongest_positions_and_spares_unimportant_groups():
    fmap = torch.zeros(1, 2, 4, 4)
    fmap[0, :, 0, 0] = 5.0  # the most class-relevant position
    grad_pos, grad_neg = torch.ones(1, 2, 4, 4), -torch.ones(1, 2, 4, 4)
    groups = torch.tensor([[0, 1]])
    mask = inhibition_mask(fmap, torch.cat([grad_pos[:, :1], grad_neg[:, 1:]], 1), groups, 2)
    assert mask[0, 0, 0, 0] < 0.1 and mask[0, 0, 3, 3] > 0.5  # RRF = sigmoid(-standardised map)
    assert torch.all(mask[0, 1] == 1)  # importance <= 0: not inhibited
    assert torch.all((mask > 0) & (mask <= 1))


def test_gwi_orthogonality_is_zero_for_disjoint_group_maps():
    fmap = torch.zeros(1, 2, 2, 2)
    fmap[0, 0, 0, 0], fmap[0, 1, 1, 1] = 1.0, 1.0
    groups = torch.tensor([[0, 1]])
    assert orthogonality(fmap, groups, 2).item() == 0.0
    fmap[0, 1, 0, 0] = 2.0
    assert orthogonality(fmap, groups, 2).item() == pytest.approx(2.0)


def test_gwi_tenet_step_runs_on_schedule_only():
    net, step, recipe = _setup("gwi", "classification")
    step.start_iter, step.every = 2, 2
    opt = make_optimizer(net, recipe)
    x, _ = _batch("classification")
    with torch.no_grad():
        y = net(x).argmax(1)
    counts = []
    for _ in range(4):
        step(net, opt, x, y)
        counts.append(step.tenet_steps)
    assert counts[0] == 0 and counts[-1] >= 1 and counts[-1] <= 2


def test_mixacm_terms_vanish_when_the_student_is_the_teacher():
    net, step, _ = _setup("mixacm", "classification")
    step.teacher = copy.deepcopy(net).eval()
    net.eval()  # same weights, same BN statistics: identical maps and logits
    x, y = _batch("classification")
    terms = step.losses(net, x, y)
    assert terms["acm"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["kd"].item() == pytest.approx(0.0, abs=1e-5)
    assert terms["mix"].item() > 0


def test_channel_map_is_unit_norm_per_sample():
    a = channel_map(torch.rand(3, 8, 4, 4), 2)
    assert torch.allclose(a.norm(dim=1), torch.ones(3))


def test_rcm_up_with_adversarial_training_runs_end_to_end_and_keeps_its_parts(tmp_path):
    options = {"models": "rcm-up,rcm-up+pgd-at:steps=2", "attacks": "fgsm", "eps": "8/255",
               "dataset": "digits", "epochs": 1, "train_fraction": 0.2, "n_eval": 40, "out": tmp_path / "run",
               "cache_dir": tmp_path / "cache", "device": "cpu", "quiet": True, "no_baseline": True}  # fmt: skip
    df = run_sweep(build_spec(RunOptions(**options)), log=lambda _: None)
    joined = df[df["model"] == "rcm-up+pgd-at:steps=2"]
    params = json.loads(joined["model_params"].iloc[0])
    assert params["upsample"] == 2 and params["steps"] == 2 and params["eps"] == pytest.approx(8 / 255)
    assert joined["checkpoint_sha256"].iloc[0] != df.loc[df["model"] == "rcm-up", "checkpoint_sha256"].iloc[0]
    assert df["value"].between(0, 1).all()
