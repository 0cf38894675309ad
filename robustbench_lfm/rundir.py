"""A run directory is bound to what it measures: RUN_DIR/fingerprint.json.

The fingerprint holds what every cell of a run shares: the task, the dataset with its resolved
options and the fingerprint of its folder, the training recipe, and the evaluation options. The
first sweep into a directory writes it; a later sweep that differs in any of them is refused
with one line naming the first difference and the fix (`--out`), before any work. Extending the
grid — more models, attacks, eps or seeds — changes none of it and stays allowed. A directory
that holds results but no readable fingerprint cannot be verified, so it is refused too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from robustbench_lfm import options
from robustbench_lfm.files import atomic_write
from robustbench_lfm.hashing import canonical_json
from robustbench_lfm.spec import RunSpec, SpecError

FINGERPRINT = "fingerprint.json"
FORMAT = 1


class RunDirError(SpecError):
    """The run directory measures something else; the message names the difference and the fix."""


def fingerprint(spec: RunSpec) -> dict[str, Any]:
    """What every cell of the run shares, as plain JSON values."""
    content = {
        "format": FORMAT,
        "task": spec.recipe.task,
        "dataset": spec.data.name,
        "data_params": dict(spec.data.resolved),
        "data_source": spec.data.source,
        "recipe": spec.recipe.key(),
        "evaluation": spec.evaluation.key(),
    }
    if not options.at_key_default("train_fraction", spec.data.train_fraction):  # fingerprints before it stand
        content["train_fraction"] = spec.data.train_subset()
    if spec.threat.corruptions:
        content[PUBLISHED] = spec.threat.corruptions
    return json.loads(canonical_json(content))


# The published corrupted test sets the directory's `corrupt:source=published` cells read: a run
# without such cells leaves it as it is, the first with them records it, and a later one that
# finds the files changed is refused (its new cells would stand beside the old under one identity).
PUBLISHED = "published_corruptions"


def bind(spec: RunSpec) -> None:
    """Write the fingerprint of a new run directory, or check an existing one against `spec`.

    Raises:
        RunDirError: the directory measures another task, dataset, recipe or evaluation, or holds
            results that no readable fingerprint describes.
    """
    path = spec.out_dir / FINGERPRINT
    ours = fingerprint(spec)
    if not path.exists():
        if any((spec.out_dir / name).exists() for name in ("results.csv", "probes.csv")):
            raise RunDirError(
                f"{spec.out_dir} holds results but no {FINGERPRINT} (an older lfm-bench made it), so what they "
                "measure cannot be checked; give this run another --out"
            )
        atomic_write(path, json.dumps(ours, indent=2, sort_keys=True) + "\n")
        return
    try:
        theirs = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        theirs = None
    if not isinstance(theirs, dict):
        raise RunDirError(f"{path} is unreadable, so this directory's results cannot be checked; give another --out")
    compared = {k: v for k, v in ours.items() if k != PUBLISHED or k in theirs}
    if PUBLISHED in theirs and PUBLISHED not in ours:  # this run reads no published corruption
        compared[PUBLISHED] = theirs[PUBLISHED]
    difference = first_difference(theirs, compared)
    if difference is not None:
        raise RunDirError(
            f"{spec.out_dir} measures another {difference}; a run directory holds one task, dataset, recipe and "
            "evaluation (more models, attacks, eps or seeds may join it): give this run another --out"
        )
    if PUBLISHED in ours and PUBLISHED not in theirs:  # the first cells to read them record their files
        atomic_write(path, json.dumps({**theirs, PUBLISHED: ours[PUBLISHED]}, indent=2, sort_keys=True) + "\n")


def first_difference(old: Any, new: Any, where: str = "") -> str | None:
    """'data_params.seed (there: 0, this run: 1)' for the first differing leaf, or None."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            found = first_difference(old.get(key), new.get(key), f"{where}.{key}" if where else key)
            if found is not None:
                return found
        return None
    if old != new:
        return f"{where} (there: {_shown(old)}, this run: {_shown(new)})"
    return None


def _shown(value: Any) -> str:
    """A fingerprint value in a message; an absent key is an option left at its default."""
    return "the default" if value is None else json.dumps(value)


def read_fingerprint(run_dir: Path) -> dict[str, Any] | None:
    """The run directory's fingerprint, or None when it has none or it is unreadable."""
    try:
        value = json.loads((run_dir / FINGERPRINT).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None
