"""Faults a hostile user can cause, each run through the command line, with what lfm-bench answered.

    python scripts/fault_cases.py [--repo PATH] [--dir /tmp/fault-cases] [--only NAME,...]

Each case runs `python -m robustbench_lfm ...` (the code under `--repo`, default this checkout, so
an older commit checked out elsewhere can be compared with this one) in a fresh folder, and prints
one Markdown row: the case, the exit status, the last line the command printed and what it left
(cells recorded, processes left behind, temp files). The cases are those of docs/evaluation.md,
"When a cell fails", and of docs/usage.md "Failures" and "Integrity": a plugin attack returning NaN or
editing its input in place, a corruption and a plugin regularizer that raise, a given model that
cannot embed attacked images, a full disk in the coordinator and in a `--jobs` worker, SIGKILL to
the coordinator of `--jobs 2` / dask / submitit sweeps, a killed report's temp file, an edited
results.csv, a model at chance, `check` against another recipe's baseline and a baseline with a
UTF-8 BOM. CPU-only, a few minutes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from kill_loop import alive, descendants  # this folder's: the same process counting

DATA = "synthreid:train_ids=12,test_ids=6,distractor_ids=2,cameras=3,max_cameras=3"

PLUGIN = """
import errno, os, time
from pathlib import Path

import torch
from robustbench_lfm.attacks.base import Attack, Problem
from robustbench_lfm.attacks.registry import register_attack
from robustbench_lfm.models.registry import ModelEntry, register_model, register_regularizer
from robustbench_lfm.models.regularizers import Regularizer


class Search(Attack):
    def __init__(self, side=None, seed=0):
        super().__init__("auto", "linf", side, seed)


@register_attack("nan-noise")
class NanNoise(Search):
    def perturb(self, p: Problem):
        return p.x * float("nan")


@register_attack("in-place-overshoot")
class InPlaceOvershoot(Search):
    def perturb(self, p: Problem):
        return p.x.add_(0.4).clamp_(0, 1)


@register_attack("raising-corruption")
class RaisingCorruption(Search):
    budgeted = False

    def __call__(self, model, x, context, *, eps=0.0, generator=None):
        raise ZeroDivisionError("a bug in the corruption")


@register_regularizer("raises-in-training")
class RaisesInTraining(Regularizer):
    site = "layer2"

    def __init__(self, p=0.5, at=None, seed=0):
        super().__init__(p, seed, at)

    def apply_train(self, x):
        raise RuntimeError("the plugin regularizer broke")


register_model(ModelEntry("raiser", "raises-in-training", description="raises in training"))

if os.environ.get("FAULT_FULL_DISK"):
    import robustbench_lfm.cache as cache

    _real = cache.save_file

    def _save(state, path):
        try:  # the first checkpoint fits; the second meets a full disk once the first model's rows are in
            os.close(os.open(os.environ["FAULT_FULL_DISK"], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            results, deadline = Path(os.environ["FAULT_RESULTS"]), time.monotonic() + 120
            while time.monotonic() < deadline and not (results.exists() and results.read_text().count("\\n") > 5):
                time.sleep(0.2)
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        _real(state, path)

    cache.save_file = _save
"""

GIVEN = """
import sys
import torch
from robustbench_lfm.evaluation import evaluate


class BreaksOnAttackedImages(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(3, 8)

    def forward(self, x):
        if (x * 255 - (x * 255).round()).abs().amax() > 1e-3 and not torch.is_grad_enabled():
            raise ValueError("cannot embed these images")
        return self.head(x.mean((2, 3)))


try:
    evaluate(BreaksOnAttackedImages(), out=sys.argv[1], dataset=sys.argv[2], attacks="fgsm", eps="8/255",
             cache_dir=sys.argv[3], quiet=True)
except Exception as err:
    print(f"{type(err).__name__}: {err}"[:400])
    sys.exit(1)
"""


class Runner:
    """Runs the CLI of the code under `repo` in `root`."""

    def __init__(self, repo: Path, root: Path) -> None:
        self.repo, self.root = repo, root
        self.env = {**os.environ, "PYTHONPATH": str(repo)}
        self.plugin = root / "broken.py"
        self.plugin.write_text(PLUGIN)

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "robustbench_lfm", *args]
        return subprocess.run(
            cmd, capture_output=True, text=True, env={**self.env, **(env or {})}, cwd=self.root, timeout=600
        )

    def sweep(self, out: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.cli("run", "--dataset", DATA, "-q", "--out", str(self.root / out), "--cache-dir",
                        str(self.root / "cache"), *args, env=env)  # fmt: skip


def last_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = (done.stderr.strip() or done.stdout.strip()).splitlines()
    text = lines[-1] if lines else ""
    return text if len(text) <= 220 else text[:217] + "..."


def cells(run: Path) -> str:
    try:
        df = pd.read_csv(run / "results.csv", keep_default_na=False)
    except (OSError, pd.errors.EmptyDataError):
        return "no results.csv"
    return f"{df['cell_id'].nunique()} cells ({', '.join(sorted(set(df['model'] + ' ' + df['attack'])))})"


def case_nan_attack(r: Runner) -> tuple[int, str, str]:
    done = r.sweep("nan", "--plugin", str(r.plugin), "--models", "lfm", "--attacks", "nan-noise,fgsm",
                   "--eps", "8/255", "--epochs", "1")  # fmt: skip
    return done.returncode, last_line(done), cells(r.root / "nan")


def case_in_place(r: Runner) -> tuple[int, str, str]:
    done = r.sweep("inplace", "--plugin", str(r.plugin), "--models", "plain", "--no-baseline", "--attacks",
                   "in-place-overshoot", "--eps", "8/255", "--epochs", "1")  # fmt: skip
    warned = [line for line in done.stdout.splitlines() if "in-budget" in line]
    df = pd.read_csv(r.root / "inplace" / "results.csv", keep_default_na=False)
    moved = df.loc[df["attack"] != "none", "projected"].max() if "projected" in df else "no `projected` column"
    return done.returncode, warned[0][:220] if warned else "(no in-budget warning)", f"projected {moved}"


def case_raising_corruption(r: Runner) -> tuple[int, str, str]:
    done = r.sweep("corruption", "--plugin", str(r.plugin), "--models", "plain", "--no-baseline", "--attacks",
                   "raising-corruption,fgsm", "--eps", "8/255", "--epochs", "1")  # fmt: skip
    return done.returncode, last_line(done), cells(r.root / "corruption")


def case_raising_regularizer(r: Runner) -> tuple[int, str, str]:
    done = r.sweep("regularizer", "--plugin", str(r.plugin), "--models", "raiser,dropout", "--attacks", "fgsm",
                   "--eps", "8/255", "--epochs", "1")  # fmt: skip
    return done.returncode, last_line(done), cells(r.root / "regularizer")


def case_given_model(r: Runner) -> tuple[int, str, str]:
    script = r.root / "given.py"
    script.write_text(GIVEN)
    args = [sys.executable, str(script), str(r.root / "given"), DATA, str(r.root / "cache")]
    done = subprocess.run(args, capture_output=True, text=True, env=r.env, cwd=r.root, timeout=600)
    return done.returncode, last_line(done), cells(r.root / "given")


def _full_disk(r: Runner, out: str, *extra: str) -> tuple[int, str, str]:
    env = {"FAULT_FULL_DISK": str(r.root / f"{out}.first-saved"), "FAULT_RESULTS": str(r.root / out / "results.csv")}
    done = r.sweep(out, "--plugin", str(r.plugin), "--models", "lfm", "--attacks", "fgsm", "--eps", "8/255",
                   "--epochs", "1", "--cache-dir", str(r.root / f"{out}-cache"), *extra, env=env)  # fmt: skip
    temps = [p.name for p in (r.root / f"{out}-cache").rglob("*") if ".tmp" in p.name]
    return done.returncode, last_line(done), f"{cells(r.root / out)}; {len(temps)} temp file(s) in the cache"


def case_full_disk(r: Runner) -> tuple[int, str, str]:
    return _full_disk(r, "disk")


def case_full_disk_worker(r: Runner) -> tuple[int, str, str]:
    return _full_disk(r, "disk-jobs", "--jobs", "2")


def _kill_parent(r: Runner, name: str, *executor: str) -> tuple[int, str, str]:
    cmd = [sys.executable, "-m", "robustbench_lfm", "run", "--dataset", DATA, "-q", "--models", "lfm,dropout",
           "--attacks", "pgd,fgsm", "--epochs", "30", "--out", str(r.root / name), "--cache-dir",
           str(r.root / f"{name}-cache"), *executor]  # fmt: skip
    proc = subprocess.Popen(cmd, env=r.env, cwd=r.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(descendants(proc.pid)) < 2:
        time.sleep(0.5)
    time.sleep(8)  # the workers have imported torch and are training
    workers = descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(5)
    left = [w for w in workers if alive(w)]
    for w in left:
        os.kill(w, signal.SIGKILL)
    return (
        -9,
        f"SIGKILL to the coordinator; {len(workers)} descendant process(es) before",
        (f"{len(left)} still running 5 s later"),
    )


def case_kill_jobs(r: Runner) -> tuple[int, str, str]:
    return _kill_parent(r, "kill-jobs", "--jobs", "2")


def case_kill_dask(r: Runner) -> tuple[int, str, str]:
    return _kill_parent(r, "kill-dask", "--executor", "dask", "--jobs", "2")


def case_kill_submitit(r: Runner) -> tuple[int, str, str]:
    return _kill_parent(r, "kill-submitit", "--executor", "submitit", "--cluster", "local", "--jobs", "2")


def _base_run(r: Runner) -> Path:
    """A finished run (lfm, fgsm, 2 epochs) that later cases copy."""
    run = r.root / "base"
    if not (run / "results.csv").exists():
        r.sweep("base", "--models", "lfm", "--attacks", "fgsm", "--eps", "8/255", "--epochs", "2")
    return run


def case_killed_report(r: Runner) -> tuple[int, str, str]:
    run = r.root / "report-run"
    shutil.copytree(_base_run(r), run)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run / "report").mkdir(exist_ok=True)
    for folder in (run, run / "report"):
        (folder / f".cmc.{int(dead.stdout)}-0a1b2c3d.tmp.png").write_bytes(b"half a png")
    done = r.cli("report", str(run))
    temps = [p.name for p in run.rglob("*") if ".tmp." in p.name]
    return done.returncode, last_line(done), f"{len(temps)} temp file(s) of a dead report left"


def case_edited_table(r: Runner) -> tuple[int, str, str]:
    run = r.root / "edited"
    shutil.copytree(_base_run(r), run)
    baseline = r.root / "edited-baseline.csv"
    shutil.copy(run / "results.csv", baseline)
    df = pd.read_csv(run / "results.csv", keep_default_na=False, dtype=str)
    df["value"] = [f"{min(1.0, float(v) + 0.5):.6f}" for v in df["value"]]
    df.to_csv(run / "results.csv", index=False)
    check = r.cli("check", str(run), "--baseline", str(baseline))
    report = r.cli("report", str(run))
    return check.returncode, last_line(check), f"report: exit {report.returncode}: {last_line(report)[:160]}"


def case_chance_model(r: Runner) -> tuple[int, str, str]:
    done = r.sweep("chance", "--models", "plain", "--no-baseline", "--epochs", "1")
    flagged = [line for line in done.stdout.splitlines() if "sanity" in line]
    return done.returncode, " | ".join(flagged)[:220] or "(no sanity line)", cells(r.root / "chance")


def case_check_other_recipe(r: Runner) -> tuple[int, str, str]:
    base = _base_run(r)
    r.sweep("other-recipe", "--models", "lfm", "--attacks", "fgsm", "--eps", "8/255", "--epochs", "1")
    done = r.cli("check", str(r.root / "other-recipe"), "--baseline", str(base / "results.csv"))
    missing = [line for line in done.stdout.splitlines() if "MISSING" in line]
    return done.returncode, (missing[0] if missing else last_line(done))[:220], f"{len(missing)} MISSING line(s)"


def case_bom_baseline(r: Runner) -> tuple[int, str, str]:
    base = _base_run(r)
    bom = r.root / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + (base / "results.csv").read_bytes())
    done = r.cli("check", str(base), "--baseline", str(bom))
    return done.returncode, last_line(done), ""


CASES: dict[str, Callable[[Runner], tuple[int, str, str]]] = {
    "plugin attack returns NaN": case_nan_attack,
    "plugin attack edits its input in place": case_in_place,
    "plugin corruption raises": case_raising_corruption,
    "plugin regularizer raises in training": case_raising_regularizer,
    "given model cannot embed attacked images": case_given_model,
    "full disk (checkpoint save)": case_full_disk,
    "full disk in a --jobs 2 worker": case_full_disk_worker,
    "SIGKILL coordinator, --jobs 2": case_kill_jobs,
    "SIGKILL coordinator, dask": case_kill_dask,
    "SIGKILL coordinator, submitit local": case_kill_submitit,
    "killed report's temp files": case_killed_report,
    "results.csv values +0.5": case_edited_table,
    "model at chance": case_chance_model,
    "check vs another recipe's baseline": case_check_other_recipe,
    "baseline with a UTF-8 BOM": case_bom_baseline,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/fault-cases"))
    parser.add_argument("--only", default="", help="comma-separated case function names, e.g. case_bom_baseline")
    args = parser.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    runner = Runner(args.repo.resolve(), args.dir)
    wanted = {n.strip() for n in args.only.split(",") if n.strip()}
    print(f"code: {args.repo.resolve()}\n")
    print("| case | exit | last line | left |\n|---|---|---|---|")
    for name, case in CASES.items():
        if wanted and case.__name__ not in wanted:
            continue
        status, line, left = case(runner)
        print(f"| {name} | {status} | {line.replace('|', '/')} | {left} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
