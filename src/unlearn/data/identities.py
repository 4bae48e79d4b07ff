"""A seeded synthetic identity data set: many identities, several views of each.

Each identity is a random code in R^``code_dim``; its face is a smooth pattern, the
``tanh`` of the code's combination of fixed low-frequency cosine images (seeded), on a
canvas larger than the image. A view crops the canvas at a shift of up to ``shift``
pixels, scales and offsets the brightness and adds pixel noise, so the identity is the
same across views and recoverable from any of them (a recogniser trained here reaches
about 94 % on held-out views of 300 identities), while views differ pixel by pixel.
Every image has its view vector (shift x and y, brightness scale and offset, each mapped
to [-1, 1]), which a generator takes as its view latent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import UnlearnError
from .core import ArrayData

__all__ = ["IdentityData", "make_identities", "render_views", "random_views"]


@dataclass
class IdentityData:
    """Images of identities: ``data`` (x: (N, 1, S, S) in [-1, 1], y: identity), ``view``
    (N, 4) the view of each image, and the identities' ``codes``."""

    data: ArrayData
    view: torch.Tensor
    codes: torch.Tensor
    size: int
    shift: int

    def __len__(self) -> int:
        return len(self.data)

    @property
    def identities(self) -> int:
        return len(self.codes)

    def group_labels(self, by: str):
        if by not in ("identity", "group"):
            raise UnlearnError(f"identity data is grouped by identity, not {by!r}")
        return self.data.y.numpy()

    def subset(self, idx, name: str = "subset") -> IdentityData:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return IdentityData(
            self.data.subset(idx, name), self.view[idx], self.codes, self.size, self.shift
        )


def _basis(size: int, shift: int, code_dim: int, gen: torch.Generator) -> torch.Tensor:
    side = size + 2 * shift
    grid = torch.arange(side, dtype=torch.float64) / side
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    freqs = [(a, b) for a in range(6) for b in range(6) if (a, b) != (0, 0)]
    order = sorted(freqs, key=lambda f: (f[0] ** 2 + f[1] ** 2, f))[:code_dim]
    if len(order) < code_dim:
        raise UnlearnError(f"code_dim must be at most {len(freqs)}, got {code_dim}")
    phase = torch.rand(code_dim, generator=gen, dtype=torch.float64) * 2 * math.pi
    return torch.stack(
        [torch.cos(math.pi * (a * xx + b * yy) + p) for (a, b), p in zip(order, phase, strict=True)]
    ).float()


def render_views(
    codes: torch.Tensor,
    basis: torch.Tensor,
    view: torch.Tensor,
    size: int,
    shift: int,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Images of identities ``codes`` (N, C) in views ``view`` (N, 4) in [-1, 1]."""
    canvas = torch.tanh(2.4 * torch.einsum("nc,chw->nhw", codes, basis) / math.sqrt(len(basis)))
    dx = torch.round(view[:, 0] * shift).long() + shift
    dy = torch.round(view[:, 1] * shift).long() + shift
    rows = dy[:, None] + torch.arange(size)[None, :]
    cols = dx[:, None] + torch.arange(size)[None, :]
    img = canvas[torch.arange(len(codes))[:, None, None], rows[:, :, None], cols[:, None, :]]
    scale = (0.85 + 0.15 * view[:, 2])[:, None, None]
    offset = (0.2 * view[:, 3])[:, None, None]
    out = scale * img + offset
    if noise is not None:
        out = out + noise
    return out.clamp(-1, 1)[:, None]


def random_views(n: int, shift: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` view vectors: whole-pixel shifts in [-shift, shift], brightness uniform."""
    steps = torch.randint(-shift, shift + 1, (n, 2), generator=gen).float() / max(shift, 1)
    light = torch.rand(n, 2, generator=gen) * 2 - 1
    return torch.cat([steps, light], 1)


def make_identities(
    identities: int = 300,
    views: int = 8,
    size: int = 16,
    code_dim: int = 12,
    shift: int = 2,
    noise: float = 0.05,
    seed: int = 0,
) -> IdentityData:
    """``identities`` x ``views`` images (module docstring), every draw from ``seed``."""
    if identities < 2 or views < 1 or size < 4 or shift < 0 or not noise >= 0:
        raise UnlearnError(
            "identities must be >= 2, views >= 1, size >= 4, shift >= 0 and noise >= 0"
        )
    gen = torch.Generator().manual_seed(int(seed))
    basis = _basis(size, shift, code_dim, gen)
    codes = torch.randn(identities, code_dim, generator=gen)
    who = torch.arange(identities).repeat_interleave(views)
    view = random_views(len(who), shift, gen)
    pix = noise * torch.randn(len(who), size, size, generator=gen)
    x = render_views(codes[who], basis, view, size, shift, pix)
    names = tuple(f"id{i}" for i in range(identities))
    return IdentityData(ArrayData(x, who, names, "identities"), view, codes, size, shift)
