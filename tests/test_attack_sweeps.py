"""Every registered attack through the real sweep path, as a user's run meets it.

The unit contract (tests/test_contracts.py) calls each attack on a handful of contiguous images
and an untrained model. A sweep differs: the images arrive channels-last from a trained model's
own pipeline, and an ensemble reaches its later stages only when some images survive the earlier
ones (AutoAttack's FAB-T and Square run on what APGD-CE and APGD-T leave). So each task's
attacks run here in one sweep (digits for classification, the tiny synthreid for re-ID) on a model
trained by that sweep, with enough images and a budget small enough that AutoAttack (standard)
hands survivors to FAB-T and Square; spies record what each stage received.
"""

from __future__ import annotations

from collections import defaultdict

import pandas as pd
import pytest
import torch
import torchattacks
from click.testing import CliRunner

from robustbench_lfm import attacks, progress
from robustbench_lfm.cli import main
from tests.conftest import TINY_CLI, cap_square_queries
from tests.test_attacks import FAST

TASKS = {"classification": ("digits", "48"), "reid": (TINY_CLI, "12")}  # dataset, --n-eval
OPTIONS = {
    **FAST,
    # The standard ensemble, every stage of which must be reached, at 10 iterations a white-box member
    # instead of 100: the stages' plumbing is under test here, Croce & Hein's settings in test_attacks.py.
    "autoattack": {"steps": 10},
    "uap": {"steps": 2, "batch": 16, "images": 64},  # learnt on 64 training images: the sweep path, not the optimum
}
# An ensemble (auto-reid) runs its members, each swept here; its own sweep path is test_ensemble.py's.
CASES = [
    (name, task)
    for name in attacks.list_attacks()
    if not issubclass(attacks.get_attack_class(name), attacks.Ensemble)
    for task in attacks.get_attack_class(name).tasks
]


def _item(name: str) -> str:
    options = OPTIONS.get(name, {})
    return name + (":" + ",".join(f"{k}={v}" for k, v in options.items()) if options else "")


class Spies:
    """Records the layout of every batch an attack receives and the batch sizes torchattacks' stages see."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.layouts: dict[str, set[str]] = defaultdict(set)
        self.stages: dict[str, list[int]] = defaultdict(list)
        self.steps: dict[str, set[int]] = defaultdict(set)  # the iterations each white-box stage ran
        self.events: list = []  # the sweep's progress events (robustbench_lfm/progress.py)
        classes = {attacks.Attack, *(attacks.get_attack_class(n) for n in attacks.list_attacks())}
        for cls in (c for c in classes if "__call__" in vars(c)):  # the base, and any attack with its own
            monkeypatch.setattr(cls, "__call__", self._layout_spy(vars(cls)["__call__"]))
        cap_square_queries(monkeypatch)  # Square's plumbing is under test here, not its strength
        for stage in (torchattacks.APGD, torchattacks.APGDT, torchattacks.FAB, torchattacks.Square):
            monkeypatch.setattr(stage, "forward", self._spy(stage))

    def _layout_spy(self, call):
        def spied(attack, model, x, *args, **kwargs):
            self.layouts[attack.name].add("channels_last" if _channels_last(x) else "contiguous")
            return call(attack, model, x, *args, **kwargs)

        return spied

    def _spy(self, stage: type):
        forward = stage.forward

        def spied(attack, images, labels):
            assert images.is_contiguous(), f"{stage.__name__} was handed a non-contiguous batch"
            self.stages[stage.__name__].append(len(images))
            if hasattr(attack, "steps"):
                self.steps[stage.__name__].add(attack.steps)
            return forward(attack, images, labels)

        return spied


def _channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last)


EPS = {"linf": "2/255", "l2": "0.25", "none": "2/255"}  # small: AutoAttack must leave survivors for FAB-T


def _by_norm(names: list[str]) -> dict[str, list[str]]:
    """Attack items grouped by norm (one --eps grid each); unbudgeted ones (corrupt) join L-inf's."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name in names:
        norm = attacks.create_attack(name, **OPTIONS.get(name, {})).norm
        groups["linf" if norm == "none" else norm].append(_item(name))
    return groups


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> dict[str, tuple[pd.DataFrame, Spies]]:
    """Per task: the sweeps' results over all of its registered attacks, and the spies' records.
    One sweep per norm into one run directory: the model is trained once, then read from the cache."""
    out: dict[str, tuple[pd.DataFrame, Spies]] = {}
    for task, (dataset, n_eval) in TASKS.items():
        root = tmp_path_factory.mktemp(task)
        with pytest.MonkeyPatch.context() as monkeypatch:
            spies = Spies(monkeypatch)
            for norm, items in _by_norm(sorted({n for n, t in CASES if t == task})).items():
                args = ["run", "--dataset", dataset, "--models", "plain", "--no-baseline", "--epochs", "3",
                        "--attacks", ",".join(items), "--eps", EPS[norm], "--n-eval", n_eval,
                        "--out", str(root / "run"), "--cache-dir", str(root / "cache"), "-q"]  # fmt: skip
                with progress.listening(spies.events.append):  # beside the sweep's bar, in this thread
                    result = CliRunner().invoke(main, args)
                assert result.exit_code == 0, result.output
        out[task] = (pd.read_csv(root / "run" / "results.csv", keep_default_na=False), spies)
    return out


@pytest.mark.parametrize(("name", "task"), CASES)
def test_every_attack_runs_in_a_sweep_on_channels_last_batches_of_a_trained_model(swept, name, task):
    df, spies = swept[task]
    rows = df[df["attack"] == name]
    assert len(rows) and rows["value"].astype(float).between(0, 1).all()
    assert "channels_last" in spies.layouts[name]  # the layout a trained model's pipeline hands over


def test_autoattack_hands_survivors_to_fab_t_and_square(swept):
    df, spies = swept["classification"]
    assert spies.stages["FAB"] and min(spies.stages["FAB"]) > 0, "no image survived APGD: FAB-T never ran"
    assert spies.stages["Square"] and min(spies.stages["Square"]) > 0, "Square never ran"
    # autoattack:steps=10 reached each white-box member (apgd-ce and apgd-dlr run APGD at their own 5)
    assert spies.steps["APGDT"] == spies.steps["FAB"] == {10} and 10 in spies.steps["APGD"]
    accuracy = df[(df["metric"] == "accuracy") & (df["attack"].isin(["none", "apgd-ce", "autoattack"]))]
    value = accuracy.set_index("attack")["value"].astype(float)
    assert value["autoattack"] <= value["apgd-ce"] <= value["none"]  # the ensemble is at least its first member


def test_autoattack_s_batches_say_what_share_of_their_most_passes_they_ran(swept):
    """The sweep bar learns what AutoAttack costs on this model from its batches (progress.SweepBar):
    each batch's `Images` carries the share of the ensemble's most passes it ran, counted by the hook
    on the model through torchattacks, below 1 where the first members fooled images; an attack that
    runs all of its passes carries none."""
    _, spies = swept["classification"]
    shares = defaultdict(list)
    for event in spies.events:
        if isinstance(event, progress.Images):
            shares[event.cell.attack.name, event.cell.eps > 0].append(event.share)
    assert shares["autoattack", True] and all(0 < s < 1 for s in shares["autoattack", True]), shares
    assert set(shares["autoattack", False]) == {0.0}, shares  # the sanity probe at eps 0 runs no pass
    assert shares["pgd", True] and set(shares["pgd", True]) == {None}
    scored = defaultdict(int)  # a batch stands for all the images it scores, those lost clean (not searched) too
    for event in spies.events:
        if isinstance(event, progress.Images):
            scored[event.cell] += event.n
    assert set(scored.values()) == {int(TASKS["classification"][1])}, scored


def test_every_attack_that_keeps_its_budget_needs_no_projection(swept):
    """The CSV `projected`: the final projection moved no pixel of an attack's output by more than
    rounding, except for the minimum-norm searches that are projected by design."""
    from robustbench_lfm.sanity import PROJECTION_ROUNDING

    for task, (df, _) in swept.items():
        attacked = df[df["attack"] != "none"].copy()
        attacked["projected"] = pd.to_numeric(attacked["projected"], errors="coerce")
        measured = attacked.groupby("attack")["projected"].max()
        for name, moved in measured.items():
            if attacks.get_attack_class(str(name)).stays_in_budget and not pd.isna(moved):
                assert moved <= PROJECTION_ROUNDING, (task, name, moved)
