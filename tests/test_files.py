"""robustbench_lfm.files: atomic writes and the one sidecar format of cached artefacts."""

from __future__ import annotations

import json
import multiprocessing

import pytest

from robustbench_lfm.files import (
    UnverifiedFileError,
    atomic_path,
    atomic_write,
    read_sidecar,
    sidecar_path,
    write_verified,
)
from robustbench_lfm.hashing import file_sha256


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "table.csv"
    atomic_write(target, "old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half a ro")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_temp_names_are_unique_per_call(tmp_path):
    names = set()
    for _ in range(20):
        with atomic_path(tmp_path / "x.safetensors") as tmp:
            names.add(tmp.name)
            tmp.write_bytes(b"1")
    assert len(names) == 20 and all(n.endswith(".safetensors") for n in names)  # writers infer the format


def _writer(path: str, text: str) -> None:
    from pathlib import Path

    for _ in range(50):
        atomic_write(Path(path), text)


def test_two_processes_writing_one_file_never_leave_a_mix(tmp_path):
    target = tmp_path / "shared.txt"
    texts = ["a" * 100_000, "b" * 100_000]
    procs = [multiprocessing.get_context("spawn").Process(target=_writer, args=(str(target), t)) for t in texts]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs) and target.read_text() in texts
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.txt"]


def test_a_verified_artefact_round_trips_and_a_changed_one_is_refused(tmp_path):
    art = tmp_path / "weights.safetensors"
    sha = write_verified(art, lambda tmp: tmp.write_bytes(b"tensor bytes"), {"model": "lfm"})
    meta = read_sidecar(art)
    assert meta is not None and meta["sha256"] == sha and meta["model"] == "lfm"
    art.write_bytes(b"tensor byteZ")
    with pytest.raises(UnverifiedFileError, match="sha256"):
        read_sidecar(art)


@pytest.mark.parametrize("sidecar", [None, "", "[]", '{"sha256": "x"}', '{"format": 2, "sha256": "SHA"}', "not json"])
def test_an_artefact_without_a_valid_sidecar_is_refused(tmp_path, sidecar):
    art = tmp_path / "images.safetensors"
    write_verified(art, lambda tmp: tmp.write_bytes(b"x"), {})
    if sidecar is None:
        sidecar_path(art).unlink()  # a kill between the artefact's rename and its sidecar's
    else:
        sidecar_path(art).write_text(sidecar.replace("SHA", file_sha256(art)))  # a later format: not this one's
    with pytest.raises(UnverifiedFileError):
        read_sidecar(art)
    assert read_sidecar(tmp_path / "absent.safetensors") is None


def test_the_sidecar_records_its_format_and_an_older_sidecar_without_one_still_verifies(tmp_path):
    art = tmp_path / "d.safetensors"
    write_verified(art, lambda tmp: tmp.write_bytes(b"x"), {"dataset": "digits"})
    assert json.loads(sidecar_path(art).read_text())["format"] == 1
    sidecar_path(art).write_text(json.dumps({"sha256": file_sha256(art), "key": "d"}))  # a checkpoint of 0.1.0
    assert read_sidecar(art) is not None


@pytest.mark.parametrize("kind", ["checkpoints", "datasets", "adversarial"])
def test_an_artefact_copied_under_another_key_is_refused(tmp_path, kind):
    first, second = tmp_path / kind / "aaaa.safetensors", tmp_path / kind / "bbbb.safetensors"
    write_verified(first, lambda tmp: tmp.write_bytes(b"weights of dropout"), {})
    for source, target in ((first, second), (sidecar_path(first), sidecar_path(second))):
        target.write_bytes(source.read_bytes())
    assert read_sidecar(first) is not None
    with pytest.raises(UnverifiedFileError, match="was written for key aaaa, not bbbb"):
        read_sidecar(second)
    sidecar_path(second).write_text(json.dumps({"format": 1, "sha256": file_sha256(second)}))
    with pytest.raises(UnverifiedFileError, match="records no key"):
        read_sidecar(second)
    assert read_sidecar(second, bound=False) is not None  # a user's checkpoint file may have any name


def test_content_keys_come_from_canonical_json_never_from_repr():
    from pathlib import Path

    from robustbench_lfm.hashing import canonical_json, content_hash

    with pytest.raises(TypeError, match="no canonical JSON form"):
        content_hash({"attack": object()})  # its repr holds a memory address: never a key
    with pytest.raises(ValueError):
        canonical_json({"eps": float("nan")})
    assert canonical_json({"b": (1, 2), "a": Path("x/y"), "s": {3, 1}}) == '{"a":"x/y","b":[1,2],"s":[1,3]}'
