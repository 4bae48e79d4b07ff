"""SUGAR (Nguyen et al., "Generative unlearning of many identities"; official code
judydnguyen/SUGAR-Generative-Unlearn, read for these facts):

1. A trigger network ``T`` (an MLP) maps ``w_u - w_avg`` to a direction; the identity's
   personalised surrogate is ``w_avg - d T(w_u - w_avg) / ||T(.)||``. ``T`` is trained
   with the generator frozen (``trigger_epochs`` passes over the forgotten latents, Adam)
   to keep the generator's intermediate features at the surrogate close to those at
   ``w_u`` (weight ``feature``) while pushing the identity apart (the identity-loss
   network's cosine similarity between the two images) and keeping different
   identities' surrogates apart (their images' mean pairwise cosine, weight ``spread``;
   GUIDE's fixed reflection can send two identities to one face).
2. The shared fine-tuning towards the surrogates (:mod:`._common`), with SUGAR's
   continual utility preservation, an EWC penalty ``lam * sum F (theta - theta*)^2``:
   ``theta*`` the generator before unlearning and ``F`` the diagonal Fisher information
   of its output, estimated (``E[(J^T e)^2]``, ``e`` Gaussian) at locality-aware latents:
   retained latents nearest each forgotten one and latents part way from it towards
   them. The generator is never changed while ``F`` is computed (the official loop steps
   its optimiser there, which moves it). ``preserve`` > 0 adds GUIDE's preservation of
   random retained latents, which SUGAR's recipe does not have: on this generator the EWC
   penalty alone let the retained identities collapse (docs/tuning.md).

Official settings: d = 20 (EG3D units; ``distance`` here is in median latent radii),
lr 2e-4, EWC weight 50, trigger network 50 epochs, batch 4; loss weights MSE 1e-2, LPIPS 1,
identity 0.1 (no LPIPS network can be downloaded here: pixel MSE and the identity term).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UnlearnError
from ..base import register
from ._common import SurrogateConfig, SurrogateMethod


@dataclass(frozen=True)
class SUGARConfig(SurrogateConfig):
    lam: float = 50.0  # EWC weight
    fisher_latents: int = 4  # locality-aware latents per forgotten identity
    fisher_draws: int = 4  # Gaussian probes of the output per latent
    trigger_epochs: int = 50
    trigger_lr: float = 1e-3
    trigger_hidden: int = 64
    feature: float = 1.0
    spread: float = 1.0
    # GUIDE's preservation of random retained latents (not in SUGAR's recipe; 0: off)
    preserve: float = 0.0
    preserve_latents: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lam < 0 or self.fisher_latents < 1 or self.fisher_draws < 1:
            raise UnlearnError("sugar needs lam >= 0, fisher_latents and fisher_draws >= 1")
        if self.trigger_epochs < 0 or not self.trigger_lr > 0 or self.trigger_hidden < 1:
            raise UnlearnError(
                "sugar needs trigger_epochs >= 0, trigger_lr > 0, trigger_hidden >= 1"
            )
        if self.feature < 0 or self.spread < 0:
            raise UnlearnError("sugar's feature and spread weights must be >= 0")
        if self.preserve < 0 or self.preserve_latents < 1:
            raise UnlearnError("sugar needs preserve >= 0 and preserve_latents >= 1")


class Trigger(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)  # starts near the identity's own direction


@register
class SUGAR(SurrogateMethod):
    name = "sugar"
    summary = "SUGAR: learned personalised surrogates per identity, EWC keeps the rest."
    Config = SUGARConfig

    def _surrogate(self, trigger, w_u, w_avg):
        return w_avg - self.config.distance * self._radius * F.normalize(
            trigger(w_u - w_avg), dim=1
        )

    def surrogates(self, model, src, ctx, ids):
        cfg = self.config
        w_avg = src.w_avg
        w_u = src.latents[torch.as_tensor(ids)]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(ctx.seed) + 43)
            trigger = Trigger(w_u.shape[1], cfg.trigger_hidden)
        opt = torch.optim.Adam(trigger.parameters(), lr=cfg.trigger_lr)
        losses = []
        for _ in range(cfg.trigger_epochs):
            for batch in torch.randperm(len(ids), generator=self._gen).split(4):
                wu = w_u[batch]
                wt = self._surrogate(trigger, wu, w_avg)
                v = ctx.task.views(len(wu), self._gen)
                with torch.no_grad():
                    f_u = src.features(wu, v)
                    e_u = self._id_net.embed(src(wu, v))
                f_t = src.features(wt, v)
                e_t = self._id_net.embed(src(wt, v))
                loss = cfg.feature * F.mse_loss(f_t, f_u) + (e_t * e_u).sum(1).mean()
                if len(wu) > 1 and cfg.spread > 0:
                    sim = e_t @ e_t.T
                    off = sim[~torch.eye(len(wu), dtype=torch.bool)]
                    loss = loss + cfg.spread * off.mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
        self._extra["trigger_final_loss"] = losses[-1] if losses else None
        with torch.no_grad():
            return self._surrogate(trigger, w_u, w_avg)

    def setup_preservation(self, model, src, ctx, ids):
        cfg = self.config
        self._anchor = [p.detach().clone() for p in model.parameters()]
        lat = src.latents
        kept = torch.as_tensor(sorted(set(range(len(lat))) - set(ids)))
        points = []
        for i in ids:
            d = (lat[kept] - lat[i]).norm(dim=1)
            near = kept[torch.argsort(d)[: cfg.fisher_latents]]
            a = torch.rand(len(near), 1, generator=self._gen)
            points += [lat[near], lat[i] + a * (lat[near] - lat[i])]
        w = torch.cat(points)
        fisher = [torch.zeros_like(p) for p in src.parameters()]
        params = list(src.parameters())
        for p in params:
            p.requires_grad_(True)
        try:
            for s in range(0, len(w), 64):
                wb = w[s : s + 64]
                v = ctx.task.views(len(wb), self._gen)
                for _ in range(cfg.fisher_draws):
                    out = src(wb, v)
                    probe = torch.randn(out.shape, generator=self._gen)
                    grads = torch.autograd.grad((out * probe).sum(), params)
                    for f, g in zip(fisher, grads, strict=True):
                        f.add_(g.detach() ** 2)
        finally:
            for p in params:
                p.requires_grad_(False)
        total = len(w) * cfg.fisher_draws
        self._fisher = [f / total for f in fisher]
        self._extra["fisher_latents"] = len(w)

    def preservation(self, model, ctx):
        cfg = self.config
        terms = [self.retained_preservation(model, ctx, cfg.preserve, cfg.preserve_latents)]
        if cfg.lam > 0:
            terms.append(
                cfg.lam
                * sum(
                    (f * (p - a) ** 2).sum()
                    for f, p, a in zip(self._fisher, model.parameters(), self._anchor, strict=True)
                )
            )
        terms = [t for t in terms if t is not None]
        return sum(terms) if terms else None
