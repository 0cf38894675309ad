"""Code identity: the code that computed a number is part of the number's identity.

A checkpoint key, a cell id and a cached dataset's key include the identity of the code that
makes them, so an edit to that code recomputes them (never reuses them) and a rerun into the same
directory replaces their old rows (robustbench_lfm.store.ResultStore.superseded).

Granularity, chosen so that an edit recomputes what it can change and nothing else:

* a *component* (a registered model, backbone, regularizer, training method, attack, objective,
  dataset) is its registering module and every module of this project it imports, transitively,
  found statically (`import` statements anywhere in the file, so a function-local import counts);
* the *glue* that trains and scores a cell (`TRAINING`, `SCORING`) is hashed module by module:
  these import nearly everything (the CLI, the report), so their own files stand for them and the
  components they call bring their own closure;
* a module counts by its syntax tree without docstrings: a comment, a docstring or a change of
  layout changes nothing; the report, the CLI's help and the docs are in no closure, so editing
  them changes nothing either;
* a plugin counts whole: every module of a package plugin (or an installed entry point's
  package), and a file plugin with the modules of its folder it imports, transitively.

Code identity decides what is reused and is recorded on every row (CSV `code`); it is not part
of the regression gate's key, which exists to compare one version of the code with another.
A file is parsed again only when its size or modification time changed; a built-in component's
closure is found once per process (the code a process runs does not change under it). Torch-free.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path

PACKAGE = "robustbench_lfm"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the folder holding robustbench_lfm/

# The glue of a training run and of a cell's evaluation, hashed as files (module docstring).
TRAINING = (f"{PACKAGE}.training", f"{PACKAGE}.pretrained", f"{PACKAGE}.group")
SCORING = (
    f"{PACKAGE}.group", f"{PACKAGE}.attacking", f"{PACKAGE}.metrics", f"{PACKAGE}.rerank", f"{PACKAGE}.precision",
    f"{PACKAGE}.checkpoints", f"{PACKAGE}.evaluation",
)  # fmt: skip

Resolver = Callable[[str], Path | None]


def normalised(path: Path) -> str:
    """A module's syntax tree without docstrings, as text (a file that does not parse: its bytes);
    read again when the file's size or modification time changed."""
    stat = path.stat()
    return _normalised(path, stat.st_mtime_ns, stat.st_size)


@functools.cache
def _normalised(path: Path, mtime_ns: int, size: int) -> str:
    source = path.read_bytes()
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return source.hex()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and _is_docstring(body[0]):
            node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]
    return ast.dump(tree, include_attributes=False)


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def package_resolver(root: Path, prefix: str = "") -> Resolver:
    """Module name -> its file under `root` (`a.b` -> root/a/b.py or root/a/b/__init__.py), None
    when it is not there or does not start with `prefix`."""

    def resolve(name: str) -> Path | None:
        if prefix and name != prefix and not name.startswith(prefix + "."):
            return None
        relative = Path(*name.split("."))
        for candidate in (root / relative.with_suffix(".py"), root / relative / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None

    return resolve


def imported(path: Path, module: str, resolve: Resolver) -> set[str]:
    """The modules `path` (the module `module`) imports, anywhere in it, that `resolve` finds."""
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError):
        return set()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= imported_by(node, path, module, resolve)
    return found


def imported_by(node: ast.Import | ast.ImportFrom, path: Path, module: str, resolve: Resolver) -> set[str]:
    """The modules one import statement of `path` (the module `module`) names that `resolve`
    finds: `from a import b` names the module a.b when there is one, else a."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if resolve(alias.name) is not None}
    base = node.module or ""
    if node.level:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        parts = package.split(".") if package else []
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join([*parts, base] if base else parts)
    names = {f"{base}.{alias.name}" if resolve(f"{base}.{alias.name}") else base for alias in node.names}
    return {n for n in names if resolve(n) is not None}


def closure(modules: Iterable[str], resolve: Resolver) -> dict[str, Path]:
    """`modules` and every module they import, transitively, that `resolve` finds."""
    found: dict[str, Path] = {}
    todo = [m for m in modules if resolve(m) is not None]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        path = resolve(name)
        assert path is not None
        found[name] = path
        todo += imported(path, name, resolve)
    return found


def digest(files: dict[str, Path]) -> str:
    """16 hex digits of the sha256 over the named modules' normalised trees."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}\0{normalised(files[name])}\0".encode())
    return h.hexdigest()[:16]


BUILT_IN = package_resolver(PACKAGE_ROOT, PACKAGE)


@functools.cache
def _component(module: str) -> tuple[tuple[str, Path], ...]:
    return tuple(sorted(closure([module], BUILT_IN).items()))


def built_in(components: Iterable[str], glue: Iterable[str] = ()) -> dict[str, Path]:
    """The files of this project that `components` (their closures) and `glue` (as files) are."""
    files: dict[str, Path] = {}
    for module in components:
        files.update(_component(module))
    for module in glue:
        path = BUILT_IN(module)
        if path is not None:
            files[module] = path
    return files


def file_plugin(path: Path) -> dict[str, Path]:
    """A file plugin and the modules of its folder it imports, transitively."""
    resolve = package_resolver(path.parent)
    own = {path.stem: path}
    for name, file in closure(imported(path, path.stem, resolve), resolve).items():
        own[name] = file
    return own


def package_plugin(module: str, file: str) -> dict[str, Path]:
    """Every module of the package a module plugin (or entry point) belongs to: its top-level
    package's folder, or the module's own file when it is a single module."""
    path = Path(file)
    depth = module.count(".") + (1 if path.name == "__init__.py" else 0)
    top = path.parents[depth - 1] if depth else path
    if top.is_dir():
        return {str(p.relative_to(top.parent)): p for p in sorted(top.rglob("*.py"))}
    return {module: path}


def with_project_imports(files: dict[str, Path]) -> dict[str, Path]:
    """Outside code's `files` and the closures of this project's modules they import (a plugin
    subclassing PGD counts PGD's code too)."""
    components: set[str] = set()
    for name, path in files.items():
        components |= imported(path, name, BUILT_IN)
    return {**files, **built_in(sorted(components))}
