"""Attack objectives: what an attack maximizes, independent of how it searches.

Re-ID objectives follow the push/pull guide framework of docs/reference/reid.md D0/D6: on the
retrieval embedding f^ in the geometry that is scored,

    L(x') = sum_{g in push} ||f^(x') - g||^2  -  sum_{h in pull} ||f^(x') - h||^2,

maximized. Pushing guides are moved away from, pulling guides towards. The context's `distance`
picks the geometry: `cosine` (the default) L2-normalizes f^ and the guides, so squared L2 is
2 - 2 cos; `euclidean` uses the raw embeddings, the squared L2 distance the ranking then scores.
An attack optimizing the cosine geometry against a Euclidean ranking would overstate robustness.

* `sma` — Self Metric Attack (Bouniot et al., CVPRW 2020; D2): push = the clean f^(x) itself.
  Needs no other image and no label. Its gradient is zero at x' = x, so it needs a random start.
* `fna` — Furthest-Negative Attack (Bouniot et al.; D2): push = every guide of the same identity
  (the query set, the image itself included), pull = the prototype (mean guide feature) of the
  other identity whose prototype is farthest from f^(x). adv-reid pads the push list with the
  image's own feature; we weight every same-identity guide once.
* `bai` — Adversarial Metric Attack (Bai et al., TPAMI 2020; D1): push = every guide of the same
  identity (the clean queries when the gallery is attacked). Images with no same-identity guide
  (distractors) get a zero gradient and stay clean.
* `odfa` — Opposite-Direction Feature Attack (Zheng et al., IJCV 2022; D4): pull = -f^(x), i.e.
  minimize ||f^(x') + f^(x)||^2 and turn the embedding around (adv-reid maximizes it instead,
  the wrong sign; D2). Like SMA its gradient vanishes at x' = x (the target is radial), so it
  takes a random start.
* `ce` — cross-entropy of the logits against the true labels (classification; Goodfellow et
  al. 2015, Madry et al. 2018).

An objective is prepared once per batch on the clean input (`prepare`, no gradient), then
evaluated on the perturbed input (`per_sample`, one value per image; attacks sum it, so
per-image gradients do not depend on the batch size).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_lfm.lfm_registry import Registry

Task = Literal["reid", "classification"]


@dataclass(frozen=True)
class Guides:
    """Clean embeddings the attacker may use as guides (reid.md D0), and their identities.

    Attributes:
        features: (M, d) embeddings of the guide images (normalized by the objective).
        labels: (M,) identities of the guide images.
    """

    features: Tensor
    labels: Tensor


@dataclass(frozen=True)
class Fit:
    """Images an attack may learn from beforehand (a universal perturbation's training set).

    Attributes:
        images: uint8 images (M, 3, H, W), values 0..255, on any device (moved batch by batch).
        labels: their classes (classification) or identities (re-ID), shape (M,).
    """

    images: Tensor
    labels: Tensor


@dataclass(frozen=True)
class AttackContext:
    """What an attack may know besides the model and the images.

    Attributes:
        task: `reid` (the model returns embeddings in eval mode) or `classification` (logits).
        labels: true labels (classification) or identities (re-ID) of the batch, shape (N,).
        guides: re-ID guide set (in the harness: the clean query set of the attacked model).
        distance: the retrieval distance the attack's metric objective works in, `cosine` or
            `euclidean` (the harness passes the run's --distance).
        fit: images the attacker may learn from before it sees the batch (the training split,
            for a universal perturbation); None = none.
    """

    task: Task
    labels: Tensor | None = None
    guides: Guides | None = None
    distance: str = "cosine"
    fit: Fit | None = None

    def __post_init__(self) -> None:
        if self.distance not in DISTANCES:
            raise ValueError(f"distance={self.distance!r} is not one of {', '.join(DISTANCES)}")


DISTANCES = ("cosine", "euclidean")


def embed(features: Tensor, distance: str) -> Tensor:
    """Features in the geometry of `distance`: L2-normalized for cosine, as they are for euclidean."""
    features = features.float()
    return F.normalize(features, dim=1) if distance == "cosine" else features


class Objective:
    """Base class: `prepare` once on clean inputs, then `per_sample` (to maximize) on perturbed ones."""

    name: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]]
    needs_random_start: ClassVar[bool] = False

    def prepare(self, model: nn.Module, x: Tensor, context: AttackContext) -> Any:
        """State computed once from the clean batch (under no_grad)."""
        raise NotImplementedError

    def per_sample(self, model: nn.Module, x_adv: Tensor, state: Any) -> Tensor:
        """Value to maximize, one per image, shape (N,)."""
        raise NotImplementedError


@dataclass(frozen=True)
class GuideTargets:
    """Per-image push and pull guides, padded: features (N, P, d) with a 0/1 mask (N, P), and the
    geometry (`distance`) the attacked embedding is compared in."""

    push: Tensor
    push_mask: Tensor
    pull: Tensor
    pull_mask: Tensor
    distance: str = "cosine"


def _none(n: int, d: int, like: Tensor) -> tuple[Tensor, Tensor]:
    return like.new_zeros(n, 0, d), like.new_zeros(n, 0)


def _same_identity(labels: Tensor, guides: Guides, distance: str) -> tuple[Tensor, Tensor]:
    """Every guide of each image's identity, padded to the largest count: (N, P, d), mask (N, P)."""
    feats = embed(guides.features.to(labels.device), distance)
    same = labels.view(-1, 1) == guides.labels.to(labels.device).view(1, -1)  # (N, M)
    width = max(int(same.sum(1).max()), 1) if len(labels) else 1
    order = same.float().argsort(dim=1, descending=True, stable=True)[:, :width]
    mask = same.gather(1, order).float()
    return feats[order] * mask.unsqueeze(-1), mask


class MetricObjective(Objective):
    """Push/pull guide objective on the normalized embedding; subclasses pick the guides."""

    tasks = ("reid",)
    needs_guides: ClassVar[bool] = False

    def guides(self, f0: Tensor, context: AttackContext) -> GuideTargets:
        """The push and pull guides of a batch whose clean normalized embeddings are f0 (N, d)."""
        raise NotImplementedError

    def prepare(self, model: nn.Module, x: Tensor, context: AttackContext) -> GuideTargets:
        if self.needs_guides and (context.guides is None or context.labels is None):
            raise ValueError(f"the {self.name!r} objective needs guide features and the batch's identities")
        with torch.no_grad():
            f0 = embed(model(x), context.distance)
        return dataclasses.replace(self.guides(f0, context), distance=context.distance)

    def per_sample(self, model: nn.Module, x_adv: Tensor, state: GuideTargets) -> Tensor:
        f = embed(model(x_adv), state.distance).unsqueeze(1)
        push = ((f - state.push).pow(2).sum(-1) * state.push_mask).sum(1)
        pull = ((f - state.pull).pow(2).sum(-1) * state.pull_mask).sum(1)
        return push - pull


class SelfMetric(MetricObjective):
    """SMA: push away from the image's own clean embedding."""

    name = "sma"
    needs_random_start = True

    def guides(self, f0: Tensor, context: AttackContext) -> GuideTargets:
        return GuideTargets(f0.unsqueeze(1), f0.new_ones(len(f0), 1), *_none(len(f0), f0.shape[1], f0))


class FurthestNegative(MetricObjective):
    """FNA: push from the same identity's guides, pull to the farthest other identity's prototype."""

    name = "fna"
    needs_guides = True

    def guides(self, f0: Tensor, context: AttackContext) -> GuideTargets:
        assert context.guides is not None and context.labels is not None
        push, push_mask = _same_identity(context.labels.to(f0.device), context.guides, context.distance)
        ids, protos = _prototypes(context.guides, f0.device, context.distance)
        dist = torch.cdist(f0, protos)  # L2 between clean embedding and each prototype
        dist[context.labels.to(f0.device).view(-1, 1) == ids.view(1, -1)] = -1.0  # never the own identity
        far = protos[dist.argmax(dim=1)].unsqueeze(1)
        return GuideTargets(push, push_mask, far, f0.new_ones(len(f0), 1))


def _prototypes(guides: Guides, device: torch.device, distance: str) -> tuple[Tensor, Tensor]:
    """(identities, mean guide feature per identity, in the geometry of `distance`)."""
    feats = embed(guides.features.to(device), distance)
    ids, inverse = torch.unique(guides.labels.to(device), return_inverse=True)
    sums = torch.zeros(len(ids), feats.shape[1], device=device).index_add_(0, inverse, feats)
    return ids, sums / torch.bincount(inverse, minlength=len(ids)).unsqueeze(1).float()


class SameIdentityPush(MetricObjective):
    """Bai et al.'s metric attack: push away from every guide of the same identity."""

    name = "bai"
    needs_guides = True

    def guides(self, f0: Tensor, context: AttackContext) -> GuideTargets:
        assert context.guides is not None and context.labels is not None
        push, mask = _same_identity(context.labels.to(f0.device), context.guides, context.distance)
        return GuideTargets(push, mask, *_none(len(f0), f0.shape[1], f0))


class OppositeDirection(MetricObjective):
    """ODFA: pull towards the negated clean embedding -f^(x) (minimize ||f^(x') + f^(x)||^2)."""

    name = "odfa"
    needs_random_start = True

    def guides(self, f0: Tensor, context: AttackContext) -> GuideTargets:
        return GuideTargets(*_none(len(f0), f0.shape[1], f0), -f0.unsqueeze(1), f0.new_ones(len(f0), 1))


class CrossEntropy(Objective):
    """Untargeted cross-entropy on the true labels."""

    name = "ce"
    tasks = ("classification",)

    def prepare(self, model: nn.Module, x: Tensor, context: AttackContext) -> Tensor:
        if context.labels is None:
            raise ValueError("the 'ce' objective needs labels in the AttackContext")
        return context.labels.to(x.device)

    def per_sample(self, model: nn.Module, x_adv: Tensor, state: Tensor) -> Tensor:
        return F.cross_entropy(model(x_adv).float(), state, reduction="none")


OBJECTIVES: Registry[type[Objective]] = Registry("objective")
for _cls in (SelfMetric, FurthestNegative, SameIdentityPush, OppositeDirection, CrossEntropy):
    OBJECTIVES.add(_cls.name, _cls, __name__)
DEFAULT_OBJECTIVE: dict[str, str] = {"reid": "sma", "classification": "ce"}


def resolve_objective(name: str, task: Task) -> Objective:
    """The objective `name` for `task`; `auto` picks the task's default (reid: sma, cls: ce)."""
    if task not in DEFAULT_OBJECTIVE:
        raise ValueError(f"unknown task {task!r} (known: {', '.join(DEFAULT_OBJECTIVE)})")
    key = DEFAULT_OBJECTIVE[task] if name == "auto" else name
    objective = OBJECTIVES[key]()
    if task not in objective.tasks:
        raise ValueError(f"objective {key!r} does not apply to the {task} task")
    return objective
