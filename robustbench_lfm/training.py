"""Training: one loop for both tasks, a pluggable training method per model (robustbench_lfm/methods).

Re-ID batches come from a P x K identity sampler (Hermans et al., arXiv 1703.07737) and the
standard loss is the strong baseline's (Luo et al., CVPRW 2019; docs/reference/reid.md C2): ID loss with
label smoothing plus batch-hard triplet loss on the pooled feature. Classification batches are
shuffled chunks of the train split and the loss is cross-entropy. Both use random flip and
pad-crop, the recipe's optimizer (Adam or SGD) with linear warm-up and step decay. All randomness
(sampling, augmentation, regularizers, the method's own draws, initialisation) comes from the
seed, so a (model, data, recipe, seed) gives the same weights on the same machine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_lfm.datasets import ClassificationDataset, Dataset, as_float
from robustbench_lfm.faults import ComponentError
from robustbench_lfm.models import SiteNet
from robustbench_lfm.precision import autocast
from robustbench_lfm.recipe import TrainRecipe


class TrainingError(ComponentError):
    """Training failed (e.g. the loss became NaN); the message names the cell and the step. The
    model's cells fail, the run's others go on (robustbench_lfm/faults.py)."""


@dataclass(frozen=True)
class TrainStats:
    """What a training run reports: final loss, seconds per epoch, total seconds."""

    final_loss: float
    epoch_seconds: tuple[float, ...]
    total_seconds: float


def pk_batches(labels: Tensor, p: int, k: int, g: torch.Generator) -> list[Tensor]:
    """One epoch of P x K batches (Hermans et al.): each identity's images, shuffled, in chunks of K.

    An identity with fewer than K images is topped up by sampling its images again; chunks of
    distinct identities are grouped P at a time; a last incomplete group is dropped.
    """
    order = torch.randperm(len(labels), generator=g)
    labels_sorted, idx = labels[order].sort(stable=True)
    chunks: list[Tensor] = []
    for ident_idx in torch.split(order[idx], torch.bincount(labels_sorted).tolist()):
        if len(ident_idx) == 0:
            continue
        if len(ident_idx) < k:
            extra = ident_idx[torch.randint(len(ident_idx), (k - len(ident_idx),), generator=g)]
            ident_idx = torch.cat([ident_idx, extra])
        chunks += list(torch.split(ident_idx[: len(ident_idx) // k * k], k))
    chunks = [chunks[i] for i in torch.randperm(len(chunks), generator=g)]
    batches: list[Tensor] = []
    pending: list[Tensor] = []
    for chunk in chunks:  # greedy grouping of P chunks with distinct identities
        if all(labels[c[0]] != labels[chunk[0]] for c in pending):
            pending.append(chunk)
        if len(pending) == p:
            batches.append(torch.cat(pending))
            pending = []
    return batches


def augment(x: Tensor, pad: int, flip: bool, g: torch.Generator) -> Tensor:
    """Random horizontal flip (p = 0.5) and zero-pad + random crop back to size, per sample."""
    b, _, h, w = x.shape
    if flip:
        flipped = torch.rand(b, generator=g) < 0.5
        x = torch.where(flipped[:, None, None, None], x.flip(-1), x)
    if pad > 0:
        padded = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=g).tolist()
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=g).tolist()
        # one slice per image: a quarter of the time of one gather over (b, c, h, w) index tensors
        x = torch.stack([image[:, y : y + h, c : c + w] for image, y, c in zip(padded, dy, dx, strict=True)])
    return x


def batch_hard_triplet(features: Tensor, labels: Tensor, margin: float) -> Tensor:
    """Batch-hard triplet loss: hardest positive vs hardest negative, Euclidean (not squared)."""
    dist = torch.cdist(features, features).clamp(min=1e-12)
    same = labels[:, None] == labels[None, :]
    hardest_pos = (dist * same).amax(1)
    hardest_neg = dist.masked_fill(same, float("inf")).amin(1)
    return F.relu(hardest_pos - hardest_neg + margin).mean()


def lr_factor(recipe: TrainRecipe, epoch: int) -> float:
    """Linear warm-up from warmup_factor to 1 over warmup_epochs, then x gamma at each milestone."""
    if epoch < recipe.warmup_epochs:
        return recipe.warmup_factor + (1 - recipe.warmup_factor) * epoch / recipe.warmup_epochs
    return recipe.gamma ** sum(epoch >= m for m in recipe.milestones)


def task_loss(output: Tensor | tuple[Tensor, Tensor], y: Tensor, recipe: TrainRecipe) -> Tensor:
    """The standard loss of a train-mode output: re-ID (logits, pooled) -> ID + triplet; logits -> CE."""
    if isinstance(output, tuple):
        logits, feat = output
        ce = F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)
        return ce + batch_hard_triplet(feat, y, recipe.triplet_margin)
    return F.cross_entropy(output, y, label_smoothing=recipe.label_smoothing)


def train_split(data: Dataset) -> tuple[Tensor, Tensor]:
    """(uint8 train images, 0-based training labels) of either task's dataset."""
    if isinstance(data, ClassificationDataset):
        return data.train.images, data.train.labels
    return data.train.images, data.train_labels()


def epoch_batches(data: Dataset, labels: Tensor, recipe: TrainRecipe, g: torch.Generator) -> list[Tensor]:
    """One epoch of index batches: P x K identity batches (re-ID) or shuffled chunks (classification;
    a last chunk smaller than half a batch is dropped so BatchNorm never sees a tiny batch)."""
    if isinstance(data, ClassificationDataset):
        chunks = list(torch.split(torch.randperm(len(labels), generator=g), recipe.batch_size))
        if len(chunks) > 1 and 2 * len(chunks[-1]) < recipe.batch_size:
            chunks.pop()
        return chunks
    p = min(recipe.ids_per_batch, data.num_train_ids)  # small datasets: fewer identities per batch
    return pk_batches(labels, p, recipe.images_per_id, g)


def images_per_epoch(data: Dataset, recipe: TrainRecipe) -> int:
    """Images one epoch of `recipe` trains on (P x K batches cover about the whole re-ID split)."""
    labels = train_split(data)[1]
    return sum(len(b) for b in epoch_batches(data, labels, recipe, torch.Generator().manual_seed(0)))


def make_optimizer(model: nn.Module, recipe: TrainRecipe) -> torch.optim.Optimizer:
    """The recipe's optimizer over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov, weight_decay=recipe.weight_decay
        )
    return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


StepFn = Callable[[nn.Module, torch.optim.Optimizer, Tensor, Tensor], float]
"""A training method's step: (model, optimizer, x, y) -> loss value (robustbench_lfm.methods)."""


def site_net(model: nn.Module, method: str) -> SiteNet:
    """`model` as the trunk-and-head network a training method taps (TypeError otherwise)."""
    if not isinstance(model, SiteNet):
        raise TypeError(f"{method} trains a models.SiteNet (ReIDNet or ClassifierNet), not {type(model).__name__}")
    return model


def standard_step(recipe: TrainRecipe) -> StepFn:
    """The standard step: the task loss on the batch, one optimizer step."""
    return lambda model, opt, x, y: optimize(opt, task_loss(model(x), y, recipe))


def train_model(
    model: nn.Module,
    data: Dataset,
    recipe: TrainRecipe,
    seed: int,
    device: torch.device,
    method: StepFn | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainStats:
    """Train `model` in place on `data`'s train split with `method` (default: the standard loss).

    Raises:
        TrainingError: the loss is not finite, or no batch can be formed.
    """
    method = method or standard_step(recipe)
    g = torch.Generator().manual_seed(seed)
    images, labels = train_split(data)
    model.to(device).to(memory_format=torch.channels_last).train()  # type: ignore[call-overload]  # torch's stub lacks it
    opt = make_optimizer(model, recipe)
    start, epoch_times, loss_value = time.perf_counter(), [], math.nan
    for epoch in range(recipe.epochs):
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = recipe.lr * lr_factor(recipe, epoch)
        batches = epoch_batches(data, labels, recipe, g)
        if not batches:
            raise TrainingError("no training batch can be formed from the train split; is it empty?")
        for step, idx in enumerate(batches):
            x = augment(as_float(images[idx]), recipe.pad, recipe.flip, g)
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            with autocast(device, recipe.precision):
                loss = method(model, opt, x, labels[idx].to(device))
            if not math.isfinite(loss):
                raise TrainingError(
                    f"training loss became {loss} at epoch {epoch + 1}, step {step + 1}; lower the recipe's lr "
                    "or check the data"
                )
            loss_value = loss
        epoch_times.append(time.perf_counter() - t0)
        if on_epoch is not None:
            on_epoch(epoch, loss_value)
    model.eval()
    return TrainStats(loss_value, tuple(epoch_times), time.perf_counter() - start)


def optimize(opt: torch.optim.Optimizer, loss: Tensor) -> float:
    """One optimizer step on `loss`; returns its value."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())
