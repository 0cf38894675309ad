"""Names checked before torch: a typo in a model, attack or dataset name (or an option a model or
attack does not take) costs one line and exit 2 in a fraction of a second, not an `import torch`;
and `lfm-bench ls` prints in as little.

The registries are filled by importing the model and attack libraries (torch). So what they hold
is remembered in the cache directory (`names-<digest>.json`: the names, and the whole listing
`ls` prints) by every command that loaded them (`run`, `ls`), keyed by a digest of the installed
code: the size and modification time of every file of the package. A later `run` reads them
back, torch-free, and refuses an unknown name or option at once (`precheck`), with the same
message the registries give; a later `ls` prints the remembered listing (`remembered_listing`).
What this cannot vouch for, it leaves to the registries: no remembered names for this code (a
fresh install, an edit), `--plugin` code, or installed `lfm_bench.plugins` entry points (their
code can change without a reinstall, and with it the names they register). Values are checked
where they are parsed, after torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from robustbench_lfm.lfm_registry import did_you_mean
from robustbench_lfm.parsing import SpecError, parse_named, split_list

PACKAGE = Path(__file__).resolve().parent


def code_digest() -> str | None:
    """16 hex digits naming the installed code, each package file's path, size and mtime (an edit
    or an install changes it); None when `lfm_bench.plugins` entry points are installed: their
    code may change without a reinstall, so no digest can vouch for the names they register."""
    from robustbench_lfm.plugins import installed_entry_points

    if installed_entry_points():
        return None
    digest = hashlib.sha256()
    for path in sorted(p for suffix in ("*.py", "*.toml") for p in PACKAGE.rglob(suffix)):
        stat = path.stat()
        digest.update(f"{path.relative_to(PACKAGE)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _path(cache_dir: Path, digest: str) -> Path:
    return cache_dir / f"names-{digest}.json"


def remember(cache_dir: Path, listing: dict[str, Any] | None = None) -> None:
    """Write the built-in registries' names (and each model's parameters and attack's options) and
    the listing `ls` prints for this code into `cache_dir`; call with the registries loaded and no
    --plugin code among them (`listing`: their `registry_listing()`, where the caller made it).
    Best effort: a cache that cannot take the file costs only the fast check and the fast `ls`."""
    from robustbench_lfm.listing import registry_listing, rendered

    digest = code_digest()
    if digest is None or _listing(_read(cache_dir, digest)) is not None:  # nothing to vouch for, or there already
        return
    listing = registry_listing() if listing is None else listing
    names = {
        "models": {n: sorted(e["parameters"]) for n, e in listing["models"].items()},
        "attacks": {n: sorted(e["parameters"]) for n, e in listing["attacks"].items()},
        "datasets": sorted(listing["datasets"]),
        "ls": rendered(listing),  # what `ls` prints in each form, as the registries made it
    }
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        for old in cache_dir.glob("names-*.json"):  # another version's: never read again
            if old.name != _path(cache_dir, digest).name:
                old.unlink(missing_ok=True)
        from robustbench_lfm.files import atomic_write

        atomic_write(_path(cache_dir, digest), json.dumps(names, sort_keys=True))
    except OSError:
        pass


def remembered(cache_dir: Path) -> dict[str, Any] | None:
    """The names remembered for this code, or None (none yet, unreadable, or plugins installed)."""
    digest = code_digest()
    return None if digest is None else _read(cache_dir, digest)


def remembered_listing(cache_dir: Path) -> dict[str, str] | None:
    """What `ls` printed for this code in each form (`listing.rendered`), or None: nothing
    remembered, or a file from before the listing was remembered too."""
    return _listing(remembered(cache_dir))


def _read(cache_dir: Path, digest: str) -> dict[str, Any] | None:
    """The names file of code `digest`, or None (missing, unreadable or not of its shape)."""
    try:
        names = json.loads(_path(cache_dir, digest).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    ok = isinstance(names, dict) and all(isinstance(names.get(k), dict) for k in ("models", "attacks"))
    return names if ok and isinstance(names.get("datasets"), list) else None


def _listing(names: dict[str, Any] | None) -> dict[str, str] | None:
    """The `ls` forms a names file holds, or None."""
    from robustbench_lfm.listing import FORMS

    forms = names.get("ls") if names is not None else None
    if not isinstance(forms, dict) or not all(isinstance(forms.get(f), str) for f in FORMS):
        return None
    return forms


def precheck(opts: dict[str, Any], cache_dir: Path) -> None:
    """Refuse an unknown model, attack or dataset name, or a model parameter or attack option its
    entry does not take (SpecError, the registries' message), from the remembered names; nothing
    when there are none for this code or --plugin code may register more."""
    if opts.get("plugins"):
        return
    names = remembered(cache_dir)
    if names is None:
        return
    for text in split_list(str(opts.get("models") or "")):
        if text.startswith("ckpt:"):
            continue
        for part in text.split("+"):
            _check(part, "model", names["models"], "parameter(s)")
    for item in split_list(str(opts.get("attacks") or "")):
        _check(item, "attack", names["attacks"], "option(s)")
    for key in ("dataset", "test_dataset"):
        if opts.get(key):
            name = str(opts[key]).split(":", 1)[0]
            if name not in names["datasets"]:
                raise SpecError(did_you_mean("dataset", name, names["datasets"]))


def _check(item: str, kind: str, known: dict[str, list[str]], what: str) -> None:
    """One `name:key=value,...` item against the remembered entries of its kind."""
    try:
        name, options = parse_named(item)
    except SpecError:
        return  # a malformed item: the full check says what is wrong with it
    if name not in known:
        raise SpecError(did_you_mean(kind, name, list(known)))
    unknown = sorted({k for k, _ in options} - set(known[name]) - {"backbone"})
    if unknown:  # worded as the registries word it
        entry = f"model {name!r}" if kind == "model" else name
        takes = ", ".join(known[name])
        raise SpecError(f"{kind} {item!r}: {entry} has no {what} {', '.join(unknown)} (it takes: {takes})")
