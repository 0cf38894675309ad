"""Attacked embeddings of one cell: white-box on the target, or transferred from a surrogate.

The perturbed side (query or gallery, the attack's `side`) is attacked in batches; the other
side stays clean. Guides for the metric attacks are the attacking model's clean query embeddings
and identities (reid.md D5: the attacker knows the query set). With `--quantize` the adversarial
images are rounded to 8 bits, within the budget, before the target sees them.

Classification cells attack the test images with their true labels and count correct predictions;
clean cells (attack None) and eps 0 score the images as they are. A white-box attack runs only on
the images the target classifies correctly clean (`RunSpec.searches_right_only`), as AutoAttack does.

White-box cells embed each adversarial batch at once and keep no images. Transfer cells craft
the images once per (surrogate, attack, eps, seed) and store them in the cache directory
(safetensors keyed by content: uint8 when 8-bit quantized, else the perturbation in float16; see
`encode_adversarial`), so every target, in this run or a later one, is evaluated on the very same
images.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from robustbench_lfm import attacks, estimate, progress
from robustbench_lfm.attacks.base import checked_output
from robustbench_lfm.attacks.corrupt import Corrupt
from robustbench_lfm.datasets import ClassificationDataset, ClassSplit, Dataset, ReIDDataset, as_float, corrupted
from robustbench_lfm.faults import ModelError
from robustbench_lfm.files import read_sidecar, write_verified
from robustbench_lfm.hashing import content_hash
from robustbench_lfm.metrics import AccuracyResult
from robustbench_lfm.precision import autocast
from robustbench_lfm.spec import Cell, RunSpec

SIDE_SEED = 7919  # added to the seed of the gallery's generator when both sides are perturbed
SHORT_TAIL = 4  # a last batch under 1/SHORT_TAIL of --batch-size joins the batch before it


def batches(items: Tensor, size: int) -> list[Tensor]:
    """`items` in batches of `size` along the first dimension, a last batch shorter than a quarter
    of `size` joined to the one before (so no batch exceeds 1.25 x size).

    A short tail costs far more per image than a full batch: one PGD gradient on 21 images of
    synthreid takes 50 ms on a 2-core CPU, on 256 images 231 ms, on 277 at once 239 ms. The
    queries (277) and the gallery (1574) of the default data end in such a tail at the default 256.
    """
    parts = list(torch.split(items, size))
    if len(parts) > 1 and SHORT_TAIL * len(parts[-1]) < size:
        parts[-2:] = [items[(len(parts) - 2) * size :]]
    return parts


@dataclass
class Attacker:
    """The model that crafts adversarial images, and its clean query embeddings (the guides).

    Attributes:
        net: the attacked model (white-box) or the surrogate (transfer).
        query_features: its clean query embeddings.
        key: the surrogate's checkpoint key ("" when white-box): names the stored images.
    """

    net: nn.Module
    query_features: Tensor
    key: str = ""


@dataclass
class CleanFeatures:
    """Clean query and gallery embeddings of one trained model."""

    query: Tensor
    gallery: Tensor


@dataclass(frozen=True)
class EvalContext:
    """What every cell of one trained model shares: the run, its data and device, the evaluated
    model (`target`), the model that crafts the adversarial images and the target's clean features.

    Attributes:
        clean: the target's clean query and gallery embeddings (re-ID); None for classification.
        scored: where the scored queries or test images sit in their whole split (--n-eval).
        n_split: the size of that whole split.
        rescored: the clean embeddings of each further scoring pass (--score-repeats above 1: a
            model random in eval mode), in pass order after `clean`.
        label: the group's `model@seedN`, which its progress events carry (robustbench_lfm/progress.py).
    """

    spec: RunSpec
    data: Dataset
    device: torch.device
    target: nn.Module
    attacker: Attacker
    clean: CleanFeatures | None = None
    scored: Tensor | None = None
    n_split: int = 0
    rescored: tuple[CleanFeatures, ...] = ()
    label: str = ""

    @property
    def passes(self) -> int:
        """Scoring passes per cell (--score-repeats)."""
        return self.spec.evaluation.score_repeats


def to_model_input(images: Tensor, device: torch.device) -> Tensor:
    """uint8 images to float [0, 1] on `device`, in the channels-last layout the models run in.

    On a GPU the uint8 batch is copied (from pinned memory, without blocking) and converted there:
    a quarter of the bytes a float32 copy would move."""
    if device.type == "cuda":
        images = images.pin_memory().to(device, non_blocking=True)
    return as_float(images.to(device)).contiguous(memory_format=torch.channels_last)


def embed_images(net: nn.Module, images: Tensor, precision: str = "fp32") -> Tensor:
    """float32 embeddings of float images already on the model's device, under inference mode,
    computed in `precision` (robustbench_lfm/precision.py)."""
    with torch.inference_mode(), autocast(images.device, precision):
        return net(images).float().cpu()


def _attacked(ctx: EvalContext, attack: attacks.Attack, x: Tensor, context: attacks.AttackContext, cell: Cell,
              gen: torch.Generator, scored: int | None = None) -> Tensor:  # fmt: skip
    """`attack` on the attacker's model in the run's attack precision, 8-bit rounded with --quantize.

    An attack that replaces `Attack.__call__` (a corruption, a plugin's threat) gets the same
    guards as the base class gives a search: its own copy of `x`, its errors and a non-finite or
    misshapen output raised as AttackError (the cell fails), and its output kept in [0, 1], the
    change that took recorded in `projected` (the sanity check `in-budget`). `scored`: the scored
    images the batch stands for, for the sweep's bar (the whole batch, where the search runs only
    on the images the target gets right clean); `len(x)` by default."""
    net, scored = ctx.attacker.net, len(x) if scored is None else scored
    try:
        with (
            autocast(x.device, ctx.spec.evaluation.attack_precision),
            progress.crafting(
                net, ctx.label, cell, scored, lambda: estimate.cell_passes(ctx.spec, cell, _classes(ctx.data))
            ) as counted,
        ):
            x_adv = attack(net, x.clone(), context, eps=cell.eps, generator=gen)
    except attacks.AttackError:
        raise
    except Exception as err:  # an attack's own __call__: this cell fails, not the run
        raise attacks.AttackError(f"attack {attack.name} raised {type(err).__name__}: {err}") from err
    x_adv = checked_output(attack.name, x_adv, x).float()
    _crafted(ctx, cell, scored, counted.share() if counted is not None else None)
    if not attack.budgeted:
        inside = x_adv.clamp(0, 1)
        attack.projected = max(attack.projected or 0.0, float((x_adv - inside).abs().amax()) if x_adv.numel() else 0.0)
        x_adv = inside
    return attacks.quantize(x_adv, x, cell.eps, attack.norm) if ctx.spec.threat.quantize else x_adv


def _crafted(ctx: EvalContext, cell: Cell, scored: int, share: float | None) -> None:
    """Tell the sweep's bar a batch standing for `scored` scored images is done, with the share of
    its most passes it ran where the attack's work is known only within bounds (robustbench_lfm/progress.py)."""
    progress.report(progress.Images(ctx.label, cell, scored, share if estimate.bounded(ctx.spec, cell) else None))


def _classes(data: Dataset) -> int:
    """The classes a model of `data` is built with (AutoAttack's passes depend on them)."""
    return data.num_classes if isinstance(data, ClassificationDataset) else data.num_train_ids


def attacked_accuracy(ctx: EvalContext, cell: Cell, attack: attacks.Attack | None) -> list[AccuracyResult]:
    """Which test images the target classifies correctly, clean (`attack` None) or attacked, in
    each scoring pass (one, or --score-repeats forwards of the same images).

    Adversarial images are crafted on `ctx.attacker.net` (the target itself, or the surrogate),
    batch by batch, from a generator seeded by the cell's seed, so a transfer attack gives every
    target the same images. A white-box attack within a budget (eps > 0, one scoring pass) runs
    only on the images the target classifies correctly clean, and the others count as wrong
    (`RunSpec.searches_right_only`): AutoAttack's protocol (Croce & Hein, ICML 2020), which spends
    no search on an image that is already lost.
    """
    spec, data, device = ctx.spec, ctx.data, ctx.device
    assert isinstance(data, ClassificationDataset)
    gen = torch.Generator(device).manual_seed(cell.seed)
    fit = attacks.Fit(data.train.images, data.train.labels)  # what a universal perturbation learns on
    test = data.test
    if isinstance(attack, Corrupt) and attack.source == "published":  # the published images, as they are
        test, attack = _published(ctx, attack), None
    right_only = ctx.spec.searches_right_only(cell)
    correct: list[list[Tensor]] = [[] for _ in range(ctx.passes)]
    for images, labels in zip(
        batches(test.images, spec.batch_size), batches(test.labels, spec.batch_size), strict=True
    ):
        x, y = to_model_input(images, device), labels.to(device)
        if attack is not None and right_only:
            right = _classified(ctx, x, y, "clean").clone()  # a normal tensor: written in place below
            kept = right.nonzero().squeeze(1)
            if len(kept):
                x_kept = x[kept].contiguous(memory_format=torch.channels_last)
                context = attacks.AttackContext("classification", labels=y[kept], fit=fit)
                x_adv = _attacked(ctx, attack, x_kept, context, cell, gen, scored=len(x))
                right[kept] = _classified(ctx, x_adv, y[kept], "attacked")
            else:  # every image lost clean: no search, and the batch done
                _crafted(ctx, cell, len(x), 0.0)
            correct[0].append(right.cpu())
            continue
        if attack is not None:
            context = attacks.AttackContext("classification", labels=y, fit=fit)
            x = _attacked(ctx, attack, x, context, cell, gen)
        for hits in correct:
            hits.append(_classified(ctx, x, y, "attacked" if attack else "clean").cpu())
    return [AccuracyResult(torch.cat(hits)) for hits in correct]


def _classified(ctx: EvalContext, x: Tensor, y: Tensor, which: str) -> Tensor:
    """Which of the images `x` the target classifies as `y` (bool, on x's device), in the
    evaluation's precision; non-finite logits are a ModelError naming the `which` images."""
    with torch.inference_mode(), autocast(x.device, ctx.spec.evaluation.precision):
        logits = ctx.target(x)
    if not torch.isfinite(logits).all():
        raise ModelError(f"the model's logits of the {which} test images are not finite")
    return logits.argmax(1) == y


def _published(ctx: EvalContext, attack: Corrupt) -> ClassSplit:
    """The published corrupted images standing for the scored test images (robustbench_lfm/datasets/corrupted.py)."""
    assert isinstance(ctx.data, ClassificationDataset) and ctx.scored is not None
    scored = ctx.spec.evaluation.test or ctx.spec.data  # the dataset whose test split is scored
    return corrupted.published_split(
        scored.name, scored.root, attack.type, attack.severity, ctx.data.test, ctx.scored, ctx.n_split
    )


def attacked_side(ctx: EvalContext, cell: Cell, attack: attacks.Attack, side: str) -> list[Tensor]:
    """The target's embeddings of `side` (query or gallery) under the cell's attack, one tensor per
    scoring pass: each pass embeds the same adversarial images afresh (--score-repeats)."""
    stored = ctx.attacker.key and cell.threat.surrogate is not None and cell.eps != 0  # eps 0: the clean images
    batches = _stored_batches(ctx, cell, attack, side) if stored else _adversarial_batches(ctx, cell, attack, side)
    passes: list[list[Tensor]] = [[] for _ in range(ctx.passes)]
    for x_adv in batches:
        for embedded in passes:
            embedded.append(embed_images(ctx.target, x_adv, ctx.spec.evaluation.precision))
    return [torch.cat(embedded) for embedded in passes]


def _adversarial_batches(ctx: EvalContext, cell: Cell, attack: attacks.Attack, side: str) -> Iterator[Tensor]:
    """Adversarial images of `side`, batch by batch, crafted on the attacker. Each side draws from
    its own generator, seeded by the cell's seed and the side."""
    spec, data, device, attacker = ctx.spec, ctx.data, ctx.device, ctx.attacker
    assert isinstance(data, ReIDDataset)
    split = data.query if side == "query" else data.gallery
    guides = attacks.Guides(attacker.query_features, data.query.pids)
    fit = attacks.Fit(data.train.images, data.train_labels())  # what a universal perturbation learns on
    offset = SIDE_SEED if side == "gallery" and len(attack.sides()) > 1 else 0
    gen = torch.Generator(device).manual_seed(cell.seed + offset)
    for images, pids in zip(batches(split.images, spec.batch_size), batches(split.pids, spec.batch_size), strict=True):
        x = to_model_input(images, device)
        context = attacks.AttackContext(
            "reid", labels=pids.to(device), guides=guides, distance=spec.evaluation.distance, fit=fit
        )
        yield _attacked(ctx, attack, x, context, cell, gen)


def _stored_batches(ctx: EvalContext, cell: Cell, attack: attacks.Attack, side: str) -> Iterator[Tensor]:
    """The surrogate's adversarial images, crafted on first use and read back from the cache; the
    first target sees the stored (decoded) images too, so every target sees the same ones."""
    path = _stored_path(ctx.spec, cell, ctx.attacker)
    assert isinstance(ctx.data, ReIDDataset)
    clean = (ctx.data.query if side == "query" else ctx.data.gallery).images
    stored = _read_stored(path)
    if stored is None:
        encoded = [
            encode_adversarial(x_adv, x, ctx.spec.threat.quantize)
            for x_adv, x in zip(
                _adversarial_batches(ctx, cell, attack, side), batches(clean, ctx.spec.batch_size), strict=True
            )
        ]
        stored = {k: torch.cat([e[k] for e in encoded]) for k in encoded[0]}
        write_verified(path, lambda tmp: save_file(stored, str(tmp)), {"surrogate": ctx.attacker.key})
    start = 0
    for images in batches(clean, ctx.spec.batch_size):
        part = {k: v[start : start + len(images)] for k, v in stored.items()}
        start += len(images)
        yield decode_adversarial(part, to_model_input(images, ctx.device), cell.eps, attack.norm)


def encode_adversarial(x_adv: Tensor, clean: Tensor, quantized: bool) -> dict[str, Tensor]:
    """Adversarial images in their stored form, on the CPU.

    8-bit quantized images (`--quantize`) are exactly k/255 (attacks.quantize), so uint8 holds them
    bit for bit: 1 byte per pixel. Other images are stored as their perturbation from the clean
    uint8 image in float16: 2 bytes per pixel, float32's 4 halved. float16 rounds a value to 11
    significant bits, so each pixel of the perturbation is off by at most 2^-11 of its size (and by
    2^-25 below 2^-14): at most eps / 2048, e.g. 0.004/255 at eps 8/255, far below one 8-bit level.
    """
    x_adv = x_adv.float().cpu().contiguous()  # the NCHW layout safetensors stores
    if quantized:
        return {"images": torch.round(x_adv * 255).to(torch.uint8)}
    return {"delta": (x_adv - as_float(clean)).to(torch.float16)}


def decode_adversarial(stored: dict[str, Tensor], x: Tensor, eps: float, norm: str) -> Tensor:
    """The images `encode_adversarial` stored, on x's device and in channels-last layout. A float16
    perturbation is projected back onto the budget and [0, 1] (attacks.project): the exact images
    lie in both, so the projection keeps every bound and only moves the rounded images closer."""
    if "images" in stored:
        return to_model_input(stored["images"], x.device)
    delta = stored["delta"].to(x.device, non_blocking=True).float()
    return attacks.project(x + delta, x, eps, norm).contiguous(memory_format=torch.channels_last)


def _read_stored(path: Path) -> dict[str, Tensor] | None:
    """Stored adversarial images, or None (with a warning when the file is damaged: recrafted)."""
    try:
        if read_sidecar(path) is None:
            return None
        stored = load_file(path)
    except Exception as err:  # truncated, not safetensors, or another layout: craft them again
        warnings.warn(f"stored adversarial images {path} are unreadable ({err}); crafting them again", stacklevel=2)
        return None
    kinds = {k: v.dtype for k, v in stored.items()}
    if kinds not in ({"images": torch.uint8}, {"delta": torch.float16}):
        warnings.warn(f"stored adversarial images {path} hold {sorted(stored)}; crafting them again", stacklevel=2)
        return None
    return stored


def _stored_path(spec: RunSpec, cell: Cell, attacker: Attacker) -> Path:
    """Where the images of this (surrogate, attack, eps, seed, data, evaluation) are stored: the
    evaluation key brings flip, distance, the --n-eval subset and the precisions."""
    content = {"surrogate": attacker.key, "attack": cell.attack, "eps": cell.eps, "seed": cell.seed,
               "probe_of": cell.probe_of, "quantize": spec.threat.quantize, "data": spec.data.key(),
               "evaluation": spec.evaluation.key(), "batch": spec.batch_size, "encoding": 2}  # fmt: skip
    return spec.cache_dir / "adversarial" / f"{content_hash(content, 16)}.safetensors"
