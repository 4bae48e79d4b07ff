"""Judging generated images: a classifier trained on the real data, and the Frechet distance
in its feature space.

The usual Frechet Inception Distance needs the Inception network's weights, which cannot be
downloaded on the machines this toolkit is built on; :class:`Judge` is a small CNN trained
on the scenario's own real images instead, and :func:`frechet_distance` works on the
features of any extractor (a scenario's judge, or one a user brings: any callable mapping
images to an (N, d) array). Distances from different extractors are not comparable;
compare a model's distance with the original model's under the same extractor.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import nn

from ..errors import UnlearnError
from ..training import index_stream, make_optimizer, optimize

__all__ = [
    "Judge",
    "train_judge",
    "frechet_distance",
    "class_rates",
    "feature_frechet",
]


class Judge(nn.Module):
    """A two-convolution CNN over (C, H, W) images; :meth:`features` is its penultimate layer
    (the space the Frechet distance is computed in)."""

    def __init__(self, channels: int, size: int, num_classes: int, width: int = 16, dim: int = 64):
        super().__init__()
        if size % 4:
            raise UnlearnError(f"the judge needs an image side divisible by 4, got {size}")
        self.conv1 = nn.Conv2d(channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc = nn.Linear(2 * width * (size // 4) ** 2, dim)
        self.out = nn.Linear(dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        z = F.max_pool2d(F.relu(self.conv1(x)), 2)
        z = F.max_pool2d(F.relu(self.conv2(z)), 2)
        return F.relu(self.fc(z.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch: int = 1000) -> np.ndarray:
        self.eval()
        return (
            np.concatenate(
                [
                    self(images[s : s + batch]).argmax(1).numpy()
                    for s in range(0, len(images), batch)
                ]
            )
            if len(images)
            else np.zeros(0, dtype=np.int64)
        )

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch: int = 1000) -> np.ndarray:
        self.eval()
        if len(images) == 0:
            return np.zeros((0, self.fc.out_features))
        return np.concatenate(
            [self.features(images[s : s + batch]).double().numpy()
             for s in range(0, len(images), batch)]
        )  # fmt: skip


def train_judge(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    seed: int,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 1e-3,
    noise: float = 0.05,
) -> Judge:
    """A :class:`Judge` trained on real images ``x`` (N, C, H, W) with labels ``y`` (Adam,
    one-cycle schedule, Gaussian input noise of ``noise`` as light augmentation)."""
    if x.ndim != 4 or len(x) != len(y) or len(x) == 0:
        raise UnlearnError(
            f"the judge needs images (N, C, H, W) and N labels, got {tuple(x.shape)}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        judge = Judge(x.shape[1], x.shape[-1], num_classes)
        gen = torch.Generator().manual_seed(int(seed) + 1)
        stream = index_stream(len(x), batch_size, gen)
        steps = epochs * -(-len(x) // batch_size)

        def loss_fn(t: int) -> torch.Tensor:
            idx = next(stream)
            xb = x[idx] + noise * torch.randn(x[idx].shape, generator=gen)
            return F.cross_entropy(judge(xb), y[idx])

        optimize(judge, make_optimizer(judge.parameters(), "adam", lr), steps, loss_fn,
                 schedule="onecycle")  # fmt: skip
    judge.eval()
    return judge


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The Frechet distance between Gaussians fitted to feature sets ``a`` and ``b`` (rows are
    samples): ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``, the FID formula
    (Heusel et al. 2017) with sample covariances (``ddof=1``)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise UnlearnError(f"feature sets must be (N, d) with one d, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise UnlearnError("the Frechet distance needs at least two samples in each set")
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))

    def imaginary(m: np.ndarray) -> float:
        return float(np.abs(np.diagonal(m).imag).max()) if np.iscomplexobj(m) else 0.0

    with warnings.catch_warnings():  # a singular product is handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(sa @ sb)
        if not np.isfinite(root).all() or imaginary(root) > 1e-3:
            off = np.eye(len(sa)) * 1e-6  # offset both diagonals, as pytorch-fid does
            root = linalg.sqrtm((sa + off) @ (sb + off))
    if not np.isfinite(root).all() or imaginary(root) > 1e-3:  # pytorch-fid's tolerance
        raise UnlearnError(
            "the Frechet distance's matrix square root is not real (imaginary part "
            f"{imaginary(root):.3g}): too few samples for the feature dimension?"
        )
    root = np.real(root)
    value = float(mu @ mu + np.trace(sa) + np.trace(sb) - 2 * np.trace(root))
    if not np.isfinite(value):
        raise UnlearnError("the Frechet distance is not finite (degenerate features)")
    return max(value, 0.0)


def feature_frechet(
    embed: Callable[[torch.Tensor], np.ndarray], generated: torch.Tensor, real: torch.Tensor
) -> float:
    """:func:`frechet_distance` of ``embed(generated)`` against ``embed(real)``; ``embed`` is
    any feature extractor (a :class:`Judge`'s ``embed``, or one a user brings)."""
    return frechet_distance(np.asarray(embed(generated)), np.asarray(embed(real)))


def class_rates(predicted: np.ndarray, asked: np.ndarray, classes) -> dict[int, float]:
    """Per asked class, the percentage of its samples the judge labels as that class."""
    predicted, asked = np.asarray(predicted), np.asarray(asked)
    out = {}
    for c in classes:
        mine = asked == c
        if not mine.any():
            raise UnlearnError(f"no sample was asked for class {c}")
        out[int(c)] = 100.0 * float((predicted[mine] == c).mean())
    return out
