"""What GUIDE and SUGAR share: a surrogate latent per forgotten identity, and fine-tuning
the generator so each forgotten latent (and latents next to it) renders what the frozen
source generator renders at its surrogate.

Per step, for a forgotten identity ``u`` with latent ``w_u`` and surrogate ``w_t``, a
batch of random views ``v``: the generator's image at ``w_u`` is pulled towards the
source's at ``w_t`` (pixel MSE, weight ``mse``, plus an identity term, weight ``id``:
``1 - cos`` of the identity-loss network's embeddings), and so is its image at
neighbours ``w_u + a (w_r - w_u) / ||w_r - w_u||`` (``w_r`` a random retained latent,
``a ~ U[0, neighbour_radius]`` in units of the latents' median radius), whose targets are
the source at ``w_t`` moved by the same offset (GUIDE's adjacency-aware unlearning). Each
method adds its own preservation term. ``sequential: true`` forgets one identity after
another (``steps`` each), otherwise every step draws from all of them (``steps`` in all).

The identity-loss network is a second recogniser (``ctx.proxies["id_loss"]``, trained
with another seed), never the task's own recogniser, which judges the result.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...errors import UnlearnError, UnsupportedRequestError
from ...requests import GroupRequest
from ..base import Method, MethodConfig

__all__ = ["SurrogateConfig", "SurrogateMethod"]


@dataclass(frozen=True)
class SurrogateConfig(MethodConfig):
    steps: int = 60  # per identity (sequential) or in all (joint)
    lr: float = 1e-3
    views: int = 8  # views per identity and step
    distance: float = 2.0  # surrogate distance from w_avg, in median latent radii
    neighbour_radius: float = 0.5  # in median latent radii (0: no neighbours)
    neighbours: int = 4  # neighbour latents per identity and step
    mse: float = 1.0
    id: float = 0.1
    sequential: bool = True
    batch_identities: int = 8  # identities per step when joint

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps < 1 or self.views < 1 or self.batch_identities < 1 or self.neighbours < 0:
            raise UnlearnError("steps, views and batch_identities must be >= 1, neighbours >= 0")
        if not self.lr > 0 or not self.distance > 0 or self.neighbour_radius < 0:
            raise UnlearnError("lr and distance must be > 0, neighbour_radius >= 0")
        if self.mse < 0 or self.id < 0 or self.mse + self.id == 0:
            raise UnlearnError("mse and id weights must be >= 0, not both 0")


class SurrogateMethod(Method):
    """Base of GUIDE and SUGAR (module docstring); subclasses give the surrogates and the
    preservation term."""

    request_kinds = ("group",)
    requires = ("generate", "identities")
    Config = SurrogateConfig

    def forgotten(self, ctx) -> list[int]:
        req = ctx.request
        if not isinstance(req, GroupRequest) or req.by not in ("identity", "group"):
            raise UnsupportedRequestError(
                f"{self.name} forgets identities: a group request by identity"
            )
        ids = [int(g) for g in req.groups]
        k = ctx.original.latents.shape[0]
        bad = [i for i in ids if not 0 <= i < k]
        if bad:
            raise UnsupportedRequestError(f"{self.name}: identities {bad} have no latent (of {k})")
        return ids

    def prepare(self, ctx) -> None:
        if "id_loss" not in ctx.proxies:
            raise UnlearnError(
                f"{self.name} needs an identity-loss network in the context's proxies "
                "(proxies={'id_loss': Recogniser}), trained apart from the judging recogniser"
            )

    # -- what subclasses give -----------------------------------------------------------
    def surrogates(self, model, src, ctx, ids: list[int]) -> torch.Tensor:
        raise NotImplementedError

    def preservation(self, model, ctx) -> torch.Tensor | None:
        return None

    def setup_preservation(self, model, src, ctx, ids: list[int]) -> None:
        """Called once before fine-tuning (e.g. EWC's Fisher information)."""

    def retained_preservation(self, model, ctx, weight: float, n: int) -> torch.Tensor | None:
        """GUIDE's global preservation: ``n`` random retained latents (random views) keep
        the source generator's images, pixel MSE times ``weight`` (None at weight 0)."""
        if weight == 0:
            return None
        pick = self._kept[torch.randint(len(self._kept), (n,), generator=self._gen)]
        w = model.latents[pick]
        v = ctx.task.views(len(w), self._gen)
        with torch.no_grad():
            want = self._src(w, v)
        return weight * F.mse_loss(model(w, v), want)

    # -- the shared fine-tuning ---------------------------------------------------------
    def unlearn(self, model, ctx):
        cfg = self.config
        ids = self.forgotten(ctx)
        self._id_net = ctx.proxies["id_loss"]
        src = copy.deepcopy(model).eval()
        for p in src.parameters():
            p.requires_grad_(False)
        lat = model.latents
        radius = float((lat - model.w_avg).norm(dim=1).median())
        self._radius = radius
        self._gen = ctx.generator(41)
        targets = self.surrogates(model, src, ctx, ids).detach()
        self._extra["surrogate_distance"] = cfg.distance * radius
        self._src = src
        self._kept = torch.as_tensor(sorted(set(range(len(lat))) - set(ids)))
        self.setup_preservation(model, src, ctx, ids)
        retained = torch.as_tensor(sorted(set(range(len(lat))) - set(ids)))
        for p in model.parameters():
            p.requires_grad_(True)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        order = [[i] for i in range(len(ids))] if cfg.sequential else [list(range(len(ids)))]
        done = 0
        model.train()
        for group in order:
            for _ in range(cfg.steps):
                pick = torch.as_tensor(group)
                if len(group) > cfg.batch_identities:
                    pick = pick[
                        torch.randperm(len(group), generator=self._gen)[: cfg.batch_identities]
                    ]
                w_u = lat[torch.as_tensor(ids)[pick]]
                w_t = targets[pick]
                loss = self._forget_loss(model, src, ctx, w_u, w_t, retained)
                extra = self.preservation(model, ctx)
                if extra is not None:
                    loss = loss + extra
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                done += 1
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self._extra["identities"] = len(ids)
        return model, done

    def _forget_loss(self, model, src, ctx, w_u, w_t, retained) -> torch.Tensor:
        cfg = self.config
        n = len(w_u)
        v = ctx.task.views(n * cfg.views, self._gen)
        wu = w_u.repeat_interleave(cfg.views, 0)
        wt = w_t.repeat_interleave(cfg.views, 0)
        if cfg.neighbour_radius > 0 and cfg.neighbours > 0:
            m = n * cfg.neighbours
            base = w_u.repeat_interleave(cfg.neighbours, 0)
            tgt = w_t.repeat_interleave(cfg.neighbours, 0)
            other = model.latents[retained[torch.randint(len(retained), (m,), generator=self._gen)]]
            step = F.normalize(other - base, dim=1)
            a = torch.rand(m, 1, generator=self._gen) * cfg.neighbour_radius * self._radius
            wu = torch.cat([wu, base + a * step])
            wt = torch.cat([wt, tgt + a * step])
            v = torch.cat([v, ctx.task.views(m, self._gen)])
        with torch.no_grad():
            want = src(wt, v)
            want_id = self._id_net.embed(want)
        out = model(wu, v)
        loss = cfg.mse * F.mse_loss(out, want)
        if cfg.id > 0:
            loss = loss + cfg.id * (1 - (self._id_net.embed(out) * want_id).sum(1)).mean()
        return loss

    def touched(self) -> str:
        return "the generator's network (the latents are untouched)"
