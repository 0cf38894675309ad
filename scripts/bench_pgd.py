"""PGD overhead benchmark: our PGD-10 against torchattacks' PGD-10 and a minimal hand-written loop.

    python scripts/bench_pgd.py [--batch 64] [--repeats 5] [--backbone resnet-mini] [--device cpu]

All three run side by side in one process on the same model (a registered re-ID backbone with its
identity classifier as the logits) and the same images, interleaved, the median of `repeats`
timed calls each. Our attack pays for its contract (input checks, eval mode, parameter gradients
off, a final projection); the printed ratio is that overhead over the bare loop (target: at most
1.10). The same comparison follows for the re-ID objective (SMA), where torchattacks has no
equivalent. A correctness line checks that the three agree step for step without random start.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robustbench_lfm import attacks, models

EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 10


class Logits(nn.Module):
    """A re-ID network's identity logits in eval mode: a classifier for the classification attacks."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net.classifier(self.net(x))


def hand_pgd(model: nn.Module, x: Tensor, loss: Callable[[Tensor], Tensor], start: bool) -> Tensor:
    """The minimal PGD loop: no checks, no mode handling."""
    x_adv = (x + torch.empty_like(x).uniform_(-EPS, EPS)).clamp(0, 1) if start else x.clone()
    for _ in range(STEPS):
        x_adv.requires_grad_(True)
        (g,) = torch.autograd.grad(loss(x_adv), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + ALPHA * g.sign(), x - EPS), x + EPS).clamp(0, 1)
    return x_adv


def timed(fn: Callable[[], Tensor]) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def race(contenders: dict[str, Callable[[], Tensor]], repeats: int) -> dict[str, float]:
    """Median seconds per call, the contenders interleaved round by round (after one warm-up each)."""
    for fn in contenders.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            times[name].append(timed(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def report(title: str, medians: dict[str, float], reference: str) -> None:
    print(title)
    for name, t in medians.items():
        print(f"  {name:<28} {t * 1000:8.1f} ms   {t / medians[reference]:.3f}x the hand-written loop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backbone", default="resnet-mini")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    import torchattacks

    device = torch.device(args.device)
    torch.manual_seed(0)
    net = models.create_model("plain", 100, backbone=args.backbone).to(device).eval()
    clf = Logits(net).eval()
    h, w = models.get_input_size(args.backbone)
    x = torch.rand(args.batch, 3, h, w, device=device).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y = clf(x).argmax(1)
    ctx = attacks.AttackContext("classification", labels=y)
    ours = attacks.create_attack("pgd", steps=STEPS, step_size=ALPHA)
    theirs = torchattacks.PGD(clf, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)
    print(f"{args.backbone} {h}x{w}, batch {args.batch}, PGD-{STEPS} eps 8/255 alpha 2/255, {args.device}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")  # fmt: skip

    def ce(x_adv: Tensor) -> Tensor:
        return F.cross_entropy(clf(x_adv), y)

    medians = race(
        {
            "hand-written loop": lambda: hand_pgd(clf, x, ce, start=True),
            "ours (pgd)": lambda: ours(clf, x, ctx, eps=EPS),
            "torchattacks.PGD": lambda: theirs(x, y),
        },
        args.repeats,
    )
    report("classification, cross-entropy:", medians, "hand-written loop")

    reid = attacks.AttackContext("reid")
    with torch.no_grad():
        f0 = F.normalize(net(x), dim=1)

    def sma(x_adv: Tensor) -> Tensor:
        return (F.normalize(net(x_adv), dim=1) - f0).pow(2).sum()

    medians = race(
        {
            "hand-written loop": lambda: hand_pgd(net, x, sma, start=True),
            "ours (pgd, sma)": lambda: ours(net, x, reid, eps=EPS),
        },
        args.repeats,
    )
    report("re-ID, SMA objective (torchattacks has none):", medians, "hand-written loop")

    fixed = attacks.create_attack("pgd", steps=STEPS, step_size=ALPHA, random_start=False)
    a = fixed(clf, x, ctx, eps=EPS)
    b = torchattacks.PGD(clf, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=False)(x, y)
    c = hand_pgd(clf, x, ce, start=False)
    print(f"no random start: |ours - torchattacks| {(a - b).abs().max():.1e}, |ours - hand| {(a - c).abs().max():.1e}")


if __name__ == "__main__":
    main()
