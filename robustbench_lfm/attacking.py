"""Attacked embeddings of one cell: white-box on the target, or transferred from a surrogate.

The perturbed side (query or gallery, the attack's `side`) is attacked in batches; the other
side stays clean. Guides for the metric attacks are the attacking model's clean query embeddings
and identities (reid.md D5: the attacker knows the query set). With `--quantize` the adversarial
images are rounded to 8 bits, within the budget, before the target sees them.

Classification cells attack the test images with their true labels and count correct predictions;
clean cells (attack None) and eps 0 score the images as they are.

White-box cells embed each adversarial batch at once and keep no images. Transfer cells craft
the images once per (surrogate, attack, eps, seed) and store them in the cache directory
(safetensors, float32, keyed by content), so every target, in this run or a later one, is
evaluated on the very same images.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

import attacks
from robustbench_lfm.datasets import ClassificationDataset, Dataset, ReIDDataset, as_float
from robustbench_lfm.files import read_sidecar, write_verified
from robustbench_lfm.hashing import content_hash
from robustbench_lfm.metrics import AccuracyResult, pairwise_distance
from robustbench_lfm.spec import Cell, RunSpec


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
    _gallery_gallery: Tensor | None = None

    def gallery_distances(self, metric: str) -> Tensor:
        """Gallery x gallery distances for re-ranking: the gallery stays clean, so computed once."""
        if self._gallery_gallery is None:
            self._gallery_gallery = pairwise_distance(self.gallery, self.gallery, metric)
        return self._gallery_gallery


@dataclass(frozen=True)
class EvalContext:
    """What every cell of one trained model shares: the run, its data and device, the evaluated
    model (`target`), the model that crafts the adversarial images and the target's clean features.

    Attributes:
        clean: the target's clean query and gallery embeddings (re-ID); None for classification.
    """

    spec: RunSpec
    data: Dataset
    device: torch.device
    target: nn.Module
    attacker: Attacker
    clean: CleanFeatures | None = None


def to_model_input(images: Tensor, device: torch.device) -> Tensor:
    """uint8 images to float [0, 1] on `device`, in the channels-last layout the models run in."""
    return as_float(images).to(device).contiguous(memory_format=torch.channels_last)


def embed_images(net: nn.Module, images: Tensor) -> Tensor:
    """Embeddings of float images already on the model's device, under inference mode."""
    with torch.inference_mode():
        return net(images).float().cpu()


def attacked_accuracy(ctx: EvalContext, cell: Cell, attack: attacks.Attack | None) -> AccuracyResult:
    """Which test images the target classifies correctly, clean (`attack` None) or attacked.

    Adversarial images are crafted on `ctx.attacker.net` (the target itself, or the surrogate),
    batch by batch, from a generator seeded by the cell's seed, so a transfer attack gives every
    target the same images.
    """
    spec, data, device, attacker = ctx.spec, ctx.data, ctx.device, ctx.attacker
    assert isinstance(data, ClassificationDataset)
    gen = torch.Generator(device).manual_seed(cell.seed)
    correct = []
    for images, labels in zip(
        torch.split(data.test.images, spec.batch_size), torch.split(data.test.labels, spec.batch_size), strict=True
    ):
        x, y = to_model_input(images, device), labels.to(device)
        if attack is not None:
            context = attacks.AttackContext("classification", labels=y)
            x = attack(attacker.net, x, context, eps=cell.eps, generator=gen)
            if spec.threat.quantize:
                x = attacks.quantize(x, to_model_input(images, device), cell.eps, attack.norm)
        with torch.inference_mode():
            correct.append((ctx.target(x).argmax(1) == y).cpu())
    return AccuracyResult(torch.cat(correct))


def attacked_side(ctx: EvalContext, cell: Cell, attack: attacks.Attack) -> Tensor:
    """The target's embeddings of the perturbed side (query or gallery) under the cell's attack."""
    batches = (
        _adversarial_batches(ctx, cell, attack)
        if not ctx.attacker.key or cell.eps == 0  # eps 0 returns the clean images: nothing to store
        else _stored_batches(ctx, cell, attack)
    )
    return torch.cat([embed_images(ctx.target, x_adv) for x_adv in batches])


def _adversarial_batches(ctx: EvalContext, cell: Cell, attack: attacks.Attack) -> Iterator[Tensor]:
    """Adversarial images of the perturbed side, batch by batch, crafted on the attacker."""
    spec, data, device, attacker = ctx.spec, ctx.data, ctx.device, ctx.attacker
    assert isinstance(data, ReIDDataset)
    split = data.query if attack.side == "query" else data.gallery
    guides = attacks.Guides(attacker.query_features, data.query.pids)
    gen = torch.Generator(device).manual_seed(cell.seed)
    for images, pids in zip(
        torch.split(split.images, spec.batch_size), torch.split(split.pids, spec.batch_size), strict=True
    ):
        x = to_model_input(images, device)
        context = attacks.AttackContext(
            "reid", labels=pids.to(device), guides=guides, distance=spec.evaluation.distance
        )
        x_adv = attack(attacker.net, x, context, eps=cell.eps, generator=gen)
        if spec.threat.quantize:
            x_adv = attacks.quantize(x_adv, x, cell.eps, attack.norm)
        yield x_adv


def _stored_batches(ctx: EvalContext, cell: Cell, attack: attacks.Attack) -> Iterator[Tensor]:
    """The surrogate's adversarial images, crafted on first use and read back from the cache."""
    path = _stored_path(ctx.spec, cell, ctx.attacker)
    images = _read_stored(path)
    if images is None:
        images = torch.cat([b.cpu() for b in _adversarial_batches(ctx, cell, attack)])
        stored = {"images": images.contiguous()}
        write_verified(path, lambda tmp: save_file(stored, str(tmp)), {"surrogate": ctx.attacker.key})
    for chunk in torch.split(images, ctx.spec.batch_size):
        yield chunk.to(ctx.device).contiguous(memory_format=torch.channels_last)


def _read_stored(path: Path) -> Tensor | None:
    """Stored adversarial images, or None (with a warning when the file is damaged: recrafted)."""
    try:
        if read_sidecar(path) is None:
            return None
        return load_file(path)["images"]
    except Exception as err:  # truncated, not safetensors, or another layout: craft them again
        warnings.warn(f"stored adversarial images {path} are unreadable ({err}); crafting them again", stacklevel=2)
        return None


def _stored_path(spec: RunSpec, cell: Cell, attacker: Attacker) -> Path:
    content = {"surrogate": attacker.key, "attack": cell.attack, "eps": cell.eps, "seed": cell.seed,
               "probe_of": cell.probe_of, "quantize": spec.threat.quantize, "data": spec.data.key(),
               "flip": spec.evaluation.flip, "distance": spec.evaluation.distance,
               "batch": spec.batch_size}  # fmt: skip
    return spec.cache_dir / "adversarial" / f"{content_hash(content, 16)}.safetensors"
