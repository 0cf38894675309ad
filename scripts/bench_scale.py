"""The re-ID path at full Market-1501 size, stage by stage: wall time, peak memory, cost per image.

Usage: python scripts/bench_scale.py DIR [--work W] [--size 128x64] [--batch-size 256] [--n-eval 0] [--quantize]

DIR holds a Market-1501 folder (a real one, or the replica scripts/market_replica.py writes). In
one process, through the harness's own functions, with a fresh cache under W:

1. decode + cache, cold (every JPEG decoded, the cache file written), then warm (read back);
2. one training epoch of `plain` on `resnet-mini` (the CPU default; P x K batches);
3. clean features of every query and gallery image;
4. query-side SMA at 5/255 (15 steps of 1/255, the LFM paper's attack) on every query, crafted as a
   transfer attack so the adversarial images go through the cache's storage;
5. evaluation without and with k-reciprocal re-ranking;
6. the report of the recorded rows.

Per stage it prints wall seconds, the peak resident memory of the process during the stage
(the kernel's high-water mark, reset before each stage with /proc/self/clear_refs), and the cost
per image; then the bytes the stored adversarial images take against float32. Run it twice with
the same --work to see the warm path: the checkpoint and the stored images are then read back.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import torch

from robustbench_lfm import attacking, group
from robustbench_lfm.datasets import evaluated_subset, load_dataset
from robustbench_lfm.options import RunOptions
from robustbench_lfm.report import build_report
from robustbench_lfm.spec import Cell, RunSpec, build_spec
from robustbench_lfm.store import ResultStore
from robustbench_lfm.training import images_per_epoch

ONE_EPOCH = 'task = "reid"\nbackbone = "resnet-mini"\nepochs = 1\nwarmup_epochs = 0\nmilestones = []\n'


def rss_mb(field: str = "VmHWM") -> float:
    """The process's resident memory in MiB: its high-water mark since the last reset (VmHWM) or now (VmRSS)."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def reset_peak() -> None:
    """Start a new high-water mark (Linux >= 4.0); without it the peak is since process start."""
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


@contextmanager
def stage(rows: list[dict[str, Any]], name: str, images: int) -> Iterator[None]:
    """Time one stage and record its peak memory and cost per image."""
    reset_peak()
    held = rss_mb("VmRSS")
    t0 = time.perf_counter()
    yield
    wall = time.perf_counter() - t0
    rows.append({"stage": name, "wall_s": wall, "held_mb": held, "peak_mb": rss_mb(), "images": images})
    print(f"  {name:<28} {wall:8.1f} s  peak {rows[-1]['peak_mb']:7.0f} MiB", flush=True)


def make_spec(args: argparse.Namespace, work: Path) -> RunSpec:
    recipe = work / "one-epoch.toml"
    recipe.write_text(ONE_EPOCH)
    opts: dict[str, Any] = {
        "models": "plain", "no_baseline": True, "attacks": "sma:steps=15,step_size=1/255", "eps": "5/255",
        "dataset": f"market1501:height={args.size[0]},width={args.size[1]}", "data_root": str(args.dir),
        "recipe": str(recipe), "rerank": "both", "surrogate": "plain", "out": work / "run",
        "cache_dir": work / "cache", "quiet": True, "batch_size": args.batch_size, "device": args.device,
        "quantize": args.quantize,
    }  # fmt: skip
    if args.n_eval:
        opts["n_eval"] = args.n_eval
    return build_spec(RunOptions(**opts))


def run(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    spec = make_spec(args, work)
    rows: list[dict[str, Any]] = []
    device = torch.device(spec.device)

    def load() -> Any:
        return load_dataset(spec.data.name, dict(spec.data.options), spec.cache_dir, spec.data.root)

    cold = not (spec.cache_dir / "datasets").exists()
    print(f"cache {spec.cache_dir}: {'empty (cold)' if cold else 'filled by an earlier run (warm)'}")
    with stage(rows, "decode + cache" + (" (cold)" if cold else " (cached)"), 0):
        data = load()
    n_all = len(data.train) + len(data.query) + len(data.gallery)
    rows[-1]["images"] = n_all
    del data
    with stage(rows, "decode again (cache warm)", n_all):
        data = load()
    data = evaluated_subset(data, spec.evaluation.n_eval)  # --n-eval: the queries scored
    model = spec.models[0]
    per_epoch = images_per_epoch(data, spec.recipe)
    with stage(rows, "train 1 epoch (resnet-mini)", per_epoch):
        trained = group.trained_model(spec, model, 0, data, device)
    if all(info.get("cached") for info in trained.training.values()):
        rows[-1]["stage"] = "load the cached checkpoint"
    net = trained.net
    with stage(rows, "clean features", len(data.query) + len(data.gallery)):
        clean = group.clean_features(spec, net, data, device)
    assert clean is not None
    cell = next(c for c in spec.cells() if c.attack is not None)
    attack = cell.build_attack("reid")
    assert attack is not None
    attacker, _ = group.attacker_for(spec, 0, net, clean, data, device)
    ctx = attacking.EvalContext(spec, data, device, net, attacker, clean)
    adversarial = spec.cache_dir / "adversarial"
    before = set(adversarial.glob("*.safetensors"))
    with stage(rows, "SMA 5/255 on the queries", len(data.query)):
        (attacked,) = attacking.attacked_side(ctx, cell, attack, "query")
    results: dict[str, Any] = {}
    for mode, name in (("off", "evaluate"), ("on", "evaluate + re-ranking")):
        mode_spec = dataclasses.replace(spec, evaluation=dataclasses.replace(spec.evaluation, rerank=mode))
        with stage(rows, name, len(data.query)):
            results.update(group.rank_results(mode_spec, data, attacked, clean.gallery))
    clean_cell = spec.cells()[0]
    _record(spec, clean_cell, None, group.rank_results(spec, data, clean.query, clean.gallery), trained.sha256, data)
    _record(spec, cell, attack, results, trained.sha256, data)
    with stage(rows, "report", 0):
        build_report(spec.out_dir)
    stored = set(adversarial.glob("*.safetensors")) - before  # this cell's images (none when read back)
    float32 = 4 * data.query.images.numel()  # what the same images took as float32
    rows.append({"stage": "stored", "bytes": sum(p.stat().st_size for p in stored), "float32_bytes": float32})
    return rows


def _record(spec: RunSpec, cell: Cell, attack: Any, results: dict[str, Any], sha: str, data: Any) -> None:
    """The cell's rows in the run's results.csv, as the coordinator writes them."""
    extra = {**group.attack_fields(cell, attack, "reid"), "projected": group._projected(attack)}
    rows = group.result_rows(spec, cell, results, extra, sha, 0.0, group.n_eval(data))
    spec.out_dir.mkdir(parents=True, exist_ok=True)
    ResultStore(spec.out_dir / "results.csv").append(rows, replace_cells=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path, help="folder holding Market-1501-v15.09.15/ (or the replica)")
    ap.add_argument("--work", type=Path, default=None, help="cache and run folder (default: a temporary one)")
    ap.add_argument("--size", default="128x64", help="image size HEIGHTxWIDTH (default 128x64, resnet-mini's)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n-eval", type=int, default=0, help="score a seeded subset of N queries (0 = all)")
    ap.add_argument("--quantize", action="store_true", help="8-bit adversarial images (stored as uint8)")
    args = ap.parse_args()
    height, _, width = args.size.partition("x")
    args.size = (int(height), int(width))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = run(args, work)
    stages = [r for r in rows if r["stage"] != "stored"]
    print("\n| stage | wall s | RSS at start MiB | peak RSS MiB | images | ms / image |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in stages:
        per = f"{1000 * r['wall_s'] / r['images']:.2f}" if r["images"] else ""
        print(f"| {r['stage']} | {r['wall_s']:.1f} | {r['held_mb']:.0f} | {r['peak_mb']:.0f} | {r['images']} | {per} |")
    whole = max(r["peak_mb"] for r in stages)  # each stage's high-water mark: the largest is the path's
    print(f"\nwhole path: {sum(r['wall_s'] for r in stages):.0f} s, peak RSS {whole:.0f} MiB")
    cold, warm = stages[0]["wall_s"], stages[1]["wall_s"]
    print(f"second / first decode: {warm / cold:.3f}")
    stored = rows[-1]
    if not stored["bytes"]:
        print("adversarial images: read back from the cache (stored by an earlier run)")
        return
    print(f"adversarial images stored for one (attack, eps): {stored['bytes'] / 2**20:.1f} MiB "
          f"(float32 would be {stored['float32_bytes'] / 2**20:.1f} MiB)")  # fmt: skip


if __name__ == "__main__":
    main()
