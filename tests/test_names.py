"""Names checked before torch (robustbench_lfm/names.py): a typo is refused from the names an earlier
command remembered for this code, without importing torch; anything it cannot vouch for goes to
the full check."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from robustbench_lfm import names, plugins
from robustbench_lfm.parsing import SpecError

ROOT = Path(__file__).resolve().parents[1]

TYPO = textwrap.dedent(
    """
    import sys
    from robustbench_lfm.cli import main
    try:
        main.main(args=sys.argv[1:], standalone_mode=True)
    except SystemExit as exit:
        print("torch imported:", "torch" in sys.modules, "exit:", exit.code)
    """
)


def _typo(cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LFM_BENCH_CACHE": str(cache)}
    argv = [sys.executable, "-c", TYPO, "run", *args, "--out", str(cache.parent / "out")]
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)


def _cli(cache: Path, *args: str) -> subprocess.CompletedProcess:
    """`lfm-bench ARGS` in a process of its own with `cache` as the cache; its stdout ends with a line
    saying whether torch was imported and the exit status."""
    env = {**os.environ, "LFM_BENCH_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-c", TYPO, *args], capture_output=True, text=True, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def registries(tmp_path_factory) -> tuple[Path, str]:
    """A cache directory whose names `lfm-bench ls --format json` remembered, and what it printed."""
    cache = tmp_path_factory.mktemp("names") / "cache"
    done = _cli(cache, "ls", "--format", "json")
    assert done.stdout.endswith("torch imported: True exit: 0\n"), done.stderr  # it loaded the registries
    assert len(list(cache.glob("names-*.json"))) == 1
    return cache, done.stdout.rsplit("torch imported:", 1)[0]


@pytest.fixture(scope="module")
def cache(registries) -> Path:
    return registries[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--models", "lfmm"], "unknown model 'lfmm'; did you mean 'lfm'"),
     (["--models", "LFM"], "unknown model 'LFM'; did you mean 'lfm'"),
     (["--models", "rcm-up+pgd-att"], "unknown model 'pgd-att'; did you mean 'pgd-at'"),
     (["--attacks", "pgd,smaa"], "unknown attack 'smaa'; did you mean 'sma'"),
     (["--attacks", "pgd:stepz=3"], "pgd has no option(s) stepz (it takes: backend,"),
     (["--models", "lfm:pp=3"], "model 'lfm' has no parameter(s) pp (it takes: area,"),
     (["--dataset", "synthreidd"], "unknown dataset 'synthreidd'; did you mean 'synthreid'")],
)  # fmt: skip
def test_a_typo_is_one_line_and_exit_2_before_torch(cache, args, message):
    done = _typo(cache, *args)
    assert "torch imported: False exit: 2" in done.stdout, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("lfm-bench: error: ") and message in line


def test_what_the_names_cannot_vouch_for_goes_to_the_full_check(cache, tmp_path):
    cache = Path(shutil.copytree(cache, tmp_path / "cache"))  # torn below: the module's stays whole
    (tmp_path / "extra.py").write_text(
        "from robustbench_lfm.lfm_registry import Registry\n"  # a plugin file: it may register anything
    )
    plugin = _typo(cache, "--models", "lfmm", "--plugin", str(tmp_path / "extra.py"))
    assert "torch imported: True exit: 2" in plugin.stdout and "unknown model 'lfmm'" in plugin.stderr
    (remembered,) = cache.glob("names-*.json")
    remembered.write_text('{"models": ')  # torn: ignored, never trusted
    assert names.remembered(cache) is None
    torn = _typo(cache, "--models", "lfmm")
    assert "torch imported: True exit: 2" in torn.stdout and "unknown model 'lfmm'" in torn.stderr


def test_names_are_keyed_by_the_installed_code(tmp_path, monkeypatch):
    monkeypatch.setattr(names, "code_digest", lambda: "a" * 16)
    (tmp_path / f"names-{'a' * 16}.json").write_text(json.dumps({"models": {"m": []}, "attacks": {}, "datasets": []}))
    with pytest.raises(SpecError, match="unknown model 'lfm'"):
        names.precheck({"models": "lfm"}, tmp_path)
    monkeypatch.setattr(names, "code_digest", lambda: "b" * 16)  # edited code: those names say nothing
    names.precheck({"models": "lfm"}, tmp_path)


def test_the_code_digest_follows_an_edit_of_any_package_file(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    module = tmp_path / "sub" / "attack.py"
    module.write_text("x = 1\n")
    monkeypatch.setattr(names, "PACKAGE", tmp_path)
    first = names.code_digest()
    assert names.code_digest() == first
    module.write_text("x = 2\n")  # same size, later mtime
    os.utime(module, ns=(module.stat().st_atime_ns, module.stat().st_mtime_ns + 1_000_000))
    assert names.code_digest() != first


def test_ls_prints_what_it_remembered_without_torch_as_the_registries_print_it(registries, tmp_path):
    cache, listed = registries
    again = {form: _cli(cache, "ls", *args) for form, args in
             {"json": ["--format", "json"], "text": [], "quiet": ["-q"]}.items()}  # fmt: skip
    assert all(done.stdout.endswith("torch imported: False exit: 0\n") for done in again.values())
    printed = {form: done.stdout.rsplit("torch imported:", 1)[0] for form, done in again.items()}
    assert printed["json"] == listed
    entries = json.loads(listed)
    assert printed["quiet"].splitlines() == [f"{kind.rstrip('s')} {name}" for kind in entries for name in entries[kind]]
    (tmp_path / "none.py").write_text("# a plugin that registers nothing: ls loads the registries again\n")
    live = _cli(cache, "ls", "--plugin", str(tmp_path / "none.py"))
    assert live.stdout.endswith("torch imported: True exit: 0\n")
    assert (
        printed["text"] == live.stdout.rsplit("torch imported:", 1)[0] and "models (NAME:key=value" in printed["text"]
    )


def test_installed_plugin_packages_leave_names_and_ls_to_the_registries(cache, monkeypatch):
    """An installed entry point's code can change without a reinstall, and with it its names: with one
    installed, nothing remembered is read (a name it registers since is never refused as a typo)."""
    import importlib.metadata

    assert names.remembered(cache) is not None and names.remembered_listing(cache) is not None
    real = importlib.metadata.entry_points
    point = importlib.metadata.EntryPoint("mine", "my_package.plugin", "lfm_bench.plugins")
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: [point] if kw.get("group") == "lfm_bench.plugins" else real(**kw))  # fmt: skip
    # a process that starts after the install: its own scan (the group is read once per process)
    monkeypatch.setattr(plugins, "installed_entry_points", functools.cache(plugins.installed_entry_points.__wrapped__))
    assert names.code_digest() is None
    assert names.remembered(cache) is None and names.remembered_listing(cache) is None
    names.precheck({"models": "a-model-my-package-registers"}, cache)  # left to the registries
    names.remember(cache)  # writes nothing it could not read back
    assert len(list(cache.glob("names-*.json"))) == 1


def test_a_command_that_imports_torch_freezes_what_is_alive_and_a_callers_objects_stay_collectable():
    """`startup.import_torch` (run, and ls loading the registries): in a process of its own, torch's
    objects leave the collector's full passes; where torch was imported before (this test process,
    a library user's program), nothing is frozen."""
    import gc

    from robustbench_lfm import startup

    script = "import gc; from robustbench_lfm import startup; startup.import_torch(); print(gc.get_freeze_count())"
    fresh = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    assert int(fresh.stdout) > 100_000, fresh.stdout  # torch's own objects among them
    before = gc.get_freeze_count()
    startup.import_torch()
    assert gc.get_freeze_count() == before
