"""The run directories a board is built from, each read, verified and reduced to what a board shows.

A run directory is read as `lfm-bench report` reads it (robustbench_lfm.report.load_run:
results.csv checked against queries.csv, incomplete cells refused) and more strictly, because a
board merges runs: the manifest must parse, and every table must be the one its last sweep
recorded in manifest.json (an edited table, or one a killed sweep left ahead of its manifest, is
left out with its reason; never merged). Whatever fails is a `RunRefusedError` naming the directory and
the fix, which the board prints in one line and leaves out.

What a run contributes is a `RunRecord`: its headline-metric rows with their standard errors
(report.tables.cell_errors), its CMC curves, its sanity verdicts and its manifest. Records are
cached in the site (`.board/runs/<digest>.json`), keyed by the sha256 of every file a record is
made of and by the code that makes it (`loader_code`), so a rebuild after a new run reads and
verifies only that run. A cached record that cannot be read is made again, never trusted.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from robustbench_lfm import code_identity, columns
from robustbench_lfm import sanity as sanity_checks
from robustbench_lfm.files import atomic_write
from robustbench_lfm.identity import canonical
from robustbench_lfm.lock import writer_of

RUN_FILES = ("results.csv", "queries.csv", "cmc.csv", "members.csv", "sanity.csv", "manifest.json", "fingerprint.json")
RECORD_FORMAT = 2  # the layout of a cached record (bump when `RunRecord` changes)


class RunRefusedError(ValueError):
    """A run directory the board leaves out; the message names the directory, the cause and the fix."""


@dataclass(frozen=True)
class RunRecord:
    """What one run directory contributes to a board.

    Attributes:
        path: the directory, resolved.
        digest: sha256 (hex) of its files (`RUN_FILES`) and of the code that reads them.
        cells: one row per (cell, re-ranking mode, headline metric) with every results.csv column,
            `se`, `ci_low` and `ci_high` (fractions; report.tables.cell_errors).
        curves: the cmc.csv rows of its cells.
        sanity: sanity.csv (empty when the run has none).
        manifest: manifest.json as parsed.
        fingerprint: fingerprint.json as parsed ({} when absent).
    """

    path: Path
    digest: str
    cells: pd.DataFrame
    curves: pd.DataFrame
    sanity: pd.DataFrame
    manifest: dict[str, Any]
    fingerprint: dict[str, Any]


@functools.cache
def loader_code() -> str:
    """The code identity of what turns a run directory into a record (this module's closure: the
    report's reading, evidence and statistics)."""
    return code_identity.digest(code_identity.closure([__name__], code_identity.BUILT_IN))


def run_digest(run_dir: Path) -> str:
    """sha256 over the names and bytes of the run's files and the loader's code identity."""
    h = hashlib.sha256(f"{RECORD_FORMAT}\0{loader_code()}\0".encode())
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_file():
            h.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _json_file(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        missing = f"{path.parent} has no {path.name}; give the run directories `lfm-bench run` wrote"
        raise RunRefusedError(missing) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        why = f"{path} is unreadable ({type(err).__name__}); rerun the sweep that wrote {what}"
        raise RunRefusedError(why) from None
    if not isinstance(data, dict):
        raise RunRefusedError(f"{path} is not a JSON object; rerun the sweep that wrote {what}")
    return data


def _check_tables(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Refuse tables that are not the ones the last sweep recorded in manifest.json."""
    from robustbench_lfm.evidence import digests

    recorded = manifest.get("tables")
    if not isinstance(recorded, dict) or not recorded:
        return  # written before manifests recorded digests: the evidence check below still runs
    changed = [name for name, sha in digests(run_dir).items() if recorded.get(name, sha) != sha]
    if changed:
        raise RunRefusedError(
            f"{run_dir}: {', '.join(changed)} differ from the tables its last sweep recorded in manifest.json "
            "(edited after the run, or a sweep was killed before it finished); rerun the sweep command to finish it"
        )


def read_run(run_dir: Path, digest: str | None = None) -> RunRecord:
    """Read and verify one run directory (module docstring); `digest` is its `run_digest` when the
    caller has it. Raises RunRefusedError."""
    from robustbench_lfm.report import ReportError, load_run
    from robustbench_lfm.report.tables import cell_errors
    from robustbench_lfm.store import ResultStore, StoreError

    run_dir = run_dir.resolve()
    if not run_dir.is_dir():
        raise RunRefusedError(f"{run_dir} is not a directory; give the run directories `lfm-bench run` wrote")
    holder = writer_of(run_dir)
    if holder is not None:
        raise RunRefusedError(f"{run_dir} is being written by {holder}; build the board again when that sweep ends")
    digest = digest or run_digest(run_dir)
    manifest = _json_file(run_dir / "manifest.json", "this run directory")
    fingerprint = _json_file(run_dir / "fingerprint.json", "it") if (run_dir / "fingerprint.json").is_file() else {}
    _check_tables(run_dir, manifest)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the checks above refuse what load_run would only warn about
            df, queries, _ = load_run(run_dir)
        curves = ResultStore.cmc(run_dir / "cmc.csv").read()
        cells = cell_errors(df, queries).drop(columns=["row", "condition", "series"])
        checks = sanity_checks.read(run_dir / "sanity.csv")
    except (ReportError, StoreError) as err:
        raise RunRefusedError(str(err)) from None
    sanity = pd.DataFrame([asdict(c) for c in checks], columns=[f.name for f in fields(sanity_checks.Check)])
    keep = curves[curves["cell_id"].isin(cells["cell_id"])]
    # through the cache's text form here too: a fresh record and a cached one are the same frames
    cells, curves = _frame(_text(cells)), _frame(_text(keep))
    return RunRecord(run_dir, digest, cells, curves, _frame(_text(sanity.astype(str))), manifest, fingerprint)


SCHEMA_NUMBERS = (c.name for c in (*columns.RESULTS, *columns.CMC) if c.dtype in ("float", "int"))
NUMBERS = (*SCHEMA_NUMBERS, "se", "ci_low", "ci_high")


def _text(df: pd.DataFrame) -> str:
    """A frame as CSV text, every float at full precision (a rounded eps would make another condition)."""
    return df.to_csv(index=False)


def _frame(text: str) -> pd.DataFrame:
    """`_text`'s frame back: text columns as written, the schema's numbers as numbers, identity
    columns in their canonical dtypes (robustbench_lfm.identity.canonical)."""
    df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    for column in set(NUMBERS) & set(df.columns):
        df[column] = pd.to_numeric(df[column].replace("", "nan"), errors="coerce")
    return canonical(df)


def save_record(record: RunRecord, folder: Path) -> None:
    """Cache `record` as folder/<digest>.json."""
    data = {
        "format": RECORD_FORMAT,
        "path": str(record.path),
        "digest": record.digest,
        "cells": _text(record.cells),
        "curves": _text(record.curves),
        "sanity": _text(record.sanity),
        "manifest": record.manifest,
        "fingerprint": record.fingerprint,
    }
    atomic_write(folder / f"{record.digest}.json", json.dumps(data))


def cached_record(run_dir: Path, folder: Path, digest: str) -> RunRecord | None:
    """The cached record of `run_dir` as its files are now, or None (none cached, or unreadable)."""
    run_dir = run_dir.resolve()
    try:
        data = json.loads((folder / f"{digest}.json").read_text())
        if data.get("format") != RECORD_FORMAT or data.get("digest") != digest or data.get("path") != str(run_dir):
            return None
        return RunRecord(run_dir, digest, _frame(data["cells"]), _frame(data["curves"]), _frame(data["sanity"]),
                         dict(data["manifest"]), dict(data["fingerprint"]))  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_runs(run_dirs: list[Path], folder: Path) -> tuple[list[RunRecord], list[str], list[Path]]:
    """(records, one line per refused directory, the directories read afresh): each directory from the
    cache in `folder` when its files are unchanged, else read, verified and cached. A directory given
    twice counts once."""
    records: list[RunRecord] = []
    refused: list[str] = []
    fresh: list[Path] = []
    for run_dir in dict.fromkeys(p.resolve() for p in run_dirs):
        try:
            digest = run_digest(run_dir) if run_dir.is_dir() else None
            record = cached_record(run_dir, folder, digest) if digest else None
            if record is None:
                record = read_run(run_dir, digest)
                fresh.append(run_dir)
                save_record(record, folder)
        except RunRefusedError as err:
            refused.append(str(err))
            continue
        except OSError as err:
            refused.append(f"{run_dir} cannot be read ({err.strerror or err}); check its permissions")
            continue
        records.append(record)
    return records, refused, fresh
