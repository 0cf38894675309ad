"""Training recipes: shipped TOML files per task, user files, method overrides, and the keys."""

from __future__ import annotations

import re
import shutil

import pytest

from robustbench_lfm.recipe import RECIPE_DIR, RecipeError, load_recipe, recipe_names
from robustbench_lfm.spec import Cell, DataSpec, SpecError, resolve_model

TASKS = ("reid", "classification")


@pytest.mark.parametrize("task", TASKS)
def test_each_task_ships_a_cpu_and_a_paper_recipe(task):
    assert recipe_names(task) == ["cpu", "paper"]
    cpu, paper = load_recipe("cpu", task), load_recipe("paper", task)
    assert cpu.task == paper.task == task and cpu.backbone == "resnet-mini"
    assert paper.epochs > cpu.epochs


def test_paper_recipes_hold_the_papers_settings():
    reid, cls = load_recipe("paper", "reid"), load_recipe("paper", "classification")
    assert (reid.backbone, reid.lr, reid.epochs, reid.milestones, reid.warmup_factor) == (
        "resnet50",
        3.5e-4,
        120,
        (40, 70),
        0.01,
    )  # docs/reference/reid.md C2
    assert (cls.backbone, cls.optimizer, cls.lr, cls.epochs, cls.milestones, cls.batch_size) == (
        "resnet18",
        "sgd",
        0.1,
        110,
        (100, 105),
        128,
    )  # docs/reference/methods.md §2.4, AT


def test_recipe_method_overrides_reach_the_model_and_its_key():
    recipe = load_recipe("cpu", "reid")
    gwi = resolve_model("gwi", None, recipe)
    assert dict(gwi.resolved)["start_iter"] == recipe.method_overrides("gwi")["start_iter"] != 500
    assert dict(resolve_model("gwi:start_iter=7", None, recipe).resolved)["start_iter"] == 7  # the item wins
    data = DataSpec("synthreid")
    keys = {Cell(resolve_model(m, None, recipe), None, 0.0, 0).train_key(data, recipe) for m in ("gwi", "gwi:every=2")}
    assert len(keys) == 2


def test_a_copied_recipe_file_gives_the_same_keys(tmp_path):
    copy = tmp_path / "mine.toml"
    shutil.copy(RECIPE_DIR / "reid-cpu.toml", copy)
    named, mine = load_recipe("cpu", "reid"), load_recipe(str(copy), "reid")
    assert mine.source == str(copy) and named.key() == mine.key()
    changed = tmp_path / "changed.toml"
    changed.write_text(re.sub(r"^epochs = \d+", "epochs = 99", copy.read_text(), count=1, flags=re.M))
    assert load_recipe(str(changed), "reid").key() != named.key()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('task = "reid"\nepoch = 3\n', "unknown field"),
        ('task = "classification"\n', "is for task 'classification'"),
        ("task = [\n", "cannot be read"),
        ('task = "reid"\noptimizer = "rmsprop"\n', "optimizer"),
        ('task = "reid"\nmethods = 3\n', r"\[methods.NAME\]"),
    ],
)
def test_bad_recipe_files_say_what_to_fix(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=message):
        load_recipe(str(path), "reid")


def test_unknown_recipe_names_list_the_shipped_ones():
    with pytest.raises(RecipeError, match="cpu, paper"):
        load_recipe("fast", "reid")


def test_a_method_override_the_method_does_not_take_is_refused(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('task = "reid"\n[methods.gwi]\nstart = 3\n')
    with pytest.raises(SpecError, match=r"\[methods.gwi\] has unknown parameter"):
        resolve_model("gwi", None, load_recipe(str(path), "reid"))
