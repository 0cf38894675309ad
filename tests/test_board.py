"""`lfm-bench board`: many real run directories side by side, as a static site; the site driven in
headless Chromium (Debian's /usr/bin/chromium through Playwright; no browser is downloaded).

The runs are real sweeps on a tiny synthreid and on digits: two seeds in two directories (one
model, two seeds), another recipe, a --test-dataset run, a corruption run, an older results table
from git history, and a plugin edited between two runs. The browser tests skip where Chromium or
Playwright is missing, unless LFM_BENCH_BROWSER=require (.ci/run sets it): there they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from robustbench_lfm import plugins
from robustbench_lfm.board import build_board
from robustbench_lfm.board.pages import NO_COMMAND
from robustbench_lfm.cli import main
from robustbench_lfm.evidence import digests
from robustbench_lfm.hashing import content_hash
from robustbench_lfm.lock import RunLock
from tests.test_threats import DATA

OLDER = Path(__file__).parent / "data" / "older"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plugin_example.py"
CHROMIUM = Path(os.environ.get("LFM_BENCH_CHROMIUM", "/usr/bin/chromium"))


def _run(out: Path, cache: Path, *args: str) -> None:
    base = ["run", "--dataset", DATA, "--epochs", "8", "--out", str(out), "--cache-dir", str(cache), "-q"]
    result = CliRunner().invoke(main, [*base, *args])
    assert result.exit_code == 0, result.output


def _board(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["board", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Real run directories, each made by `lfm-bench run` as a user types it."""
    root, cache = tmp_path_factory.mktemp("runs"), tmp_path_factory.mktemp("board-cache")
    out = {name: root / name for name in ("seed0", "seed1", "recipe", "domain", "corrupt", "digits")}
    pgd = ["--models", "plain,lfm", "--attacks", "pgd:steps=2,fgsm", "--eps", "4/255,8/255"]
    _run(out["seed0"], cache, *pgd, "--seeds", "0")
    _run(out["seed1"], cache, *pgd, "--seeds", "1")
    _run(out["recipe"], cache, *pgd, "--seeds", "0", "--epochs", "6")
    _run(out["domain"], cache, "--models", "plain,lfm", "--attacks", "pgd:steps=2", "--eps", "8/255",
         "--test-dataset", DATA + ",domain=b")  # fmt: skip
    _run(out["corrupt"], cache, "--models", "plain,lfm", "--attacks", "corrupt:type=gaussian_noise,corrupt:type=fog")
    _run(out["digits"], cache, "--dataset", "digits", "--train-fraction", "0.05", "--n-eval", "16",
         "--models", "plain,dropout", "--attacks", "pgd:steps=2", "--eps", "8/255", "--epochs", "1")  # fmt: skip
    return out


@pytest.fixture(scope="module")
def figure_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("figure-cache")


@pytest.fixture(autouse=True)
def shared_figures(isolated_cache, figure_cache, monkeypatch) -> Path:
    """One cache for the module's sites: a figure one test's site drew, another's copies (the store,
    robustbench_lfm/board FIGURE_STORE; `test_a_site_copies_the_figures_another_drew_and_draws_a_torn_one`
    checks the copies). Each test's cache apart, 56 of the 125 figures were drawn again."""
    monkeypatch.setenv("LFM_BENCH_CACHE", str(figure_cache))
    return figure_cache


def _table(index: str, title: str) -> str:
    """The HTML of the section whose title starts with `title`."""
    start = index.index(f"<h2>{title}")
    return index[start : index.index("</section>", start)]


def _rows(section: str) -> list[str]:
    return re.findall(r"<tr data-model='([^']*)'", section)


def test_a_board_per_setting_seeds_merged_and_the_reason_two_runs_stand_apart(runs, tmp_path):
    code, _, err = _board(*map(str, runs.values()), "--out", str(tmp_path / "site"))
    assert code == 0 and err == "", err
    index = (tmp_path / "site" / "index.html").read_text()
    titles = re.findall(r"<section class='board' id='b-\w+' data-attacks='[^']*'><h2>([^<]*)</h2>", index)
    tiny = DATA.split(":")[0]
    assert sum(t.startswith(f"{tiny}: L-inf 8/255 · recipe_key=") for t in titles) == 2  # two recipes, two boards
    assert f"{tiny}: L-inf 4/255" in {t.split(" · ")[0] for t in titles}
    assert any(t.startswith(f"{tiny} -&gt; {tiny}:domain=b: L-inf 8/255") for t in titles)  # --test-dataset
    assert f"{tiny}: common corruptions" in titles and "digits: L-inf 8/255" in titles
    assert len(titles) == 7  # 4/255 and 8/255 of two recipes, the domain, the corruptions, digits
    # seeds 0 and 1 from two directories are one model with two seeds, in the first recipe's 4/255 board
    first = next(t for t in titles if t.startswith(f"{tiny}: L-inf 4/255") and "epochs=8" in t)
    board = _table(index, first)
    assert sorted(_rows(board)) == ["lfm", "plain"] and "std over 2 training seeds" in board
    assert "(differs in recipe_key" in board and "(differs in budget)" in board
    domain = _table(index, f"{tiny} -&gt; {tiny}:domain=b")
    assert "differs in test_dataset" in domain or "differs in test_data_params" in domain
    assert re.search(r"epochs=6", index) and "worst case" not in board  # no ensemble ran here


def test_the_board_shows_what_the_results_csv_says(runs, tmp_path):
    """Mean ± sample std over the two seeds, straight from the two results.csv files."""
    build_board([runs["seed0"], runs["seed1"]], tmp_path / "site")
    index = (tmp_path / "site" / "index.html").read_text()
    both = pd.concat([pd.read_csv(runs[s] / "results.csv", keep_default_na=False) for s in ("seed0", "seed1")])
    lfm = both[
        (both["model"] == "lfm") & (both["attack"] == "pgd") & (both["eps"] > 0.02) & (both["metric"] == "rank1")
    ]
    assert len(lfm) == 2
    mean, std = 100 * lfm["value"].mean(), 100 * lfm["value"].std(ddof=1)
    board = _table(index, next(t for t in re.findall(r"<h2>([^<]*8/255[^<]*)</h2>", index)))
    row = board[board.index("<tr data-model='lfm'") :].split("</tr>")[0]
    assert f"{mean:.1f} ± {std:.1f}" in row


def test_a_damaged_or_foreign_run_is_left_out_in_one_line(runs, tmp_path):
    torn, edited, empty = tmp_path / "torn", tmp_path / "edited", tmp_path / "empty"
    for target in (torn, edited):
        shutil.copytree(runs["seed0"], target)
    text = (torn / "results.csv").read_text()
    (torn / "results.csv").write_text(text[: len(text) // 2])  # a torn table
    (edited / "results.csv").write_text((edited / "results.csv").read_text().replace(",rank1,0.", ",rank1,0.9", 1))
    empty.mkdir()
    code, out, err = _board(str(runs["seed1"]), str(torn), str(edited), str(empty), "--out", str(tmp_path / "s"))
    lines = err.strip().splitlines()
    assert code == 0 and len(lines) == 3 and all(line.startswith("lfm-bench: warning: left out: ") for line in lines)
    assert str(torn) in lines[0] and str(edited) in lines[1] and f"{empty} has no manifest.json" in lines[2]
    assert "1 run(s)" in out
    index = (tmp_path / "s" / "index.html").read_text()
    assert "Run directories left out" in index and str(edited) in index
    assert "std over 2" not in index  # nothing of the damaged copies was merged as a second seed
    code, _, err = _board(str(empty), "--out", str(tmp_path / "none"))
    assert code == 2 and err.startswith("lfm-bench: error: no run directory could be used")


def test_a_run_being_written_is_left_out_and_the_state_file_reaches_nothing_outside(runs, tmp_path):
    busy = tmp_path / "busy"
    shutil.copytree(runs["seed0"], busy)
    with RunLock(busy):  # a sweep writing it
        result = build_board([busy, runs["seed1"]], tmp_path / "site")
    assert len(result.refused) == 1 and f"{busy} is being written by lfm-bench pid {os.getpid()}" in result.refused[0]
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    state = tmp_path / "site" / ".board" / "state.json"
    recorded = json.loads(state.read_text())
    state.write_text(json.dumps({"files": [*recorded["files"], str(outside), "../outside.txt"]}))  # edited by hand
    build_board([runs["seed1"]], tmp_path / "site")
    assert outside.read_text() == "keep"


def test_the_site_folder_must_be_new_empty_or_a_board(runs, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("mine")
    code, _, err = _board(str(runs["seed0"]), "--out", str(mine))
    assert code == 2 and "not empty and holds no board" in err and (mine / "thesis.tex").read_text() == "mine"


def test_two_builders_of_one_site_and_a_nan_run(runs, tmp_path):
    """A second `board` on a site being built is refused in one line; a run holding a NaN value is
    left out, never shown as a number."""
    site = tmp_path / "site"
    build_board([runs["seed0"]], site)
    with RunLock(site, writer="board build"):
        code, _, err = _board(str(runs["seed0"]), "--out", str(site))
    assert code == 2 and err.startswith(f"lfm-bench: error: {site} is being written by lfm-bench pid {os.getpid()}")
    nan = tmp_path / "nan"
    shutil.copytree(runs["seed0"], nan)
    results = pd.read_csv(nan / "results.csv", keep_default_na=False, dtype=str)
    results.loc[results.index[0], "value"] = "nan"
    results.to_csv(nan / "results.csv", index=False)
    manifest = json.loads((nan / "manifest.json").read_text())
    (nan / "manifest.json").write_text(json.dumps({**manifest, "tables": digests(nan)}))  # as a sweep would record it
    code, _, err = _board(str(nan), str(runs["seed1"]), "--out", str(tmp_path / "s2"))
    assert code == 0 and err.count("\n") == 1 and "no valid value" in err and str(nan) in err


def _named_run(source: Path, target: Path, name: str) -> None:
    """A copy of `source` whose model `lfm` is called `name`, with new cell ids (a cell id hashes the
    model's name) and its tables' digests recorded again: what a sweep of a model so named leaves."""
    shutil.copytree(source, target)
    results = pd.read_csv(target / "results.csv", keep_default_na=False, dtype=str)
    renamed = {c: content_hash([c, name], 12) for c in results.loc[results["model"] == "lfm", "cell_id"]}
    for table in ("results.csv", "queries.csv", "cmc.csv", "sanity.csv"):
        df = pd.read_csv(target / table, keep_default_na=False, dtype=str)
        if "model" in df.columns:
            df["model"] = df["model"].replace("lfm", name)
        if "cell_id" in df.columns:
            df["cell_id"] = df["cell_id"].replace(renamed)
        df.to_csv(target / table, index=False)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["tables"] = digests(target)
    (target / "manifest.json").write_text(json.dumps(manifest))


HOSTILE = "<img src=x onerror=alert(1)><script>alert(2)</script>"


def test_every_name_from_a_csv_is_escaped(runs, tmp_path):
    _named_run(runs["seed0"], tmp_path / "hostile", HOSTILE)
    result = build_board([tmp_path / "hostile"], tmp_path / "site")
    assert not result.refused
    pages = [tmp_path / "site" / "index.html", *(tmp_path / "site" / "models").glob("*.html")]
    text = "".join(p.read_text() for p in pages)
    assert "<script>alert" not in text and "<img src=x" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in text


def test_a_rebuild_reads_and_writes_only_what_changed(runs, tmp_path):
    site = tmp_path / "site"
    first = build_board([runs["seed0"], runs["recipe"]], site)
    assert sorted(first.read) == sorted(p.resolve() for p in (runs["seed0"], runs["recipe"]))
    pages = {p: p.stat().st_mtime_ns for p in (site / "models").glob("*.html")}
    again = build_board([runs["seed0"], runs["recipe"]], site)
    assert again.read == [] and again.written == [] and again.removed == []
    time.sleep(0.01)
    grown = build_board([runs["seed0"], runs["recipe"], runs["seed1"]], site)
    assert grown.read == [runs["seed1"].resolve()]
    assert "index.html" in grown.written and not any(w.startswith("assets/") for w in grown.written)
    recipe_pages = [p for p in pages if "<dt>epochs</dt><dd>6</dd>" in p.read_text()]
    assert recipe_pages and all(p.stat().st_mtime_ns == pages[p] for p in recipe_pages)  # untouched
    shrunk = build_board([runs["recipe"]], site)
    assert shrunk.removed and all(not (site / r).exists() for r in shrunk.removed)
    assert len(list((site / ".board" / "runs").glob("*.json"))) == 1  # the cached records of the runs gone too


def test_a_site_copies_the_figures_another_drew_and_draws_a_torn_one(runs, tmp_path, monkeypatch):
    """The figure store: a second site of the same run draws nothing and holds the same bytes; a
    torn stored figure is drawn again, and a store that cannot be written fails no build."""
    import robustbench_lfm.summary as summary

    cache, sites = tmp_path / "cache", [tmp_path / name for name in ("first", "second", "third")]
    first = build_board([runs["seed0"]], sites[0], cache)
    drawn = sorted(w for w in first.written if w.startswith("figures/"))
    assert any(".pdf" in w for w in drawn) and len([w for w in drawn if w.endswith(".png")]) >= 4
    assert sorted(p.name for p in (cache / "figures").iterdir()) == sorted(Path(w).name for w in drawn)
    calls = []
    for name in ("plot_eps_curves", "plot_cmc"):
        monkeypatch.setattr(summary, name, lambda *a, _n=name, **k: calls.append(_n))
    second = build_board([runs["seed0"]], sites[1], cache)
    assert calls == [] and sorted(w for w in second.written if w.startswith("figures/")) == drawn
    assert all((sites[1] / w).read_bytes() == (sites[0] / w).read_bytes() for w in drawn)
    monkeypatch.undo()  # the real drawing again
    cmc = next(p for p in (cache / "figures").glob("cmc-*.png"))
    whole = cmc.read_bytes()
    cmc.write_bytes(whole[:-12])  # torn: its IEND chunk lost
    build_board([runs["seed0"]], sites[2], cache)
    assert (sites[2] / "figures" / cmc.name).read_bytes() == whole and cmc.read_bytes() == whole  # stored again
    (sites[2] / "figures" / cmc.name).unlink()
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    again = build_board([runs["seed0"]], sites[2], blocked)
    assert again.written == [f"figures/{cmc.name}"] and (sites[2] / "figures" / cmc.name).read_bytes() == whole


def test_an_older_table_from_git_history_joins_a_board(tmp_path):
    """results.csv and queries.csv of the CI baseline at 5399ead (an older schema), beside a manifest."""
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(OLDER / "ci-baseline-5399ead.csv", old / "results.csv")
    shutil.copy(OLDER / "ci-baseline-5399ead-queries.csv", old / "queries.csv")
    (old / "manifest.json").write_text(json.dumps({"spec": {}}))
    result = build_board([old], tmp_path / "site")
    assert not result.refused and result.boards
    index = (tmp_path / "site" / "index.html").read_text()
    assert NO_COMMAND in "".join(p.read_text() for p in (tmp_path / "site" / "models").glob("*.html"))
    assert "lfm" in index


@pytest.fixture
def unload_plugins():
    yield
    for loaded in plugins.loaded():
        plugins.unload(loaded)


def test_an_edited_plugin_is_two_rows_never_averaged_as_seeds(tmp_path, unload_plugins):
    plugin = tmp_path / "my_plugin.py"
    shutil.copy(EXAMPLE, plugin)
    args = ["--plugin", str(plugin), "--models", "gaussian-dropout", "--attacks", "fgsm", "--eps", "8/255"]
    _run(tmp_path / "before", tmp_path / "cache", *args, "--seeds", "0")
    plugin.write_text(plugin.read_text().replace("x * (1 + (self.p", "x * (1.0 + (self.p"))  # same params, new code
    for loaded in plugins.loaded():
        plugins.unload(loaded)
    _run(tmp_path / "after", tmp_path / "cache", *args, "--seeds", "1")
    result = build_board([tmp_path / "before", tmp_path / "after"], tmp_path / "site")
    (table,) = result.boards
    seeds = {e.label: e.seeds for e in table.entries}
    edited = [label for label in seeds if label.startswith("gaussian-dropout [code ")]
    assert len(edited) == 2 and all(seeds[label] in {(0,), (1,)} for label in edited)  # apart, one seed each
    assert seeds["plain"] == (0, 1)  # plain's code did not change: its two seeds, from two runs, are one row
    assert (
        "gaussian-dropout: made by two or more versions of its code" in (tmp_path / "site" / "index.html").read_text()
    )


# --- in a real browser -------------------------------------------------------------------------------


def _browser():
    """Playwright's sync API and the system Chromium, or a skip (a failure where LFM_BENCH_BROWSER=require)."""
    required = os.environ.get("LFM_BENCH_BROWSER") == "require"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if required:
            raise
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    if not CHROMIUM.is_file():
        if required:
            raise FileNotFoundError(f"{CHROMIUM}: install Debian's chromium (apt-get install chromium)")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    return sync_playwright


FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.fixture(scope="module")
def site(runs, tmp_path_factory, figure_cache) -> Path:
    root = tmp_path_factory.mktemp("site")
    folder = root / "hostile"
    _named_run(runs["seed1"], folder, HOSTILE)
    build_board([*runs.values(), folder], root / "site", figure_cache)  # built before any test's own cache is set
    return root / "site"


@pytest.fixture(scope="module")
def browser(site):
    sync_playwright = _browser()
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A page that records console errors, uncaught exceptions, dialogs and requests off file://."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.problems = []
    tab.on("console", lambda m: tab.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    tab.on("pageerror", lambda e: tab.problems.append(f"uncaught: {e}"))
    tab.on("dialog", lambda d: (tab.problems.append(f"dialog: {d.message}"), d.dismiss()))
    tab.on("request", lambda r: None if r.url.startswith("file://") else tab.problems.append(f"fetched {r.url}"))
    yield tab
    context.close()


def _values(tab, table_id: str, column: int) -> list[float]:
    cells = tab.locator(f"#{table_id} tbody tr:not([hidden]) td:nth-child({column})")
    return [float(v) for v in cells.evaluate_all("cells => cells.map(c => c.dataset.value)")]


def test_the_index_loads_with_no_error_and_every_figure_draws(page, site, tmp_path):
    page.goto((site / "index.html").as_uri())
    page.wait_for_load_state("load")
    assert page.locator("section.board").count() == 7
    widths = page.locator("img").evaluate_all("imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    assert widths and min(widths) > 0
    assert page.problems == []
    shots = Path(os.environ.get("LFM_BENCH_SCREENSHOTS", str(tmp_path)))
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "board-index.png"))
    assert (shots / "board-index.png").stat().st_size > 10_000


def test_clicking_a_column_sorts_its_rows(page, site):
    page.goto((site / "index.html").as_uri())
    title = page.locator("h2", has_text="L-inf 4/255").filter(has_text="epochs=8")
    table = page.locator("section.board").filter(has=title).locator("table.leaderboard")
    table_id = table.get_attribute("id")
    header = table.locator("thead th").nth(5)  # clean mAP
    assert len(set(_values(page, table_id, 6))) >= 3  # three models whose values an order tells apart
    header.click()
    down = _values(page, table_id, 6)
    assert down == sorted(down, reverse=True) and header.get_attribute("aria-sort") == "descending"
    header.click()
    up = _values(page, table_id, 6)
    assert up == sorted(up) and up == down[::-1] and header.get_attribute("aria-sort") == "ascending"
    names = table.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.model)")
    header = table.locator("thead th").first
    header.click()  # text: A to Z
    assert table.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.model)") == sorted(names)


def test_the_filters_hide_rows_and_columns(page, site):
    page.goto((site / "index.html").as_uri())
    visible = "table.leaderboard tbody tr:not([hidden])"
    before = page.locator(visible).count()
    page.fill("#filter-model", "plain")
    names = page.locator(visible).evaluate_all("rows => rows.map(r => r.dataset.model)")
    assert names and all("plain" in n for n in names) and len(names) < before
    page.fill("#filter-model", "")
    page.select_option("#filter-regularizer", "dropout")
    assert set(page.locator(visible).evaluate_all("rows => rows.map(r => r.dataset.regularizer)")) == {"dropout"}
    page.select_option("#filter-regularizer", "")
    page.select_option("#filter-attack", "fgsm")
    shown = page.locator("section.board:not([hidden]) thead th[data-attack]:not([hidden])")
    assert set(shown.evaluate_all("ths => ths.map(t => t.dataset.attack)")) == {"clean", "fgsm"}
    assert page.locator("section.board[hidden]").count() > 0  # boards without fgsm (digits, corruptions) go
    assert "rows shown" in page.inner_text("#filter-count")
    assert page.problems == []


def test_a_model_link_opens_its_provenance(page, site, runs):
    page.goto((site / "index.html").as_uri())
    page.locator("table.leaderboard tbody tr[data-model='lfm'] a").first.click()
    page.wait_for_load_state("load")
    text = page.inner_text("body")
    results = pd.read_csv(runs["seed0"] / "results.csv", keep_default_na=False)
    sha = results.loc[results["model"] == "lfm", "checkpoint_sha256"].iloc[0]
    assert sha in text and "lfm-bench run --dataset" in text  # the checkpoint, and the command that made it
    assert "Sanity checks" in text and "above-chance" in text
    widths = page.locator("img").evaluate_all("imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    assert len(widths) >= 2 and min(widths) > 0  # robustness curves and CMC
    assert page.problems == []


def test_a_hostile_model_name_renders_as_text(page, site):
    page.goto((site / "index.html").as_uri())
    assert page.locator(f"tr[data-model='{HOSTILE}']").count() > 0
    assert HOSTILE in page.inner_text("body")
    page.locator(f"tr[data-model='{HOSTILE}'] a").first.click()
    page.wait_for_load_state("load")
    assert page.locator("h1").inner_text() == HOSTILE
    assert page.problems == []  # no alert ran, nothing was fetched
