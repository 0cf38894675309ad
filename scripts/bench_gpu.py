"""GPU throughput of the re-ID path for `resnet50` at 256x128, side by side in one process, and what
`--preset lfm-paper` costs on this device.

Usage: python scripts/bench_gpu.py [--device cuda] [--iters 20] [--train-batch 64] [--queries 128]

On random images, through the harness's own pieces (models.create_model, training.standard_step
with the `paper` recipe, the registered `pgd` attack, attacking.embed_images), it measures:

- training images/s, fp32 and under bf16 autocast (one P x K batch per step: forward, ID loss with
  label smoothing plus batch-hard triplet, backward, Adam step);
- PGD-20 queries/s (L-inf, 8/255, query side, the re-ID objective), fp32 (the harness's default);
  every attack step of the preset is costed at this rate (one forward and backward each);
- feature extraction images/s, fp32 and bf16.

Each figure is the median of `--iters` timed iterations after `--warmup` (3) untimed ones, with the device
synchronised around each. The ratios bf16 / fp32 compare the two in the same process. Last, the
cost of `--preset lfm-paper` (4 models with the plain baseline, 120 epochs on Market-1501, its
attacks at 5/255 and their large-eps sanity probes, every image embedded once) follows from these
rates: `preset_attack_steps` counts the steps of each attack the preset names (auto-reid: every
member's) at its budget and again at the probe, which runs the same schedule. Runs on CPU too
(`--device cpu --iters 1 --warmup 1` with small batches), which is how the CPU-derived estimate in
docs/usage.md was made.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files

import torch

from robustbench_lfm import attacks, models
from robustbench_lfm.attacking import embed_images
from robustbench_lfm.datasets import ReIDDataset, ReIDSplit
from robustbench_lfm.environment import configure_determinism
from robustbench_lfm.precision import autocast
from robustbench_lfm.recipe import load_recipe, tomllib
from robustbench_lfm.shared_runs import searched_options
from robustbench_lfm.spec import AttackSpec, resolve_attack
from robustbench_lfm.training import images_per_epoch, make_optimizer, standard_step

MARKET = {"train_ids": 751, "train": 12936, "query": 3368, "gallery": 15913}
PAPER_MODELS = 4  # plain, lfm, dropout, cutout
PAPER_EPS = 5 / 255


def preset_attack_steps() -> int:
    """Attack steps per query and model of `--preset lfm-paper`: each attack run's (auto-reid: each
    member's) schedule at 5/255, once however many cells make it (the paper's SMA-15 is auto-reid's
    cosine SMA: robustbench_lfm/shared_runs.py), twice: the cell and its large-eps probe, which runs
    the same schedule scaled (the probe at eps 0 runs no search)."""
    preset = tomllib.loads((files("robustbench_lfm") / "presets" / "lfm-paper.toml").read_text())
    distance = preset.get("distance", "cosine")
    runs: dict[tuple, int] = {}
    for item in preset["attacks"]:
        written = resolve_attack(item)
        attack = written.build(0)
        parts = (
            [AttackSpec.create(n, o) for n, o in attack.member_options()]
            if isinstance(attack, attacks.Ensemble)
            else [written]
        )
        for part in parts:
            one = part.build(0)
            runs[(part.name, searched_options(part, one, PAPER_EPS, distance))] = one.schedule_for(PAPER_EPS, "reid")[0]
    return 2 * sum(runs.values())


@dataclass(frozen=True)
class Timer:
    """How each figure is measured: the median of `iters` runs after `warmup` untimed ones."""

    device: torch.device
    iters: int
    warmup: int

    def seconds(self, fn: Callable[[], object]) -> float:
        """Median seconds of one call of `fn`, the device synchronised around each."""
        times = []
        for i in range(self.iters + self.warmup):
            self._sync()
            t0 = time.perf_counter()
            fn()
            self._sync()
            if i >= self.warmup:
                times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def new_net(device: torch.device) -> models.SiteNet:
    torch.manual_seed(0)
    net = models.create_model("plain", MARKET["train_ids"], "reid", backbone="resnet50")
    return net.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def train_rate(timer: Timer, precision: str, batch: int) -> float:
    """Training images per second."""
    device = timer.device
    recipe = load_recipe("paper", "reid")
    net = new_net(device).train()
    opt, step = make_optimizer(net, recipe), standard_step(recipe)
    x = torch.rand(batch, 3, 256, 128, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.arange(batch, device=device) // recipe.images_per_id  # P ids x K images

    def one() -> None:
        with autocast(device, precision):
            step(net, opt, x, y)

    return batch / timer.seconds(one)


def pgd_rate(timer: Timer, queries: int) -> float:
    """PGD-20 queries per second (fp32)."""
    device = timer.device
    net = new_net(device).eval()
    x = torch.rand(queries, 3, 256, 128, device=device).contiguous(memory_format=torch.channels_last)
    pids = torch.arange(queries, device=device) % 50
    guides = attacks.Guides(embed_images(net, x).to(device), pids)
    attack = resolve_attack("pgd:steps=20", "reid").build(0)
    context = attacks.AttackContext("reid", labels=pids, guides=guides, distance="cosine")
    gen = torch.Generator(device).manual_seed(0)
    return queries / timer.seconds(lambda: attack(net, x, context, eps=8 / 255, generator=gen))


def feature_rate(timer: Timer, precision: str, batch: int) -> float:
    """Feature extraction images per second."""
    device = timer.device
    net = new_net(device).eval()
    x = torch.rand(batch, 3, 256, 128, device=device).contiguous(memory_format=torch.channels_last)
    return batch / timer.seconds(lambda: embed_images(net, x, precision))


def epoch_images() -> int:
    """Images in one P x K epoch of Market-1501's training split under the paper recipe."""
    labels = torch.arange(MARKET["train"]) % MARKET["train_ids"]
    split = ReIDSplit(torch.zeros(len(labels), 3, 1, 1, dtype=torch.uint8), labels, torch.zeros_like(labels))
    return images_per_epoch(ReIDDataset("market1501", split, split, split), load_recipe("paper", "reid"))


def paper_hours(train: float, pgd: float, features: float) -> dict[str, float]:
    """Hours of `--preset lfm-paper` on this device at the measured rates, per stage."""
    recipe = load_recipe("paper", "reid")
    per_step = 1 / (20 * pgd)  # seconds per query per attack step
    return {
        "train": PAPER_MODELS * recipe.epochs * epoch_images() / train / 3600,
        "features": PAPER_MODELS * (MARKET["query"] + MARKET["gallery"]) / features / 3600,
        "attacks": PAPER_MODELS * MARKET["query"] * preset_attack_steps() * per_step / 3600,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--train-batch", type=int, default=64, help="P x K = 16 x 4, the paper recipe's batch")
    ap.add_argument("--queries", type=int, default=128, help="queries per PGD batch")
    ap.add_argument("--feature-batch", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs before the timed ones")
    args = ap.parse_args()
    device = torch.device(args.device)
    configure_determinism(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}; {name}; resnet50 at 256x128; median of {args.iters} iterations")
    timer = Timer(device, args.iters, args.warmup)
    rates = {
        "train fp32": train_rate(timer, "fp32", args.train_batch),
        "train bf16": train_rate(timer, "bf16", args.train_batch),
        "pgd-20 fp32": pgd_rate(timer, args.queries),
        "features fp32": feature_rate(timer, "fp32", args.feature_batch),
        "features bf16": feature_rate(timer, "bf16", args.feature_batch),
    }
    units = {"train": "images/s", "pgd-20": "queries/s", "features": "images/s"}
    for key, rate in rates.items():
        print(f"  {key:<14} {rate:10.1f} {units[key.split()[0]]}")
    print(f"  bf16 / fp32: training x{rates['train bf16'] / rates['train fp32']:.2f}, "
          f"features x{rates['features bf16'] / rates['features fp32']:.2f}")  # fmt: skip
    for precision in ("fp32", "bf16"):
        hours = paper_hours(rates[f"train {precision}"], rates["pgd-20 fp32"], rates[f"features {precision}"])
        parts = ", ".join(f"{k} {v:.2f}" for k, v in hours.items())
        print(f"--preset lfm-paper with --precision {precision}: {sum(hours.values()):.1f} device-hours ({parts})")


if __name__ == "__main__":
    main()
