"""MixACM (Awais, Zhou, Xie, Li, Bae, Li, "MixACM: mixup-based robustness transfer via
distillation of activated channel maps", NeurIPS 2021, arXiv 2111.05073), model `mixacm`.

No official code exists; this follows the concrete spec of docs/reference/methods.md §4.2, whose
choices are marked there as assumptions. Per batch, with the frozen adversarially trained teacher T
(eval mode, no gradient) and the student S (train mode):

1. mixup: lambda ~ Beta(alpha, alpha), a random permutation pi, x~ = lambda x + (1 - lambda) x_pi;
2. activated channel maps of the outputs of the last `taps` residual stages of both networks:
   a_c = mean_hw |A_c|^power, L2-normalised over channels (the transformation is the identity:
   teacher and student share the backbone);
3. L_ACM = sum over taps of mean_b ||a^S - a^T||^2;
4. L_KD = tau^2 KL(softmax(z_T / tau) || softmax(z_S / tau)) on x~ (class or ID logits);
5. L_mix = lambda CE(z_S, y) + (1 - lambda) CE(z_S, y_pi);
6. L = L_mix + w_kd L_KD + w_acm L_ACM.

Defaults: teacher = `pgd-at` (trained first by the sweep, its checkpoint hash in this model's key),
alpha = 1, taps = 3 (layer2..layer4: low, mid and high level, the paper's blocks 2-4), power = 2,
w_acm = 10 (each tap's term lies in [0, 2] and is about 1 between unrelated networks, so L_ACM
starts at a few times the CE and falls as the student aligns; §4.2 step 8 asks for the CE's
order), w_kd = 1, tau = 4. On re-ID the triplet loss is left out: it needs one identity
per image, which mixup removes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_lfm.models import SiteNet
from robustbench_lfm.recipe import TrainRecipe
from robustbench_lfm.training import optimize, site_net

STAGES = ("layer1", "layer2", "layer3", "layer4")


def tapped(model: SiteNet, x: Tensor, taps: tuple[str, ...]) -> tuple[list[Tensor], Tensor]:
    """(outputs of the `taps` stages, final feature map) of one trunk pass."""
    outs: list[Tensor] = []
    fmap, after = x, None
    for site in taps:
        fmap = model.trunk(fmap, after=after, until=site)
        outs.append(fmap)
        after = site
    return outs, fmap if taps[-1] == "layer4" else model.trunk(fmap, after=after)


def channel_map(fmap: Tensor, power: float) -> Tensor:
    """Activated channel map: mean over space of |A|^power per channel, L2-normalised over channels."""
    return F.normalize(fmap.abs().pow(power).mean(dim=(2, 3)), dim=1)


class MixACM:
    """The mixacm step (module docstring)."""

    def __init__(
        self,
        recipe: TrainRecipe,
        seed: int,
        device: torch.device,
        teacher_model: nn.Module,
        alpha: float = 1.0,
        taps: int = 3,
        power: float = 2,
        w_acm: float = 10.0,
        w_kd: float = 1.0,
        tau: float = 4.0,
    ) -> None:
        if not alpha > 0 or not 1 <= taps <= 4 or not power > 0 or w_acm < 0 or w_kd < 0 or not tau > 0:
            raise ValueError("mixacm: need alpha > 0, 1 <= taps <= 4, power > 0, w_acm >= 0, w_kd >= 0, tau > 0")
        self.recipe, self.teacher = recipe, site_net(teacher_model, "mixacm").eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.taps = STAGES[4 - int(taps) :]
        self.alpha, self.power = float(alpha), float(power)
        self.w_acm, self.w_kd, self.tau = float(w_acm), float(w_kd), float(tau)
        self.rng = np.random.default_rng(seed)  # torch has no seeded Beta sampler
        self.generator = torch.Generator().manual_seed(seed)

    @staticmethod
    def passes(params: dict) -> float:
        """Forward-backward passes per training image (robustbench_lfm/estimate.py): the student's, and
        the teacher's forward without a backward, about a third of one (a backward costs about two
        forwards)."""
        return 1 + 1 / 3

    def losses(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """The three terms on one batch (unweighted)."""
        lam = float(self.rng.beta(self.alpha, self.alpha))
        perm = torch.randperm(len(y), generator=self.generator).to(y.device)
        mixed = lam * x + (1 - lam) * x[perm]
        net = site_net(model, "mixacm")
        s_maps, s_final = tapped(net, mixed, self.taps)
        z_s = net.class_logits(s_final)
        with torch.no_grad():
            t_maps, t_final = tapped(self.teacher, mixed, self.taps)
            z_t = self.teacher.class_logits(t_final)
        if any(s.shape[1] != t.shape[1] for s, t in zip(s_maps, t_maps, strict=True)):
            raise ValueError("mixacm: teacher and student stages differ in width; give them the same backbone")
        acm = sum(
            ((channel_map(s, self.power) - channel_map(t, self.power)).pow(2).sum(1).mean()
             for s, t in zip(s_maps, t_maps, strict=True)),
            torch.zeros((), device=mixed.device),
        )  # fmt: skip
        kd = F.kl_div(F.log_softmax(z_s / self.tau, 1), F.softmax(z_t / self.tau, 1), reduction="batchmean")
        ls = self.recipe.label_smoothing
        mix = lam * F.cross_entropy(z_s, y, label_smoothing=ls) + (1 - lam) * F.cross_entropy(
            z_s, y[perm], label_smoothing=ls
        )
        return {"mix": mix, "kd": kd * self.tau**2, "acm": acm}

    def __call__(self, model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor) -> float:
        terms = self.losses(model, x, y)
        return optimize(opt, terms["mix"] + self.w_kd * terms["kd"] + self.w_acm * terms["acm"])
