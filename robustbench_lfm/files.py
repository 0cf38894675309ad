"""Every file lfm-bench writes: atomic replacement, and one sidecar format for cached artefacts.

`atomic_write` and `atomic_path` write to a temp file in the target's folder whose name is unique
to the process and the call (pid and random digits: workers share the cache), flush and fsync it,
then rename it over the target, so a reader or a crash sees the old file or the new one, never
half of one. A temp file left by a killed process is never read (it has another name).

Cached artefacts (checkpoints, decoded datasets, stored adversarial images) carry a JSON sidecar
beside them, `<stem>.json`: `{"format": 1, "sha256": <the file's sha256>, "key": <the key it was
written for: the file's name>, ...what made it}`; a pair copied or renamed under another key is
refused like a changed file (a checkpoint of `dropout` never answers for `plain`). The
artefact is renamed into place first and its sidecar last, so a crash between the two leaves a
file with no sidecar, which `read_sidecar` refuses like a changed or truncated one: what cannot
be verified is rebuilt, never trusted. A checkpoint sidecar written before the format was recorded
(lfm-bench 0.1.0: the same layout, no `format` key) counts as format 1. Reads no torch.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from robustbench_lfm.hashing import file_sha256

SIDECAR_FORMAT = 1


class UnverifiedFileError(ValueError):
    """A cached artefact whose sidecar is missing, unreadable or names another sha256."""


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")


_TEMP = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8}\.tmp(\.[^.]*)?$")


def remove_stale_temps(folder: Path) -> list[Path]:
    """Remove the temp files in `folder` (not below it) that a process that no longer exists left
    (killed between its temp write and its rename); a live writer's are kept. Returns the removed."""
    removed = []
    for path in folder.glob(".*.tmp*") if folder.is_dir() else ():
        match = _TEMP.match(path.name)
        if match and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temp path for a writer that needs a file name (safetensors, matplotlib); on a clean exit
    the file is fsynced and renamed over `path`, on an error removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Replace `path` by `data` (text is written as UTF-8, line ends untouched) at once."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def default_cache_dir() -> Path:
    """The cache folder when none is given: $LFM_BENCH_CACHE, else ~/.cache/lfm-bench (read at
    each call, so a test or a script that sets the variable is obeyed)."""
    return Path(os.environ.get("LFM_BENCH_CACHE") or Path.home() / ".cache" / "lfm-bench")


def check_writable(path: Path, create: bool = True) -> None:
    """Create the folder `path` if needed and prove a file can be written there (OSError otherwise).
    With `create` False, a folder that does not exist yet is left uncreated: its nearest existing
    ancestor must be a folder this process may create it in (a dry run leaves no folder behind).
    A file at `path` is NotADirectoryError, not the "File exists" mkdir would say."""
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
    if not create and not path.exists():
        ancestor = next(p for p in path.absolute().parents if p.exists())  # the root exists
        if not ancestor.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(ancestor))
        if not os.access(ancestor, os.W_OK | os.X_OK):  # EROFS and EACCES, as mkdir would meet them
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(ancestor))
        return
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".write-test-{os.getpid()}-{secrets.token_hex(4)}"
    probe.write_text("")
    probe.unlink()


def sidecar_path(path: Path) -> Path:
    """Where the sidecar of the artefact `path` lives: `<stem>.json` beside it."""
    return path.with_suffix(".json")


def write_verified(path: Path, write: Callable[[Path], None], meta: dict[str, Any]) -> str:
    """Write an artefact through `write(temp_path)`, then its sidecar; returns the file's sha256."""
    with atomic_path(path) as tmp:
        write(tmp)
        sha = file_sha256(tmp)
    record = {**meta, "format": SIDECAR_FORMAT, "sha256": sha, "key": path.stem}
    atomic_write(sidecar_path(path), json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return sha


def read_sidecar(path: Path, bound: bool = True) -> dict[str, Any] | None:
    """The sidecar of the artefact `path` once its sha256 matches the file (and, when `bound`, once
    it was written for this file's key, its name); None when the artefact does not exist.

    Raises:
        UnverifiedFileError: the sidecar is missing, unreadable, of another format, names another
            sha256 (the file changed or was cut) or, when `bound`, another key (the pair was copied
            or renamed from another entry); the message says which.
    """
    if not path.exists():
        return None
    sidecar = sidecar_path(path)
    try:
        meta = json.loads(sidecar.read_text())
    except FileNotFoundError:
        raise UnverifiedFileError(f"{path} has no sidecar {sidecar.name}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        meta = None
    # a sidecar written before the format was recorded has the same layout: format 1
    if not isinstance(meta, dict) or meta.get("format", 1) != SIDECAR_FORMAT or not isinstance(meta.get("sha256"), str):
        raise UnverifiedFileError(f"the sidecar {sidecar} is unreadable or of another format")
    if bound and meta.get("key") != path.stem:
        written = meta.get("key")
        what = f"was written for key {written}" if isinstance(written, str) else "records no key (an older lfm-bench)"
        raise UnverifiedFileError(f"{path} {what}, not {path.stem} (copied or renamed from another entry)")
    if file_sha256(path) != meta["sha256"]:
        raise UnverifiedFileError(f"{path} fails its sha256 check (the file changed or was cut)")
    return meta
