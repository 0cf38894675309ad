"""Group-wise inhibition (Liu, Wu, Xie, Liu, Shen, "Group-wise inhibition based feature
regularization for robust classification", ICCV 2021, arXiv 2103.02152; "TENET training"), model `gwi`.

Following the official code as read in docs/reference/methods.md §3.2-3.3. Every iteration is a normal
step; from iteration `start_iter` on, every `every`-th iteration adds a TENET step on the samples
the normal step's logits (before its update) classified correctly:

1. importance, model in eval: A = F(x) at `layer`, G = dL_d/dA with L_d = sum_b sigmoid(z_{b,y_b});
2. CFG: per sample, k-means (k = `groups`) over the C channel maps in R^{HW}: random distinct
   channels as initial centres, each mean update snapped to the nearest not-yet-used channel,
   at most 50 iterations or until (sum of centre shifts)^2 < 1e-4;
3. GMW: per group, w_c = mean_hw G_c, IS = sum w_c; groups with IS <= 0 are not inhibited;
   otherwise m = sum w_c A_c is standardised over space and RRF gives the mask sigmoid(-m_hat);
4. model in train: A = F(x); L_orth = mean over pairs of non-empty groups of |<mu_g, mu_g'>| (raw
   dot products of group-mean maps), averaged over the batch; y_hat = D(A * M);
5. L_TENET = lambda_t CE(y_hat, y) + lambda_o L_orth, its own optimizer step.

Defaults (the CIFAR config): groups = 6, lambda_t = 0.1, lambda_o = 1e-3, every = 3, start_iter =
500 (the CPU recipes start earlier: their schedules are short), min_batch = 4 (the sub-batch runs
BN in train mode), `layer = layer3` (ResNet-50's layer3 in the paper). k-means is batched over
samples in torch (the official code loops in numpy) and an empty group keeps its centre.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_lfm.recipe import TrainRecipe
from robustbench_lfm.training import optimize, site_net, task_loss

KMEANS_ITERS = 50
KMEANS_TOL = 1e-4


def snap_to_unused(centres: Tensor, points: Tensor) -> Tensor:
    """Per sample, move each centre (in order) to the nearest channel no earlier centre took.

    Args:
        centres: (B, k, D).
        points: (B, C, D) channel vectors.
    Returns: (B, k) channel indices.
    """
    b, k, _ = centres.shape
    dist = torch.cdist(centres, points)  # (B, k, C)
    used = torch.zeros(b, points.shape[1], dtype=torch.bool, device=points.device)
    picks = []
    for j in range(k):
        pick = dist[:, j].masked_fill(used, float("inf")).argmin(dim=1)
        used[torch.arange(b), pick] = True
        picks.append(pick)
    return torch.stack(picks, 1)


def group_channels(fmap: Tensor, k: int, g: torch.Generator) -> Tensor:
    """CFG: (B, C) group ids in 0..k-1 from per-sample k-means over the channel maps of `fmap`."""
    b, c = fmap.shape[:2]
    points = fmap.detach().flatten(2).float()  # (B, C, HW)
    k = min(k, c)
    rows = torch.arange(b, device=fmap.device)[:, None]
    init = torch.rand(b, c, generator=g, device=g.device).to(fmap.device).argsort(1)[:, :k]
    centres = points[rows, init]
    assign = torch.zeros(b, c, dtype=torch.long, device=fmap.device)
    for _ in range(KMEANS_ITERS):
        assign = torch.cdist(points, centres).argmin(dim=2)  # squared or not: same argmin
        onehot = F.one_hot(assign, k).float()  # (B, C, k)
        counts = onehot.sum(1)  # (B, k)
        means = torch.einsum("bck,bcd->bkd", onehot, points) / counts.clamp(min=1)[..., None]
        means = torch.where(counts[..., None] > 0, means, centres)  # an empty group keeps its centre
        snapped = points[rows, snap_to_unused(means, points)]
        shift = (snapped - centres).norm(dim=2).sum(1) ** 2
        centres = snapped
        if bool((shift < KMEANS_TOL).all()):
            break
    return assign


def inhibition_mask(fmap: Tensor, grad: Tensor, groups: Tensor, k: int) -> Tensor:
    """GMW + RRF: the (B, C, H, W) mask, sigmoid(-standardised group map) or 1 where IS <= 0."""
    onehot = F.one_hot(groups, k).to(fmap.dtype)  # (B, C, k)
    w = grad.mean(dim=(2, 3))  # (B, C) Grad-CAM weights, no ReLU
    importance = torch.einsum("bc,bck->bk", w, onehot)
    maps = torch.einsum("bc,bck,bchw->bkhw", w, onehot, fmap)
    flat = maps.flatten(2)
    std = (flat - flat.mean(2, keepdim=True)) / (flat.std(2, keepdim=True) + 1e-8)
    rrf = torch.sigmoid(-std).view_as(maps)
    rrf = torch.where((importance > 0)[..., None, None], rrf, torch.ones_like(rrf))
    return torch.einsum("bck,bkhw->bchw", onehot, rrf)


def orthogonality(fmap: Tensor, groups: Tensor, k: int) -> Tensor:
    """Mean over pairs of non-empty groups of |<mu_g, mu_g'>|, averaged over the batch."""
    onehot = F.one_hot(groups, k).to(fmap.dtype)  # (B, C, k)
    counts = onehot.sum(1)  # (B, k)
    mu = torch.einsum("bck,bcd->bkd", onehot, fmap.flatten(2)) / counts.clamp(min=1)[..., None]
    dots = torch.einsum("bkd,bjd->bkj", mu, mu).abs()
    present = (counts > 0).to(fmap.dtype)
    pair = torch.triu(present[:, :, None] * present[:, None, :], diagonal=1)
    n_pairs = pair.sum((1, 2)).clamp(min=1)
    return ((dots * pair).sum((1, 2)) / n_pairs).mean()


class GroupWiseInhibition:
    """The gwi step: a normal step, then on schedule a TENET step on the correctly classified samples."""

    def __init__(
        self,
        recipe: TrainRecipe,
        seed: int,
        device: torch.device,
        groups: int = 6,
        layer: str = "layer3",
        lambda_t: float = 0.1,
        lambda_o: float = 1e-3,
        every: int = 3,
        start_iter: int = 500,
        min_batch: int = 4,
    ) -> None:
        if groups < 2 or every < 1 or start_iter < 0 or min_batch < 2:
            raise ValueError("gwi: need groups >= 2, every >= 1, start_iter >= 0, min_batch >= 2")
        if layer not in ("layer1", "layer2", "layer3"):
            raise ValueError(f"gwi: layer={layer!r} must be layer1, layer2 or layer3 (a stage must follow it)")
        self.recipe, self.k, self.layer = recipe, int(groups), layer
        self.lambda_t, self.lambda_o = float(lambda_t), float(lambda_o)
        self.every, self.start_iter, self.min_batch = int(every), int(start_iter), int(min_batch)
        self.generator = torch.Generator().manual_seed(seed)
        self.iteration = 0
        self.tenet_steps = 0

    def __call__(self, model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor) -> float:
        out = model(x)
        logits = out[0] if isinstance(out, tuple) else out
        correct = (logits.detach().argmax(1) == y).nonzero().flatten()
        loss = optimize(opt, task_loss(out, y, self.recipe))
        self.iteration += 1
        due = self.iteration >= self.start_iter and self.iteration % self.every == 0
        if due and len(correct) >= self.min_batch:
            self.tenet_step(model, opt, x[correct], y[correct])
        return loss

    def tenet_step(self, model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor) -> float:
        """One TENET update (module docstring, steps 1-5) on a batch of correctly classified samples."""
        model = site_net(model, "gwi")
        model.eval()
        with torch.no_grad():
            fmap = model.trunk(x, until=self.layer)
        fmap.requires_grad_(True)
        z = model.class_logits(model.trunk(fmap, after=self.layer))
        grad = torch.autograd.grad(torch.sigmoid(z.gather(1, y[:, None])).sum(), fmap)[0]
        groups = group_channels(fmap, self.k, self.generator)
        mask = inhibition_mask(fmap.detach(), grad, groups, self.k)
        model.train()
        fmap = model.trunk(x, until=self.layer)
        logits = model.class_logits(model.trunk(fmap * mask, after=self.layer))
        ce = F.cross_entropy(logits, y, label_smoothing=self.recipe.label_smoothing)
        self.tenet_steps += 1
        return optimize(opt, self.lambda_t * ce + self.lambda_o * orthogonality(fmap, groups, self.k))
