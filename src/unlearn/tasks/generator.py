"""The generator task: an identity generator, the recogniser that judges it, and inversion.

The model (:class:`IdentityGenerator`) maps an identity latent ``w`` and a view latent
``v`` to an image; it is trained here by generative latent optimisation (Bojanowski et
al. 2018): the network and one latent per training identity are fitted together to
reconstruct every training image from its identity's latent and its view vector. The
latents are a buffer of the model (``latents``, one row per identity; ``w_avg`` their
mean): unlearning methods change the network, never the latents, since a forgotten
identity's latent is what a user gets by inverting a photograph of it
(:meth:`GeneratorTask.invert`). A :class:`Recogniser` trained on the real images plays the
face recogniser's role: the cosine similarity of its unit-norm embeddings says whether two
images show the same identity.

Data is an :class:`~unlearn.data.identities.IdentityData` (images, identities, views);
requests name identities (``GroupRequest(by="identity")``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnlearnError
from ..training import index_stream, make_optimizer, optimize
from ..validate import check_fields, resolve_device
from .base import Task, register_task

__all__ = [
    "GeneratorRecipe",
    "GeneratorTask",
    "IdentityGenerator",
    "Recogniser",
    "train_recogniser",
]


class IdentityGenerator(nn.Module):
    """``G(w, v)``: an MLP from ``[w, v]`` to a 4x4 feature map, then transposed
    convolutions to ``size`` x ``size`` (``size`` a multiple of 4); ``features`` is the
    feature map (what SUGAR keeps close)."""

    def __init__(
        self,
        identities: int,
        latent_dim: int = 32,
        view_dim: int = 4,
        width: int = 64,
        size: int = 16,
        seed: int = 0,
    ):
        super().__init__()
        if size % 4 or size < 8:
            raise UnlearnError(
                f"the generator's image side must be a multiple of 4 >= 8, got {size}"
            )
        self.config = {
            "identities": int(identities), "latent_dim": int(latent_dim),
            "view_dim": int(view_dim), "width": int(width), "size": int(size),
        }  # fmt: skip
        ups = int(np.log2(size // 4))
        if 4 * 2**ups != size:
            raise UnlearnError(f"the image side must be 4 times a power of 2, got {size}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            self.fc = nn.Sequential(
                nn.Linear(latent_dim + view_dim, 4 * width), nn.ReLU(),
                nn.Linear(4 * width, width * 16), nn.ReLU(),
            )  # fmt: skip
            layers: list[nn.Module] = []
            ch = width
            for _ in range(ups):
                layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1), nn.ReLU()]
                ch //= 2
            layers += [nn.Conv2d(ch, 1, 3, padding=1), nn.Tanh()]
            self.up = nn.Sequential(*layers)
            self.register_buffer("latents", 0.1 * torch.randn(identities, latent_dim))
        self.width = width

    @property
    def w_avg(self) -> torch.Tensor:
        return self.latents.mean(0)

    def features(self, w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([w, v], 1)).view(-1, self.width, 4, 4)

    def forward(self, w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.up(self.features(w, v))


class Recogniser(nn.Module):
    """A CNN whose unit-norm 64-d embedding identifies who an image shows; trained as a
    classifier over the training identities (cosine logits, scale 10)."""

    def __init__(self, identities: int, size: int, dim: int = 64):
        super().__init__()
        self.c1 = nn.Conv2d(1, 32, 3, padding=1)
        self.c2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * (size // 4) ** 2, dim)
        self.head = nn.Linear(dim, identities)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        z = F.max_pool2d(F.relu(self.c1(x)), 2)
        z = F.max_pool2d(F.relu(self.c2(z)), 2)
        return F.normalize(self.fc(z.flatten(1)), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(10.0 * self.embed(x))


def train_recogniser(x, y, identities: int, seed: int, epochs: int = 25, lr: float = 2e-3):
    """A :class:`Recogniser` trained on images ``x`` with identities ``y`` (Adam, batch 128)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        rec = Recogniser(identities, x.shape[-1])
        gen = torch.Generator().manual_seed(int(seed) + 1)
        stream = index_stream(len(x), 128, gen)
        steps = epochs * -(-len(x) // 128)
        opt = make_optimizer(rec.parameters(), "adam", lr)

        def loss_fn(t: int) -> torch.Tensor:
            idx = next(stream)
            return F.cross_entropy(rec(x[idx]), y[idx])

        optimize(rec, opt, steps, loss_fn)
    rec.eval()
    for p in rec.parameters():
        p.requires_grad_(False)
    return rec


@dataclass(frozen=True)
class GeneratorRecipe:
    """Training of the generator and its latents (original and oracle)."""

    steps: int = 3000
    batch_size: int = 128
    lr: float = 2e-3

    def __post_init__(self) -> None:
        check_fields(self, "generator recipe")
        if self.steps < 1 or self.batch_size < 1 or not self.lr > 0:
            raise UnlearnError("generator recipe needs steps >= 1, batch_size >= 1 and lr > 0")

    def to_dict(self) -> dict:
        return asdict(self)


@register_task
class GeneratorTask(Task):
    """Generation, identity similarity, inversion and training of an identity generator."""

    family = "generator"
    recipe_type = GeneratorRecipe
    provides = frozenset({"generate", "identities", "fit", "reinit"})

    def __init__(self, recogniser: Recogniser, shift: int = 2, device="cpu"):
        if not isinstance(recogniser, Recogniser):
            raise UnlearnError(
                f"a generator task needs a Recogniser, got {type(recogniser).__name__}"
            )
        self.recogniser = recogniser.to(resolve_device(device))
        self.shift = int(shift)
        self.device = resolve_device(device)

    def check_model(self, model) -> None:
        if not isinstance(model, IdentityGenerator):
            raise UnlearnError(
                f"a generator task runs on an IdentityGenerator, got {type(model).__name__}"
            )

    def as_data(self, data):
        from ..data.identities import IdentityData

        if not isinstance(data, IdentityData):
            raise UnlearnError(f"a generator task needs IdentityData, got {type(data).__name__}")
        return data

    def size(self, data) -> int:
        return len(data)

    def take(self, data, idx):
        return data.data.x[idx], data.data.y[idx], data.view[idx]

    def views(self, n: int, gen: torch.Generator) -> torch.Tensor:
        from ..data.identities import random_views

        return random_views(n, self.shift, gen)

    @torch.no_grad()
    def generate(self, model: IdentityGenerator, w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        was = model.training
        model.eval()
        try:
            return model(w.to(self.device), v.to(self.device)).cpu()
        finally:
            model.train(was)

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.recogniser.embed(images[s : s + 1000].to(self.device)).cpu()
             for s in range(0, len(images), 1000)]
        ) if len(images) else torch.zeros(0, self.recogniser.fc.out_features)  # fmt: skip

    def centroids(self, data) -> torch.Tensor:
        """Each identity's unit-norm mean embedding over its real images."""
        e = self.embed(data.data.x)
        k = data.identities
        sums = torch.zeros(k, e.shape[1]).index_add_(0, data.data.y, e)
        return F.normalize(sums, dim=1)

    def invert(
        self,
        model: IdentityGenerator,
        images: torch.Tensor,
        steps: int = 300,
        lr: float = 0.05,
        seed: int = 0,
    ) -> torch.Tensor:
        """The identity latent that best reconstructs ``images`` (several views of one
        identity): one latent from ``w_avg`` and a view latent per image from 0, fitted
        by Adam to the images' mean squared error, the generator frozen."""
        if images.ndim != 4 or len(images) == 0:
            raise UnlearnError(f"invert needs images (N, 1, S, S), got {tuple(images.shape)}")
        was = [p.requires_grad for p in model.parameters()]
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                w = model.w_avg.detach().clone().to(self.device).requires_grad_(True)
                v = torch.zeros(len(images), model.config["view_dim"], device=self.device)
                v.requires_grad_(True)
                opt = torch.optim.Adam([w, v], lr=lr)
                target = images.to(self.device)
                model.eval()
                for _ in range(int(steps)):
                    out = model(w.expand(len(images), -1), v)
                    loss = F.mse_loss(out, target)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        finally:
            for p, r in zip(model.parameters(), was, strict=True):
                p.requires_grad_(r)
        return w.detach().cpu()

    def fresh_model(self, model: IdentityGenerator, seed: int) -> IdentityGenerator:
        return IdentityGenerator(**model.config, seed=seed)

    def fit(self, model: IdentityGenerator, data, recipe: GeneratorRecipe, seed: int) -> int:
        """Generative latent optimisation: the network and the latents of the identities in
        ``data`` fitted to reconstruct its images (MSE); other identities keep their initial
        latents (a model trained without them has never seen them)."""
        if len(data) == 0:
            raise UnlearnError("cannot train a generator on an empty set")
        model.to(self.device).train()
        lat = nn.Parameter(model.latents.detach().clone())
        gen = torch.Generator().manual_seed(int(seed))
        opt = make_optimizer([*model.parameters(), lat], "adam", recipe.lr)
        stream = index_stream(len(data), recipe.batch_size, gen)

        def loss_fn(t: int) -> torch.Tensor:
            x, y, v = self.take(data, next(stream))
            return F.mse_loss(model(lat[y.to(self.device)], v.to(self.device)), x.to(self.device))

        steps = optimize(model, opt, recipe.steps, loss_fn)
        with torch.no_grad():
            model.latents.copy_(lat.detach())
        model.eval()
        return steps
