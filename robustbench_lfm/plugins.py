"""Plugins: outside code that registers regularizers, models, backbones, attacks, datasets or metrics.

A plugin is a Python file (`--plugin my_regularizers.py`), an importable module (`--plugin
my_package.lfm_plugin`) or an installed package's entry point in the group `lfm_bench.plugins`
(loaded by every `run` and `ls`). Importing it registers its entries with the project's public
decorators (`models.registry.register_regularizer`, `register_model`, `register_backbone`,
`attacks.registry.register_attack`, `robustbench_lfm.datasets.register_dataset`,
`robustbench_lfm.metric_table.register_metric`); nothing else is needed.

Each loaded plugin is recorded (`Plugin`: its file, its sha256, its package version) in the
manifest. The code of an entry is part of the identity of what it makes: a checkpoint key or cell
id whose model, data or attack comes from a plugin includes the identity of all that plugin's code
(`code_of`: a package's every module, a file's imported modules from its folder), so editing it
retrains and recomputes exactly those cells (the plugin is the unit: any edit counts for every
entry it registers).
Loading the same plugin twice (a worker process, a resumed run) is a no-op; in one process, a
changed file of the same name replaces the entries of the version loaded before.
A plugin that fails to import, or registers a name that exists, is a `PluginError` naming
it and both sources. Torch-free itself (a plugin imports what it needs).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from robustbench_lfm import code_identity
from robustbench_lfm.hashing import file_sha256
from robustbench_lfm.parsing import SpecError

ENTRY_POINT_GROUP = "lfm_bench.plugins"
FILE_PACKAGE = "lfm_bench_plugins"  # file plugins are imported as lfm_bench_plugins.<stem>_<sha8>


class PluginError(SpecError):
    """A plugin could not be loaded; the message names it, the cause and the fix."""


@dataclass(frozen=True)
class Plugin:
    """One loaded plugin, as the manifest records it.

    Attributes:
        ref: what the user gave (a file path or a module name) or the entry point's name.
        kind: "file", "module" or "entry-point".
        module: the imported module's name; entries it (or its package) registers have it as source.
        file: the module's file ("" when it has none).
        sha256: the file's sha256 ("" when it has none).
        version: the installed distribution's version ("" for a plain file).
        code: the identity of all its code (robustbench_lfm.code_identity: a package's modules, a
            file's imported modules from its folder, and what they import of this project).
    """

    ref: str
    kind: str
    module: str
    file: str = ""
    sha256: str = ""
    version: str = ""
    code: str = ""

    def describe(self) -> str:
        """`my_regs.py (sha256 3fa91c2e)` or `my_package 1.2 (entry point lfm)`."""
        if self.kind == "file":
            return f"plugin {self.file} (sha256 {self.sha256[:8]})"
        version = f" {self.version}" if self.version else ""
        how = f"entry point {self.ref}" if self.kind == "entry-point" else f"sha256 {self.sha256[:8]}"
        return f"plugin {self.module}{version} ({how})"


_LOADED: dict[str, Plugin] = {}  # module name -> plugin, this process


def load_plugins(refs: Sequence[str] = (), entry_points: bool = True) -> tuple[Plugin, ...]:
    """Load each plugin of `refs` (files or module names; comma lists allowed) and, unless
    `entry_points` is False, every installed `lfm_bench.plugins` entry point; idempotent."""
    names = [r.strip() for ref in refs for r in str(ref).split(",") if r.strip()]
    loaded = [load_plugin(ref) for ref in names]
    if entry_points:
        loaded += load_entry_points()
    return tuple(dict.fromkeys(loaded))


def load_plugin(ref: str) -> Plugin:
    """Import one plugin file or module (PluginError when it fails or clashes)."""
    if ref.endswith(".py") or "/" in ref or Path(ref).is_file():
        return _load_file(Path(ref).expanduser().resolve(), ref)
    try:
        module = importlib.import_module(ref)
    except ModuleNotFoundError as err:
        if err.name is not None and ref.startswith(err.name):
            raise PluginError(f"plugin {ref!r} is not a file or an importable module; give a .py file or "
                              "install the package (pip install -e ...)") from None  # fmt: skip
        raise _failed(ref, err) from None
    except Exception as err:  # the plugin's own code failed: one line naming it
        raise _failed(ref, err) from None
    file = str(getattr(module, "__file__", "") or "")
    code = _code(code_identity.package_plugin(module.__name__, file)) if file else ""
    plugin = Plugin(ref, "module", module.__name__, file, _sha256(file), _version(module.__name__), code)
    _LOADED[plugin.module] = plugin
    return plugin


def _load_file(path: Path, ref: str) -> Plugin:
    if not path.is_file():
        raise PluginError(f"plugin {ref!r}: {path} is not a file; give a .py file or an importable module")
    sha = _sha256(str(path))
    name = f"{FILE_PACKAGE}.{_identifier(path.stem)}_{sha[:8]}"
    if name in _LOADED:  # already imported (this file, or a copy of it: the same code); the latest path stands
        _LOADED[name] = dataclasses.replace(_LOADED[name], ref=ref, file=str(path))
        return _LOADED[name]
    for old in [p for p in _LOADED.values() if p.kind == "file" and Path(p.file).stem == path.stem]:
        unload(old)  # another version of this file (edited, or copied elsewhere) replaces it
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin {ref!r}: {path} cannot be imported as Python; give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise _failed(ref, err) from None
    plugin = Plugin(ref, "file", name, str(path), sha, code=_code(code_identity.file_plugin(path)))
    _LOADED[name] = plugin
    return plugin


# Every registry a plugin can add to, as (module, attribute); those not imported yet hold nothing of it.
REGISTRIES = (
    ("robustbench_lfm.models.registry", "MODELS"), ("robustbench_lfm.models.registry", "BACKBONES"),
    ("robustbench_lfm.models.registry", "REGULARIZERS"), ("robustbench_lfm.models.registry", "METHODS"),
    ("robustbench_lfm.attacks.registry", "ATTACKS"), ("robustbench_lfm.attacks.objectives", "OBJECTIVES"),
    ("robustbench_lfm.datasets", "DATASETS"), ("robustbench_lfm.metric_table", "METRICS"),
)  # fmt: skip


def unload(plugin: Plugin) -> None:
    """Remove every entry `plugin` registered, and forget it (a newer version of it, tests, notebooks)."""
    for module_name, attribute in REGISTRIES:
        registry = getattr(sys.modules.get(module_name), attribute, None)
        if registry is None:
            continue
        for entry in [n for n in registry.names() if registry.source(n) == plugin.module]:
            registry.remove(entry)
    _LOADED.pop(plugin.module, None)
    sys.modules.pop(plugin.module, None)


_ENTRY_POINTS: list[Plugin] | None = None  # the group is scanned once per process


def load_entry_points() -> list[Plugin]:
    """Every installed plugin of the `lfm_bench.plugins` group (a module, or a callable to call)."""
    global _ENTRY_POINTS
    if _ENTRY_POINTS is None:
        _ENTRY_POINTS = _scan_entry_points()
    return list(_ENTRY_POINTS)


@functools.cache
def installed_entry_points() -> tuple[metadata.EntryPoint, ...]:
    """The installed entry points of the `lfm_bench.plugins` group, read once per process (the scan
    reads every installed package's metadata, about 9 ms); `load_entry_points` loads them, and
    robustbench_lfm/names.py asks only whether there are any, before torch."""
    return tuple(metadata.entry_points(group=ENTRY_POINT_GROUP))


def _scan_entry_points() -> list[Plugin]:
    out = []
    for ep in installed_entry_points():
        module_name = ep.value.split(":")[0].strip()
        if module_name in _LOADED:
            out.append(_LOADED[module_name])
            continue
        try:
            target = ep.load()
            if callable(target) and not isinstance(target, type(sys)):
                target()
        except Exception as err:
            raise _failed(f"entry point {ep.name} ({ep.value})", err) from None
        module = sys.modules.get(module_name)
        file = str(getattr(module, "__file__", "") or "")
        version = ep.dist.version if ep.dist is not None else _version(module_name)
        code = _code(code_identity.package_plugin(module_name, file)) if file else ""
        plugin = Plugin(ep.name, "entry-point", module_name, file, _sha256(file), version, code)
        _LOADED[module_name] = plugin
        out.append(plugin)
    return out


def loaded() -> tuple[Plugin, ...]:
    """The plugins loaded in this process, in load order."""
    return tuple(_LOADED.values())


def plugin_of(source: str) -> Plugin | None:
    """The plugin that registered an entry whose source module is `source` (None: built in)."""
    for plugin in _LOADED.values():
        package = plugin.module.split(".")[0]  # a module plugin's package: its submodules register too
        if source == plugin.module or (plugin.kind != "file" and source.startswith(package + ".")):
            return plugin
    return None


def code_of(sources: Iterable[str], glue: Iterable[str] = ()) -> str:
    """Code identity (16 hex digits) of what the registering modules `sources` and the glue modules
    `glue` compute: the built-in ones' closures (robustbench_lfm.code_identity) and the whole
    code of each plugin among them."""
    origin = {s: plugin_of(s) for s in sources}
    found = {p for p in origin.values() if p is not None}
    own = tuple(sorted(s for s, p in origin.items() if p is None))
    text = _built_in_code(own, tuple(glue)) + "".join(f"|{p.module}:{p.code}:{p.version}" for p in sorted(
        found, key=lambda p: p.module))  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.cache
def _built_in_code(sources: tuple[str, ...], glue: tuple[str, ...]) -> str:
    """The digest of this project's code behind `sources` and `glue`, once per process (the code a
    process runs does not change under it)."""
    return code_identity.digest(code_identity.built_in(sources, glue))


def _code(files: dict[str, Path]) -> str:
    """A plugin's code identity: its files, and the closures of this project's modules they import."""
    return code_identity.digest(code_identity.with_project_imports(files))


def describe_source(source: str) -> str:
    """Where an entry comes from, for `ls`: the plugin's file or package, else its module."""
    plugin = plugin_of(source)
    return plugin.describe() if plugin is not None else source


def _failed(ref: str, err: Exception) -> PluginError:
    first = (str(err).splitlines() or [""])[0][:240]
    return PluginError(f"plugin {ref} failed to load ({type(err).__name__}: {first}); fix it or leave it out")


def _sha256(file: str) -> str:
    return file_sha256(Path(file)) if file and Path(file).is_file() else ""


def _version(module: str) -> str:
    top = module.split(".")[0]
    for dist in metadata.packages_distributions().get(top, []):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return ""


def _identifier(stem: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in stem) or "plugin"
