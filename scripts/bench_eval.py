"""Re-ID evaluation speed and memory at Market-1501 size, against torchreid's and fast-reid's evaluators.

Usage: python scripts/bench_eval.py [--queries 3368] [--gallery 15913] [--repeats 3] [--no-python]

On one random distance matrix with Market-like ids (750 test ids, at most one query per id and
camera, 6 cameras, 2,793 pid-0 distractors in the gallery), in one process, this times:

- ours: `robustbench_lfm.metrics.evaluate_rank`;
- the compiled per-query loop: the Cython evaluator fast-reid ships (rank_cy.pyx, torchreid's
  Cython evaluator extended with mINP). The `torchreid` package on PyPI ships no .pyx file, so this
  is the compiled loop a user can actually install; it makes the same np.argsort call;
- torchreid's Python evaluator (`eval_market1501`, the fallback torchreid uses without Cython).

It prints each time, the ratios, the largest differences of CMC / mAP / mINP between ours and the
references, and the peak resident memory our evaluator added. A second matrix, rounded to 3
decimals so that ties are everywhere, checks equality on ties and times the tie path. Last,
k-reciprocal re-ranking (`robustbench_lfm.rerank`) is compared with torchreid's `re_ranking` on
random features (`--rerank-size`, queries x gallery): time and largest difference.

The references are installed with pip into a folder of the cache (`--ref-dir`), never into the
environment, and loaded from their files: importing the packages would import torchvision.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from robustbench_lfm.metrics import evaluate_rank, pairwise_distance
from robustbench_lfm.rerank import rerank

REFERENCES = ("torchreid==0.2.5", "fastreid==1.4.0", "cython>=3")
CYTHON_DIR = Path("fastreid/evaluation/rank_cylib")


def install_references(target: Path) -> None:
    """pip-install the reference packages into `target` and compile fast-reid's Cython evaluator."""
    if not (target / "torchreid").exists() or not (target / "fastreid").exists():
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
        subprocess.run([*pip, *REFERENCES], check=True)
    if not list((target / CYTHON_DIR).glob("rank_cy*.so")):
        build = (
            "import numpy as np; from Cython.Build import cythonize; from setuptools import Extension, setup; "
            "setup(ext_modules=cythonize([Extension('rank_cy', ['rank_cy.pyx'], include_dirs=[np.get_include()])], "
            "quiet=True), script_args=['build_ext', '--inplace', '-q'])"
        )
        env = {**os.environ, "PYTHONPATH": str(target)}
        subprocess.run([sys.executable, "-c", build], cwd=target / CYTHON_DIR, env=env, check=True)


def load_file(name: str, path: Path) -> ModuleType:
    """Import one module file (a .py or a compiled extension) without importing its package."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def market_like(seed: int, nq: int, ng: int, n_ids: int = 750, n_cams: int = 6, distractors: int = 2793):
    """A random distance matrix with Market-1501-like pids and camera ids."""
    rng = np.random.default_rng(seed)
    slots = rng.permutation(n_ids * n_cams)[:nq]  # at most one query per (id, camera)
    q_pids, q_cams = slots // n_cams + 1, slots % n_cams
    g_pids = np.concatenate([np.zeros(min(distractors, ng), dtype=np.int64), rng.integers(1, n_ids + 1, ng)])[:ng]
    g_cams = rng.integers(0, n_cams, ng)
    return rng.random((nq, ng), dtype=np.float32), q_pids, g_pids, q_cams, g_cams


def rss_bytes() -> int:
    """Resident set size of this process."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_added(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Run `fn`; return its result and the peak resident memory above the level before the call."""
    base, peak, done = rss_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        out = fn()
    finally:
        done.set()
        sampler.join()
    return out, max(peak[0], rss_bytes()) - base


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def compare(ours, cmc: np.ndarray, map_: float, inp: np.ndarray | None = None) -> str:
    """Largest absolute differences between our result and a reference's."""
    diffs = f"CMC {np.abs(ours.cmc.numpy() - cmc[: len(ours.cmc)]).max():.1e}, mAP {abs(ours.mAP - map_):.1e}"
    if inp is not None:
        diffs += f", mINP {abs(ours.mINP - float(np.mean(inp))):.1e}"
    return diffs


def bench(problem: tuple, refs: dict[str, ModuleType], repeats: int, python_ref: bool) -> None:
    """Time ours and the references on one problem and print times, ratios and differences."""
    ours_t, cy_t = [], []
    for _ in range(repeats):  # interleaved, so machine load hits both alike
        ours, t = timed(lambda: evaluate_rank(*problem))
        ours_t.append(t)
        cy, t = timed(lambda: refs["cython"].evaluate_cy(*problem, 50, False))
        cy_t.append(t)
    ours_s, cy_s = statistics.median(ours_t), statistics.median(cy_t)
    print(f"  ours (evaluate_rank)         {ours_s:7.2f} s   valid queries {ours.num_valid}")
    print(f"  fast-reid Cython (compiled)  {cy_s:7.2f} s   ours is {cy_s / ours_s:.1f}x faster")
    print(f"    |ours - Cython|: {compare(ours, cy[0], float(np.mean(cy[1])), cy[2])}")
    if python_ref:
        (cmc, mAP), py_s = timed(lambda: refs["python"].evaluate_rank(*problem, 50, use_cython=False))
        print(f"  torchreid Python             {py_s:7.2f} s   ours is {py_s / ours_s:.1f}x faster")
        print(f"    |ours - torchreid|: {compare(ours, cmc, float(mAP))}")


def bench_rerank(reference: ModuleType, nq: int, ng: int, dim: int = 128) -> None:
    """Time our re-ranking and torchreid's on the same random features; print the largest difference."""
    import torch

    gen = torch.Generator().manual_seed(0)
    qf, gf = torch.randn(nq, dim, generator=gen), torch.randn(ng, dim, generator=gen)
    dists = [pairwise_distance(a, b, "euclidean") for a, b in ((qf, gf), (qf, qf), (gf, gf))]
    ours, ours_s = timed(lambda: rerank(*dists))
    ref, ref_s = timed(lambda: reference.re_ranking(*(d.numpy() for d in dists)))
    print(f"k-reciprocal re-ranking, {nq} queries x {ng} gallery, k1=20 k2=6 lambda=0.3:")
    print(f"  ours {ours_s:.2f} s, torchreid re_ranking {ref_s:.2f} s: ours is {ref_s / ours_s:.1f}x faster")
    print(f"    |ours - torchreid|: max {np.abs(ours.numpy() - ref).max():.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=3368)
    parser.add_argument("--gallery", type=int, default=15913)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of ours and Cython (median)")
    parser.add_argument("--no-python", action="store_true", help="skip torchreid's Python evaluator (~1 min)")
    parser.add_argument("--rerank-size", default="500x2500", help="queries x gallery of the re-ranking check")
    cache = Path(os.environ.get("LFM_BENCH_CACHE", Path.home() / ".cache" / "lfm-bench"))
    parser.add_argument("--ref-dir", type=Path, default=cache / "bench-references")
    args = parser.parse_args()

    install_references(args.ref_dir)
    so = next((args.ref_dir / CYTHON_DIR).glob("rank_cy*.so"))
    refs = {
        "cython": load_file("rank_cy", so),
        "python": load_file("torchreid_rank", args.ref_dir / "torchreid/reid/metrics/rank.py"),
    }
    problem = market_like(0, args.queries, args.gallery)
    print(f"distance matrix {args.queries} x {args.gallery} float32, {os.cpu_count()} CPUs")
    evaluate_rank(*problem)  # warm-up: thread pools and allocator
    _, added = peak_rss_added(lambda: evaluate_rank(*problem))
    matrix_mib = problem[0].nbytes / 2**20
    print(f"  peak memory added by ours: {added / 2**20:.0f} MiB (the matrix itself: {matrix_mib:.0f} MiB)")
    print("random distances:")
    bench(problem, refs, args.repeats, not args.no_python)
    tied = (np.round(problem[0], 3), *problem[1:])
    print("distances rounded to 3 decimals (ties everywhere; ours ranks tied rows by np.argsort):")
    bench(tied, refs, 1, False)
    nq, ng = (int(v) for v in args.rerank_size.split("x"))
    bench_rerank(load_file("torchreid_rerank", args.ref_dir / "torchreid/reid/utils/rerank.py"), nq, ng)


if __name__ == "__main__":
    main()
