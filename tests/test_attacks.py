"""Contract tests over every registered attack (docs/contributing.md, An attack), and behaviour tests per attack."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustbench_lfm import attacks, models

EPS = {"linf": 8 / 255, "l2": 0.5}
# Fewer iterations than the published defaults, so the whole registry runs in seconds on 2 cores.
FAST = {
    "apgd-ce": {"steps": 5},
    "apgd-dlr": {"steps": 5},
    "cw": {"steps": 10, "c": 10.0},
    "deepfool": {"steps": 5},
    "square": {"queries": 40},
    "autoattack": {"version": "rand", "steps": 5},  # APGD-CE + APGD-DLR; the standard ensemble is tested below
    "corrupt": {"type": "gaussian_noise", "severity": 3, "table": "imagenet"},  # one of the 75 it stands for
    "uap": {"steps": 10, "batch": 4},
}
# An ensemble (auto-reid) runs its members, each one of these cases; its own contract is checked
# once in test_contracts.py and its sweep path in test_ensemble.py.
CASES = [
    (name, task)
    for name in attacks.list_attacks()
    if not issubclass(attacks.get_attack_class(name), attacks.Ensemble)
    for task in attacks.get_attack_class(name).tasks
]
BUDGETED = [(name, task) for name, task in CASES if attacks.get_attack_class(name).budgeted]


def make(name: str, **options):
    return attacks.create_attack(name, **{**FAST.get(name, {}), **options})


@pytest.fixture(scope="module")
def reid_model():
    torch.manual_seed(0)
    net = models.create_model("lfm", 10)
    net.train()
    with torch.no_grad():  # settle BN statistics so the embedding is not degenerate
        for _ in range(3):
            net(torch.rand(32, 3, 64, 32))
    return net.eval()


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.1),
        nn.Flatten(), nn.Linear(8 * 8 * 8, 10),
    )  # fmt: skip
    return net.eval()


def _reid_batch():
    x = torch.rand(8, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    return x, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])


def setup(task, reid_model, classifier):
    """(model, images, context) for `task`; re-ID guides are the batch's own clean embeddings."""
    if task == "reid":
        x, ids = _reid_batch()
        with torch.no_grad():
            guides = attacks.Guides(reid_model(x), ids)
        return reid_model, x, attacks.AttackContext("reid", labels=ids, guides=guides, fit=_fit(x, ids))
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = classifier(x).argmax(1)  # labels the model gets right by construction
    return classifier, x, attacks.AttackContext("classification", labels=y, fit=_fit(x, y))


def _fit(x, labels):
    """Training images for the universal perturbation: the batch itself, as uint8 (so UAP's
    perturbation is learnt on the images it then attacks, as strong as it can be here)."""
    return attacks.Fit((x * 255).round().to(torch.uint8), labels)


def _sma(net, x, x_adv):
    with torch.no_grad():
        return (F.normalize(net(x_adv), dim=1) - F.normalize(net(x), dim=1)).pow(2).sum(1)


@pytest.mark.parametrize(("name", "task"), BUDGETED)
def test_budget_holds_in_its_norm_and_pixels_stay_in_range(name, task, reid_model, classifier):
    net, x, ctx = setup(task, reid_model, classifier)
    attack = make(name)
    eps = EPS[attack.norm]
    x_adv = attack(net, x, ctx, eps=eps)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert attacks.budget(x_adv, x, attack.norm).max().item() <= eps * (1 + 1e-5)
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    assert not torch.equal(x_adv, x)


@pytest.mark.parametrize(("name", "task"), CASES)
@pytest.mark.parametrize("training", [True, False])
def test_mode_is_restored_and_no_parameter_gradient_is_left(name, task, training, reid_model, classifier):
    net, x, ctx = setup(task, reid_model, classifier)
    net.train(training)
    flags = [p.requires_grad for p in net.parameters()]
    try:
        attack = make(name)
        attack(net, x, ctx, eps=EPS.get(attack.norm, 0.0))
        assert net.training is training
        assert [p.requires_grad for p in net.parameters()] == flags
        assert all(p.grad is None for p in net.parameters())
    finally:
        net.eval()


@pytest.mark.parametrize(("name", "task"), CASES)
def test_deterministic_under_a_seed_and_the_global_rng_untouched(name, task, reid_model, classifier):
    net, x, ctx = setup(task, reid_model, classifier)
    attack = make(name, seed=5)
    eps = EPS.get(attack.norm, 0.0)
    torch.manual_seed(123)
    first = attack(net, x, ctx, eps=eps)
    after = torch.rand(1)
    torch.manual_seed(123)
    second = attack(net, x, ctx, eps=eps)
    assert torch.equal(first, second)
    assert torch.equal(after, torch.rand(1))  # the caller's RNG stream is not consumed


@pytest.mark.parametrize(("name", "task"), BUDGETED)
def test_eps_zero_returns_the_clean_images(name, task, reid_model, classifier):
    net, x, ctx = setup(task, reid_model, classifier)
    assert torch.equal(make(name)(net, x, ctx, eps=0.0), x)


@pytest.mark.parametrize(("name", "task"), [c for c in BUDGETED if c[1] == "classification"])
def test_classification_attacks_lower_accuracy(name, task, reid_model, classifier):
    net, x, ctx = setup(task, reid_model, classifier)
    attack = make(name)
    x_adv = attack(net, x, ctx, eps=4 * EPS[attack.norm])
    with torch.no_grad():
        assert (net(x_adv).argmax(1) == ctx.labels).float().mean() < 0.5


@pytest.mark.parametrize(("name", "task"), [c for c in BUDGETED if c[1] == "reid"])
def test_reid_attacks_move_the_embedding_more_than_random_noise(name, task, reid_model, classifier):
    net, x, ctx = setup(task, reid_model, classifier)
    attack = make(name)
    eps = EPS[attack.norm]
    x_adv = attack(net, x, ctx, eps=eps)
    noise = attacks.project(x + eps * torch.sign(torch.randn_like(x)), x, eps, attack.norm)
    assert _sma(net, x, x_adv).mean() > _sma(net, x, noise).mean()


@pytest.mark.parametrize("name", [n for n in attacks.list_attacks() if "reid" not in attacks.get_attack_class(n).tasks])
def test_logit_attacks_refuse_reid_models(name, reid_model):
    x, ids = _reid_batch()
    with pytest.raises(ValueError, match="classification models only"):
        make(name)(reid_model, x, attacks.AttackContext("reid", labels=ids), eps=8 / 255)


@pytest.mark.parametrize("name", ["pgd", "fgsm", "pgd-l2"])
def test_ours_equals_torchattacks_without_random_start(name, classifier):
    """Our FGSM / PGD / PGD-L2 take the same steps as torchattacks' (same start, same gradients)."""
    _, x, ctx = setup("classification", None, classifier)
    options = {} if name == "fgsm" else {"random_start": False, "steps": 5}
    ours = attacks.create_attack(name, **options)
    theirs = attacks.create_attack(name, backend="torchattacks", **options)
    eps = EPS[ours.norm]
    assert torch.allclose(ours(classifier, x, ctx, eps=eps), theirs(classifier, x, ctx, eps=eps), atol=1e-6)


def test_standard_autoattack_breaks_an_undefended_classifier(classifier):
    _, x, ctx = setup("classification", None, classifier)
    x_adv = attacks.create_attack("autoattack")(
        classifier, x[:4], attacks.AttackContext("classification", ctx.labels[:4]), eps=0.1
    )
    assert attacks.budget(x_adv, x[:4], "linf").max() <= 0.1 + 1e-6
    assert (classifier(x_adv).argmax(1) == ctx.labels[:4]).sum() == 0


# Croce & Hein's own AutoAttack (github.com/fra31/auto-attack, autoattack.py, `set_version`), written
# out member by member: (torchattacks class, loss or targeted, restarts, EOT samples). Every
# white-box member runs 100 iterations and targets the 9 most likely other classes; Square runs
# 5000 queries, p_init 0.8, on its unrescaled schedule.
REFERENCE_AUTOATTACK = {
    "standard": [("APGD", "ce", 1, 1), ("APGDT", "dlr-t", 1, 1), ("FAB", True, 1, None), ("Square", "margin", 1, None)],
    "plus": [("APGD", "ce", 5, 1), ("APGD", "dlr", 5, 1), ("FAB", False, 5, None), ("Square", "margin", 1, None),
             ("APGDT", "dlr-t", 1, 1), ("FAB", True, 1, None)],
    "rand": [("APGD", "ce", 1, 20), ("APGD", "dlr", 1, 20)],
}  # fmt: skip


def _as_reference(member) -> tuple:
    kind = type(member).__name__
    loss = {"APGD": getattr(member, "loss", None), "APGDT": "dlr-t", "Square": getattr(member, "loss", None)}
    targeted = getattr(member, "multi_targeted", None)
    return kind, loss.get(kind, targeted), member.n_restarts, getattr(member, "eot_iter", None)


@pytest.mark.parametrize("version", sorted(REFERENCE_AUTOATTACK))
def test_autoattack_is_croce_and_heins_ensemble_not_torchattacks_defaults(version, classifier):
    """torchattacks' own AutoAttack runs each white-box member for 10 iterations, targets every
    other class and rescales Square's schedule; the published numbers come from the settings above."""
    built = attacks.create_attack("autoattack", version=version).build(classifier, 8 / 255, 0, 10)
    assert [_as_reference(m) for m in built.attacks] == REFERENCE_AUTOATTACK[version]
    for member in built.attacks:
        if type(member).__name__ == "Square":
            assert (member.n_queries, member.p_init, member.rescale_schedule) == (5000, 0.8, False)
        else:
            assert member.steps == 100 and member.eps == 8 / 255
        if type(member).__name__ in ("APGDT", "FAB"):
            assert member.n_target_classes == 9
    few = attacks.create_attack("autoattack", steps=7).build(classifier, 8 / 255, 0, 5)  # a quick look, 5 classes
    assert {m.steps for m in few.attacks if hasattr(m, "steps")} == {7}
    assert {m.n_target_classes for m in few.attacks if hasattr(m, "n_target_classes")} == {4}  # all there are


def test_autoattack_at_fewer_steps_is_another_cell_labelled_as_such(tmp_path):
    import json

    from robustbench_lfm.options import RunOptions
    from robustbench_lfm.spec import build_spec

    grid = {"models": "plain", "no_baseline": True, "attacks": "autoattack,autoattack:steps=10", "eps": "8/255"}
    spec = build_spec(RunOptions(dataset="digits", **grid, out=tmp_path / "r", cache_dir=tmp_path / "c"))
    cells = [c for c in spec.cells() if c.attack is not None]
    assert [c.attack.label for c in cells] == ["autoattack", "autoattack:steps=10"]  # table columns, report, gate key
    assert [json.loads(c.attack.params_json())["steps"] for c in cells] == [100, 10]  # the CSV's attack_params
    assert len({c.cell_id(spec.data, spec.recipe, spec.evaluation) for c in cells}) == 2


def test_sma_without_random_start_does_nothing(reid_model):
    """The SMA gradient is exactly zero at x' = x (reid.md D6.7): a check of the gradient plumbing."""
    x, _ = _reid_batch()
    x_adv = attacks.create_attack("sma", random_start=False)(reid_model, x, attacks.AttackContext("reid"), eps=8 / 255)
    assert torch.equal(x_adv, x)


def test_odfa_turns_the_embedding_around(reid_model):
    """ODFA must decrease cos(f(x'), f(x)) (reid.md D4/D6.7), more than SMA's push does."""
    x, _ = _reid_batch()
    ctx = attacks.AttackContext("reid")
    with torch.no_grad():
        f0 = F.normalize(reid_model(x), dim=1)

        def cos(a):
            return (F.normalize(reid_model(a), dim=1) * f0).sum(1).mean().item()

    odfa = cos(attacks.create_attack("odfa")(reid_model, x, ctx, eps=16 / 255))
    sma = cos(attacks.create_attack("sma")(reid_model, x, ctx, eps=16 / 255))
    assert odfa < 1.0 and odfa < sma


def test_metric_attack_leaves_images_without_same_identity_guides_clean(reid_model):
    """Bai et al.: distractors (no query of their identity) are not perturbed."""
    x, ids = _reid_batch()
    with torch.no_grad():
        guides = attacks.Guides(reid_model(x[:4]), ids[:4])  # identities 0 and 1 only
    ctx = attacks.AttackContext("reid", labels=ids, guides=guides)
    x_adv = attacks.create_attack("metric-ifgsm")(reid_model, x, ctx, eps=8 / 255)
    assert torch.equal(x_adv[4:], x[4:])
    assert not torch.equal(x_adv[:4], x[:4])


def test_fna_pulls_towards_the_farthest_prototype(reid_model):
    x, ids = _reid_batch()
    with torch.no_grad():
        feats = F.normalize(reid_model(x), dim=1)
    ctx = attacks.AttackContext("reid", labels=ids, guides=attacks.Guides(feats, ids))
    targets = attacks.resolve_objective("fna", "reid").guides(feats, ctx)
    protos = torch.stack([feats[ids == k].mean(0) for k in range(4)])
    for i in range(len(x)):
        dist = (feats[i] - protos).norm(dim=1)
        dist[ids[i]] = -1
        assert torch.allclose(targets.pull[i, 0], protos[dist.argmax()], atol=1e-6)
        assert targets.push_mask[i].sum() == (ids == ids[i]).sum()


def test_metric_attacks_need_guides(reid_model):
    x, _ = _reid_batch()
    with pytest.raises(attacks.AttackError, match=r"attack fna raised ValueError: .* needs guide features") as caught:
        attacks.create_attack("fna")(reid_model, x, attacks.AttackContext("reid"), eps=8 / 255)
    assert isinstance(caught.value.__cause__, ValueError)  # the search's own error, kept as the cause


def test_restarts_keep_the_strongest_run_per_image(reid_model):
    x, _ = _reid_batch()
    ctx = attacks.AttackContext("reid")
    one = _sma(reid_model, x, attacks.create_attack("pgd", steps=2, seed=3)(reid_model, x, ctx, eps=4 / 255))
    three = _sma(
        reid_model, x, attacks.create_attack("pgd", steps=2, restarts=3, seed=3)(reid_model, x, ctx, eps=4 / 255)
    )
    assert (three >= one - 1e-6).all() and (three > one).any()


def test_pgd_is_at_least_as_strong_as_fgsm(reid_model):
    x, _ = _reid_batch()
    ctx = attacks.AttackContext("reid")
    pgd = _sma(reid_model, x, attacks.create_attack("pgd")(reid_model, x, ctx, eps=8 / 255)).mean()
    fgsm = _sma(reid_model, x, attacks.create_attack("fgsm")(reid_model, x, ctx, eps=8 / 255)).mean()
    assert pgd >= fgsm


def test_kurakin_step_rule_matches_the_papers():
    from robustbench_lfm.attacks.iterative import kurakin_steps

    assert kurakin_steps(5 / 255) == 6  # Bai et al. at eps 5
    assert kurakin_steps(8 / 255, "round") == 10 and kurakin_steps(16 / 255, "round") == 20  # U-turn
    assert make("metric-ifgsm").schedule(5 / 255) == (6, 1 / 255)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("eps", [8 / 255, 0.03, 0.5])
def test_quantize_lands_on_the_8_bit_grid_within_the_budget(norm, eps):
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 16, 8), generator=gen).float() / 255
    x_adv = attacks.project(x + torch.randn(x.shape, generator=gen), x, eps, norm)
    q = attacks.quantize(x_adv, x, eps, norm)
    assert torch.equal(torch.round(q * 255), q * 255) or (q * 255 - torch.round(q * 255)).abs().max() < 1e-4
    assert attacks.budget(q, x, norm).max() <= eps * (1 + 1e-6)
    assert q.min() >= 0 and q.max() <= 1


@pytest.mark.parametrize(("eps", "norm"), [(-0.1, "linf"), (1.5, "linf"), (float("nan"), "linf"), (500.0, "l2")])
def test_bad_eps_is_rejected(eps, norm, reid_model):
    x, _ = _reid_batch()
    name = "pgd" if norm == "linf" else "pgd-l2"
    with pytest.raises(ValueError, match="outside"):
        attacks.create_attack(name)(reid_model, x, attacks.AttackContext("reid"), eps=eps)


def test_inputs_outside_pixel_range_are_rejected(reid_model):
    x, _ = _reid_batch()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attacks.create_attack("pgd")(reid_model, x * 2, attacks.AttackContext("reid"), eps=8 / 255)


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("pgd", {"steps": 0}, "steps"),
        ("pgd", {"norm": "l3"}, "norm"),
        ("sma", {"side": "both"}, "side"),
        ("sma", {"objective": "ce"}, "objective is sma"),
        ("cw", {"norm": "linf"}, "not supported"),
        ("pgd", {"backend": "torchattacks", "restarts": 2}, "backend=torchattacks"),
    ],
)
def test_bad_options_are_rejected_at_construction(name, options, match):
    with pytest.raises(ValueError, match=match):
        attacks.create_attack(name, **options)


def test_unknown_attack_suggests_close_names():
    with pytest.raises(attacks.UnknownAttackError, match="did you mean 'pgd'"):
        attacks.create_attack("pdg")


class _Quadratic(nn.Module):
    """Two logits, the first sum(w * x^2): each image's input gradient points its own way."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-1, 1, 3 * 4 * 4).view(1, 3, 4, 4))

    def forward(self, x):
        first = (self.w * x * x).flatten(1).sum(1, keepdim=True)
        return torch.cat([first, torch.zeros_like(first)], 1)


def test_uap_steps_on_the_gradient_summed_over_its_batch():
    """One L2 step of `uap` on a batch of 4 training images is eps/10 along the normalised sum of
    their cross-entropy gradients (computed here by autograd), not along any one image's."""
    g = torch.Generator().manual_seed(0)
    train = (torch.rand(4, 3, 4, 4, generator=g) * 200 + 20).to(torch.uint8)
    labels = torch.tensor([0, 1, 1, 0])
    net = _Quadratic().eval()
    x = train.float() / 255
    x.requires_grad_(True)
    nn.functional.cross_entropy(net(x), labels, reduction="sum").backward()
    total, each = x.grad.sum(0), x.grad
    eps = 1.0
    expected = eps / 10 * total / total.norm()
    assert all(float((expected - eps / 10 * e / e.norm()).abs().max()) > 1e-3 for e in each)  # the images disagree
    attack = attacks.create_attack("uap", norm="l2", steps=1, batch=4, images=4, random_start=False, seed=0)
    context = attacks.AttackContext("classification", labels=labels, fit=attacks.Fit(train, labels))
    probe = torch.full((1, 3, 4, 4), 0.5)
    delta = attack(net, probe, context, eps=eps) - probe
    assert torch.allclose(delta[0], expected, atol=1e-6)


class _NoisyLinear(nn.Module):
    """A classifier random in evaluation: first logit sum((w + 4 z) * x), z ~ N(0, 1) drawn per call
    from its own generator, so each input gradient is w plus noise four times its size."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.where(torch.arange(3 * 8 * 8) % 3 == 0, 1.0, -1.0).view(1, 3, 8, 8) * 0.1)
        self.noise = torch.Generator().manual_seed(7)

    def forward(self, x):
        z = torch.randn(self.w.shape, generator=self.noise)
        first = ((self.w + 0.4 * z) * x).flatten(1).sum(1, keepdim=True)
        return torch.cat([first, torch.zeros_like(first)], 1)


def test_eot_averages_gradients_over_a_random_model_s_passes():
    """Athalye et al. 2018: FGSM on a model random at evaluation follows the noise with one pass and
    the true gradient's sign with many; on a deterministic model the average changes nothing."""
    x, labels = torch.full((4, 3, 8, 8), 0.5), torch.zeros(4, dtype=torch.long)
    context = attacks.AttackContext("classification", labels=labels)
    truth = -torch.sign(_NoisyLinear().w.detach())  # the loss (CE of label 0) falls along +w: ascend along -w

    def agreement(eot: int) -> float:
        step = attacks.create_attack("fgsm", eot=eot)(_NoisyLinear(), x, context, eps=8 / 255) - x
        return float((torch.sign(step) == truth).float().mean())

    assert agreement(1) < 0.7 and agreement(256) > 0.95
    steady = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    one, many = (attacks.create_attack("pgd", steps=3, eot=e)(steady, x, context, eps=8 / 255) for e in (1, 4))
    assert torch.allclose(one, many, atol=1e-6)
    from robustbench_lfm.spec import AttackSpec

    assert "eot" not in AttackSpec.create("pgd").params_json()  # at 1, earlier cell ids stand
    assert '"eot":4' in AttackSpec.create("pgd", {"eot": 4}).params_json()
    with pytest.raises(ValueError, match="eot=0 must be a whole number >= 1"):
        attacks.create_attack("pgd", eot=0)
    with pytest.raises(ValueError, match="or EOT"):
        attacks.create_attack("pgd", eot=2, backend="torchattacks")
