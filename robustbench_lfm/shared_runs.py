"""Attack runs two cells of one trained model share: an ensemble's member and that attack alone.

auto-reid (robustbench_lfm/attacks/ensemble.py) runs each member as the same attack would run alone
in its cell: the cell's model, seed, eps, threat and probe schedule, its queries attacked from the
cell's seed. So a grid that holds auto-reid and one of its members alone (the lfm-paper preset's
`sma:steps=15,step_size=1/255` is SMA's default schedule, so auto-reid's cosine SMA under the
default `--distance cosine`) would craft the same adversarial queries twice: 15 of its 87 attack
steps per model and eps.

A query-side attack run is named by what makes its images (`run_key`): the id of its cell with the
attack's options as the search uses them, its `geometry` resolved to the scored distance (an attack
without one works in the scored geometry) and an iterative attack's schedule to the steps and step
size it runs at the cell's eps, however they were written (a default, `rel_step`, a probe's scaled
schedule: `IterativeAttack.schedule`, robustbench_lfm/attacks/iterative.py). A (model, seed) group
crafts each name once (`SharedRuns`, robustbench_lfm/group.py): the later cell takes the earlier
one's attacked query embeddings and the largest change its projection made (`projected`); the
run's time counts in the `wall_s` of the cell that crafted it. The estimate counts such a run once
(robustbench_lfm/estimate.py). Runs are not shared under --score-repeats above 1 (a model
random in eval mode draws anew in every cell), on classification (no ensemble there), for
corruptions, and for attacks that perturb the gallery.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable

from torch import Tensor

from robustbench_lfm import attacks
from robustbench_lfm.attacks.iterative import IterativeAttack
from robustbench_lfm.parsing import Params
from robustbench_lfm.spec import AttackSpec, Cell, RunSpec


def attack_runs(spec: RunSpec, cell: Cell) -> list[tuple[Cell, str | None]]:
    """The attack runs of `cell`, each as the cell it would be alone and its `run_key`: an ensemble's
    members, else the cell itself."""
    try:
        attack = cell.build_attack(spec.recipe.task)
    except Exception:  # a plugin's attack that fails to build fails its own cell, when it runs
        return [(cell, None)]
    if isinstance(attack, attacks.Ensemble):
        return [(m, run_key(spec, m)) for m in member_cells(cell, attack)]
    return [(cell, run_key(spec, cell))]


def member_cells(cell: Cell, ensemble: attacks.Ensemble) -> list[Cell]:
    """Each member of `cell`'s ensemble as the cell it runs as alone: the same model, seed, eps,
    threat and probe schedule, the member's attack spec."""
    return [dataclasses.replace(cell, attack=AttackSpec.create(n, o)) for n, o in ensemble.member_options()]


def run_key(spec: RunSpec, cell: Cell) -> str | None:
    """The name of the query-side attack run `cell` makes (module docstring); None where it is not
    shared: a clean cell, a corruption, an ensemble, an attack on the gallery, classification, or
    --score-repeats above 1."""
    if cell.attack is None or spec.recipe.task != "reid" or spec.evaluation.score_repeats != 1:
        return None
    try:
        attack = cell.build_attack("reid")
        if attack is None or isinstance(attack, attacks.Ensemble) or not cell.attack.budgeted:
            return None
        if tuple(attack.sides()) != ("query",):
            return None
        options = searched_options(cell.attack, attack, cell.eps, spec.evaluation.distance)
    except Exception:  # a plugin's attack that fails here fails its own cell, when it runs: never shared
        return None
    searched = dataclasses.replace(cell, attack=AttackSpec(cell.attack.name, options))
    return searched.cell_id(spec.data, spec.recipe, spec.evaluation)


def searched_options(written: AttackSpec, attack: attacks.Attack, eps: float, distance: str) -> Params:
    """`written`'s options as the search of `attack` (built from it; a probe's rescaled) uses them at
    `eps` on re-ID scored in `distance`: the geometry named, an iterative attack's schedule as the
    steps and step size it runs."""
    options = dict(written.options)
    if "geometry" in options and options["geometry"] is None:  # the scored geometry, named
        options["geometry"] = distance
    if isinstance(attack, IterativeAttack):  # the schedule the search runs (a probe's: rescaled)
        steps, alpha = attack.schedule_for(eps, "reid")
        options.update(steps=steps, step_size=alpha, rel_step=None)
    return tuple(sorted(options.items()))


class SharedRuns:
    """The attacked query embeddings of the runs two or more of one group's cells make, kept from the
    first cell that crafts them until the last that takes them."""

    def __init__(self, spec: RunSpec, cells: Iterable[Cell]) -> None:
        runs = [(run, key) for cell in cells for run, key in attack_runs(spec, cell) if key is not None]
        uses = Counter(key for _, key in runs)
        self.keys = {run: key for run, key in runs if uses[key] > 1}  # a run's cell (a member's too) -> its key
        self.left = {key: n for key, n in uses.items() if n > 1}  # the uses still to come
        self.kept: dict[str, tuple[Tensor, float | None]] = {}

    def key(self, cell: Cell) -> str | None:
        """`cell`'s run key when another cell of the group makes the same run, else None."""
        return self.keys.get(cell)

    def take(self, key: str) -> tuple[Tensor, float | None] | None:
        """The embeddings and `projected` of run `key` when an earlier cell crafted them (the last
        use lets them go), else None."""
        self.left[key] -= 1
        return self.kept.pop(key, None) if self.left[key] == 0 else self.kept.get(key)

    def keep(self, key: str, embedded: Tensor, projected: float | None) -> None:
        """Keep run `key`'s embeddings for the group's later cells that make it."""
        if self.left[key] > 0:
            self.kept[key] = (embedded, projected)
