"""Contract checks every registered entry must pass, for lfm-bench's own tests and for plugin authors.

A plugin author gets the project's contract tests by calling one function from pytest:

    from robustbench_lfm.testing import check_plugin

    def test_my_plugin_keeps_the_contracts():
        assert check_plugin("my_plugin.py")  # the names it checked: ["regularizer my-mask", ...]

`check_plugin` loads the plugin and checks every entry it registered; `check_attack`,
`check_regularizer`, `check_model` and `check_dataset` check one entry by name. Each raises
`AssertionError` naming the entry and the broken contract:

* an attack, on a small model of each of its tasks: the output keeps the input's shape, stays
  in [0, 1] and within eps in its norm, carries no gradient; the model's mode, `requires_grad`
  flags and `.grad` are as before; eps 0 returns the clean images; two runs with one seed are
  equal and the caller's RNG stream is untouched; `describe` names objective, norm, steps,
  step size and perturbed side. A threat with no budget (`budgeted = False`, the corruptions)
  is held to all of it but the budget and eps 0, and must change the images. Options an item
  stands for several of (`corrupt`'s type and severity) take the first `expand` gives.
* a regularizer: a `models.regularizers.Regularizer` at a known site; the identity in eval mode;
  in training it keeps the shape and finiteness, and one seed gives one output.
* a model: builds for each task on `resnet-mini`; eval returns (N, D) embeddings or (N, classes)
  logits; training returns logits; all finite.
* a dataset: a known task, and its options' defaults check; a generated one loads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustbench_lfm import attacks, models
from robustbench_lfm.models.regularizers import SITES, Regularizer

EPS = {"linf": 8 / 255, "l2": 0.5}
_SHAPES = {"input": (2, 3, 32, 16), "head": (2, 16)}  # any other site: a feature map


def check_attack(name: str, **options: object) -> None:
    """The attack contracts of `name` (options: e.g. fewer steps for speed) on each of its tasks."""
    cls = attacks.get_attack_class(name)
    for task in cls.tasks:
        net, x, ctx = _attack_setup(task)
        attack = attacks.create_attack(name, seed=5, **cls.expand(dict(options), task)[0])
        eps = EPS.get(attack.norm, 0.0)
        flags = [p.requires_grad for p in net.parameters()]
        torch.manual_seed(123)
        first = attack(net, x, ctx, eps=eps)
        after = torch.rand(1)
        torch.manual_seed(123)
        second = attack(net, x, ctx, eps=eps)
        where = f"attack {name!r} ({task})"
        assert first.shape == x.shape and not first.requires_grad, f"{where}: output shape or gradient"
        if attack.budgeted:
            assert float(attacks.budget(first, x, attack.norm).max()) <= eps * (1 + 1e-5), f"{where}: over budget"
            assert torch.equal(attack(net, x, ctx, eps=0.0), x), f"{where}: eps 0 changed the images"
        else:
            assert not torch.equal(first, x), f"{where}: a threat with no budget left the images unchanged"
        assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0, f"{where}: pixels outside [0, 1]"
        assert torch.equal(first, second), f"{where}: not deterministic under one seed"
        assert torch.equal(after, torch.rand(1)), f"{where}: consumed the caller's RNG stream"
        assert not net.training and [p.requires_grad for p in net.parameters()] == flags, f"{where}: changed the model"
        assert all(p.grad is None for p in net.parameters()), f"{where}: left parameter gradients"
        described = attack.describe(eps, task)
        missing = {"objective", "norm", "steps", "step_size", "perturbed"} - set(described)
        assert not missing, f"{where}: describe() lacks {sorted(missing)}"


def check_regularizer(name: str) -> None:
    """The regularizer contracts of `name`, built with its defaults."""
    cls = models.registry.get_regularizer(name)
    module = cls(seed=0)
    where = f"regularizer {name!r}"
    assert isinstance(module, Regularizer), f"{where}: not a models.regularizers.Regularizer"
    assert module.site in SITES, f"{where}: site {module.site!r} is not one of {SITES}"
    x = torch.rand(*_SHAPES.get(module.site, (2, 8, 16, 8)), generator=torch.Generator().manual_seed(0))
    assert torch.equal(module.eval()(x), x), f"{where}: not the identity in eval mode"
    module.train()
    module.reseed(3)
    first = module(x)
    module.reseed(3)
    assert first.shape == x.shape and bool(torch.isfinite(first).all()), f"{where}: shape or finiteness in training"
    assert torch.equal(first, module(x)), f"{where}: one seed gave two outputs"


def check_model(name: str, num_classes: int = 4) -> None:
    """The model contracts of `name` on each task, on the small `resnet-mini` backbone."""
    entry = models.get_model_entry(name)
    backbone = "resnet-mini" if entry.backbone in (None, "", "resnet-mini", "resnet18", "resnet50") else entry.backbone
    for task in models.TASKS:
        torch.manual_seed(0)
        net = models.create_model(name, num_classes, task, backbone=backbone)
        x = torch.rand(4, 3, 64, 32, generator=torch.Generator().manual_seed(1))
        where = f"model {name!r} ({task})"
        out = net.train()(x)
        logits = out[0] if isinstance(out, tuple) else out
        assert isinstance(logits, Tensor) and logits.shape == (4, num_classes), f"{where}: training logits shape"
        with torch.no_grad():
            emb = net.eval()(x)
        assert isinstance(emb, Tensor) and emb.dim() == 2 and emb.shape[0] == 4, f"{where}: eval output shape"
        if task == "classification":
            assert emb.shape[1] == num_classes, f"{where}: one logit per class"
        assert bool(torch.isfinite(emb).all()) and bool(torch.isfinite(logits).all()), f"{where}: non-finite output"


def check_dataset(name: str, load: bool = True) -> None:
    """The dataset contracts of `name`; a generated one (no folder) is loaded with its defaults."""
    from robustbench_lfm.datasets import get_dataset_info, load_dataset

    info = get_dataset_info(name)
    where = f"dataset {name!r}"
    assert info.task in models.TASKS, f"{where}: task {info.task!r} is not one of {models.TASKS}"
    info.check_options({})
    if load and not info.needs_root:
        import tempfile

        with tempfile.TemporaryDirectory() as cache:
            data = load_dataset(name, {}, Path(cache), None, True)
        assert data.summary(), f"{where}: an empty summary"


def check_plugin(ref: str) -> list[str]:
    """Load the plugin `ref` (a file or module) and check every entry it registered; the names
    checked, as `kind name`. An empty list means it registered nothing the contracts cover."""
    from robustbench_lfm import plugins
    from robustbench_lfm.datasets import DATASETS

    plugin = plugins.load_plugin(ref)
    checks: list[tuple[str, Any, Callable[[str], None]]] = [
        ("regularizer", models.registry.REGULARIZERS, check_regularizer),
        ("model", models.registry.MODELS, check_model),
        ("attack", attacks.registry.ATTACKS, check_attack),
        ("dataset", DATASETS, check_dataset),
    ]
    done = []
    for kind, registry, check in checks:
        for name in registry.names():
            if plugins.plugin_of(registry.source(name)) == plugin:
                check(name)
                done.append(f"{kind} {name}")
    return done


def _attack_setup(task: str) -> tuple[nn.Module, Tensor, attacks.AttackContext]:
    """A small model, images and context for `task` (re-ID guides: the batch's own embeddings)."""
    torch.manual_seed(0)
    if task == "reid":
        net: nn.Module = models.create_model("plain", 4, "reid", backbone="resnet-mini")
        x = torch.rand(8, 3, 64, 32, generator=torch.Generator().manual_seed(1))
        ids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        net.train()
        with torch.no_grad():  # settle BN statistics so the embedding is not degenerate
            net(torch.rand(16, 3, 64, 32, generator=torch.Generator().manual_seed(2)))
        net.eval()
        with torch.no_grad():
            guides = attacks.Guides(net(x), ids)
        return net, x, attacks.AttackContext("reid", labels=ids, guides=guides, fit=_fit(x.shape, ids))
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)).eval()
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = net(x).argmax(1)
    return net, x, attacks.AttackContext("classification", labels=y, fit=_fit(x.shape, y))


def _fit(shape: tuple[int, ...], labels: Tensor) -> attacks.Fit:
    """Training images for attacks that learn beforehand (a universal perturbation): random uint8."""
    images = torch.randint(
        0, 256, (len(labels), *shape[1:]), dtype=torch.uint8, generator=torch.Generator().manual_seed(3)
    )
    return attacks.Fit(images, labels)
