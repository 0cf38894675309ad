"""What a failure costs: one cell, one model's cells, or the run (docs/evaluation.md, "When a cell fails").

Code the harness does not own runs inside a sweep: a plugin's attack, corruption, regularizer or
method, a given model's forward (`ckpt:`, `evaluate()`), a third-party attack package. When such
code raises, or hands back values that are not finite, the cells it serves fail (recorded in the
manifest with the traceback in RUN/failed/, exit 1) and every other cell runs. An error raised by
the harness's own code is a bug of lfm-bench and stops the run (exit 3, "please report it").

`outside(err)` tells the two apart by the innermost frame of the traceback that is neither torch's
nor the standard library's: a frame in a file of this package is the harness's; any other file
(a plugin, a user's module, a third-party package) is not. A `ComponentError` raised by the
harness's checks (a NaN image, a non-finite embedding) is the component's by definition. A cell
whose model or attack comes from a plugin or is a given model fails alone whatever the frame: the
harness cannot tell its own bug from the input that component handed it.

This module imports nothing of the project: every layer (attacks, training, the sweep) may use it.
"""

from __future__ import annotations

import errno
import sysconfig
from pathlib import Path
from types import TracebackType
from typing import ClassVar

PACKAGE = Path(__file__).resolve().parent
# What the machine or the user's paths cause, not a component: a full disk or quota, no
# permission, a read-only file system, a name too long, a path that is a folder. These stop the
# run (exit 2, the path named): the next cell would meet them too.
MACHINE_ERRORS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENAMETOOLONG, errno.EISDIR,
     errno.ENOTDIR}
)  # fmt: skip
_STDLIB = tuple(Path(sysconfig.get_paths()[k]).resolve() for k in ("stdlib", "platstdlib"))


class ComponentError(RuntimeError):
    """A component (attack, corruption, model, plugin) raised, or gave values that are not finite:
    the cells it serves fail and the run goes on (exit 1). An exception class of a leaf library
    that may not import this module (attacks.AttackError) says the same with the class attribute
    `component_failure = True`."""

    component_failure: ClassVar[bool] = True


def is_component_failure(err: BaseException) -> bool:
    """Whether `err` is a component's failure as the harness's checks raise it (`ComponentError`)."""
    return bool(getattr(type(err), "component_failure", False))


class ModelError(ComponentError):
    """The scored model's outputs on a cell's images are not finite: that cell fails."""


def _is_torch(path: Path) -> bool:
    return "torch" in path.parts and path.parts[path.parts.index("torch") - 1] in ("site-packages", "dist-packages")


def _passes_through(path: Path) -> bool:
    """Frames that belong to whoever called them: torch's own Python and the standard library."""
    return _is_torch(path) or any(path.is_relative_to(d) for d in _STDLIB) or path.name.startswith("<")


def _frames(tb: TracebackType | None) -> list[tuple[Path, int]]:
    out = []
    while tb is not None:
        out.append((Path(tb.tb_frame.f_code.co_filename), tb.tb_lineno))
        tb = tb.tb_next
    return out


def culprit(err: BaseException) -> tuple[Path, int] | None:
    """The innermost (file, line) of `err`'s traceback outside torch and the standard library."""
    for path, line in reversed(_frames(err.__traceback__)):
        resolved = path.resolve() if not path.name.startswith("<") else path
        if not _passes_through(resolved):
            return resolved, line
    return None


def outside(err: BaseException) -> bool:
    """Whether `err` comes from code outside the harness: a component's own failure found by the
    harness's checks, or an error whose culprit frame is not in this package."""
    if is_component_failure(err):
        return err.__cause__ is None or outside(err.__cause__)
    where = culprit(err)
    return where is not None and not where[0].is_relative_to(PACKAGE)


def describe(err: BaseException) -> str:
    """One line for the manifest: the error, and where outside the harness it was raised."""
    first = (str(err).splitlines() or [""])[0][:240]
    text = first if is_component_failure(err) else f"{type(err).__name__}: {first}"
    cause = err.__cause__ if is_component_failure(err) else err
    where = culprit(cause) if cause is not None else None
    return text if where is None or where[0].is_relative_to(PACKAGE) else f"{text} (raised in {where[0]}:{where[1]})"
