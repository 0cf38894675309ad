"""Probes measure what they claim, attacks work in the scored geometry, and every attack's options
come from its constructor (one home for each default)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustbench_lfm import attacks, models
from robustbench_lfm.spec import AttackSpec, Cell, SpecError, resolve_attack


class Scaled(nn.Module):
    """A fixed linear embedding times `scale`: cosine geometry ignores the scale, euclidean does not."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.proj = nn.Linear(3 * 8 * 4, 6, bias=False)
        torch.nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(0))
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.proj(x.flatten(1))


@pytest.mark.parametrize("name", ["sma", "fna", "metric-ifgsm", "odfa"])
def test_the_large_eps_probe_scales_the_schedule_the_sweep_runs(name):
    spec = AttackSpec.create(name)
    reference, large = 8 / 255, 64 / 255
    steps, alpha = spec.build(0).schedule_for(reference, "reid")
    probe = Cell(None, spec, large, 0, probe_of=reference).build_attack("reid")  # type: ignore[arg-type]
    fields = probe.describe(large, "reid")
    assert fields["steps"] == steps and fields["step_size"] == pytest.approx(alpha * large / reference)
    assert fields["steps"] * fields["step_size"] >= large  # it can reach the edge of the ball it claims


def test_eps_zero_returns_the_clean_images_without_a_search(monkeypatch):
    calls = []
    attack = attacks.create_attack("pgd", steps=2)
    monkeypatch.setattr(attack, "perturb", lambda p: calls.append(p.eps) or p.x + 1)
    x = torch.rand(2, 3, 8, 4)
    out = attack(Scaled(1.0), x, attacks.AttackContext("reid"), eps=0.0)
    assert calls == [] and torch.equal(out, x) and out.data_ptr() != x.data_ptr()
    attack(Scaled(1.0), x, attacks.AttackContext("reid"), eps=1 / 255)
    assert calls == [1 / 255]  # any other budget runs the search


def test_an_attack_editing_its_input_in_place_cannot_move_the_ball(monkeypatch):
    attack = attacks.create_attack("pgd", steps=2)

    def in_place(p):
        p.x.add_(0.4)  # the search's copy, not the caller's images
        return p.x

    monkeypatch.setattr(attack, "perturb", in_place)
    x = torch.rand(2, 3, 8, 4) * 0.5
    kept = x.clone()
    out = attack(Scaled(1.0), x, attacks.AttackContext("reid"), eps=8 / 255)
    assert torch.equal(x, kept) and float((out - x).abs().max()) <= 8 / 255 + 1e-7


def test_metric_objectives_follow_the_scored_distance():
    x = torch.rand(4, 3, 8, 4)
    delta = 0.05 * torch.randn(4, 3, 8, 4, generator=torch.Generator().manual_seed(1))
    values = {}
    for distance in ("cosine", "euclidean"):
        objective = attacks.resolve_objective("sma", "reid")
        for scale in (1.0, 10.0):
            net = Scaled(scale)
            state = objective.prepare(net, x, attacks.AttackContext("reid", distance=distance))
            values[distance, scale] = objective.per_sample(net, x + delta, state)
            if distance == "euclidean":  # the squared L2 distance between raw embeddings, as ranked
                expected = (net(x + delta) - net(x)).pow(2).sum(1)
                assert torch.allclose(values[distance, scale], expected, rtol=1e-4)
    assert torch.allclose(values["cosine", 1.0], values["cosine", 10.0], rtol=1e-4)  # scale-free
    assert torch.allclose(values["euclidean", 10.0], 100 * values["euclidean", 1.0], rtol=1e-4)


@pytest.mark.parametrize("name", attacks.list_attacks())
def test_every_attack_resolves_its_options_from_its_constructor(name):
    defaults = attacks.get_attack_class(name).defaults()
    assert "seed" not in defaults
    spec = AttackSpec.create(name)
    cls = attacks.get_attack_class(name)
    later = cls.added_defaults  # options added since the first format: left out at their defaults
    assert dict(spec.options) == {k: v for k, v in defaults.items() if k not in later} and spec.label == name
    attacks.create_attack(name, **cls.expand(defaults, cls.tasks[0])[0])  # the constructor takes every option
    with pytest.raises(SpecError, match=rf"{name} has no option\(s\) bogus \(it takes: "):
        resolve_attack(f"{name}:bogus=1")
    with pytest.raises(SpecError, match="not an option; it follows the training seed"):
        resolve_attack(f"{name}:seed=3")


def test_an_option_written_at_its_default_is_the_same_measurement():
    assert AttackSpec.create("pgd", {"steps": None}) == AttackSpec.create("pgd")
    assert AttackSpec.create("sma", {"side": "query"}).label == "sma"
    assert AttackSpec.create("sma", {"side": "gallery"}).label == "sma:side=gallery"


@pytest.mark.parametrize("name", models.list_models())
def test_every_default_is_written_once(name):
    """An entry repeats no default of its regularizer's or method's signature (lfm-code's and
    MixACM's included): the class signature is the one home of a default."""
    entry = models.get_model_entry(name)
    if entry.regularizer != "none":
        signature = models.method_parameters(models.registry.get_regularizer(entry.regularizer))
        assert not {k for k, v in entry.params.items() if signature.get(k, object()) == v}
    method = models.method_defaults(entry.method)
    assert not {k for k, v in entry.method_params.items() if method.get(k, object()) == v}
    for key, value in method.items():
        assert entry.defaults()[key] == value


@pytest.mark.parametrize(("name", "options"), [("sma", {"steps": 2}), ("pgd", {"steps": 2}), ("fgsm", {})])
def test_an_explicit_geometry_overrides_the_scored_one(name, options):
    x, net = torch.rand(4, 3, 8, 4), Scaled(10.0)
    fixed = attacks.create_attack(name, geometry="cosine", **options)
    follows = attacks.create_attack(name, **options)
    on_cosine = follows(net, x, attacks.AttackContext("reid", distance="cosine"), eps=8 / 255)
    assert torch.equal(fixed(net, x, attacks.AttackContext("reid", distance="euclidean"), eps=8 / 255), on_cosine)
    assert not torch.equal(follows(net, x, attacks.AttackContext("reid", distance="euclidean"), eps=8 / 255), on_cosine)


def test_an_unknown_geometry_is_refused():
    with pytest.raises(ValueError, match="geometry='l1' is not one of cosine, euclidean"):
        attacks.create_attack("sma", geometry="l1")


def test_two_geometries_are_two_measurements():
    """The option reaches attack_params (the CSV, the gate's key), the label and the cell id."""
    from robustbench_lfm.recipe import TrainRecipe
    from robustbench_lfm.spec import DataSpec, EvalSpec, resolve_model

    scored, cosine = resolve_attack("sma"), resolve_attack("sma:geometry=cosine")
    assert scored.params_json() != cosine.params_json()
    assert (scored.label, cosine.label) == ("sma", "sma:geometry=cosine")
    model, data, recipe = resolve_model("plain", None, TrainRecipe()), DataSpec("synthreid"), TrainRecipe()
    ids = {Cell(model, a, 8 / 255, 0).cell_id(data, recipe, EvalSpec()) for a in (scored, cosine)}
    assert len(ids) == 2
