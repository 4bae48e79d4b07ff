"""AMUN, Adversarial Machine UNlearning (Ebrahimpour-Boroojeny et al., ICML 2025).

Paper: "Not All Wrong is Bad: Using Adversarial Examples for Unlearning"
(arXiv:2503.00917, first titled "AMUN: Adversarial Machine UNlearning");
authors' code: https://github.com/Ali-E/AMUN.

For every forget sample AMUN finds a nearby adversarial example (PGD-L2,
budget 0.04 doubled until the model misclassifies it, see
:func:`unlearn.attacks.pgd.nearest_adversarial`) and labels it with the
model's own (wrong) prediction there. Fine-tuning on those adversarial
examples *together with* the forget samples under their true labels lowers
the model's confidence around each forget sample, the way a model that never
saw it behaves, without teaching it a wrong label for the sample itself and
without moving the decision boundary far from the forget set.

What follows the authors' code (``adversarial_unlearn.py``, ``pgdl2_modified.py``):

- the search: PGD-L2 on the cross-entropy of the true label, step eps/10,
  50 steps, no random start; a sample stops at the first iterate the model
  misclassifies; samples never misclassified get their budget doubled and
  the attack continues from where it stopped. A forget sample the model
  already misclassifies is its own adversarial example (eps 0);
- the data: the adversarial set D_A with adversarial labels plus the forget
  set D_F with its labels (``include_forget``; without it, their "advonly"
  ablation), plus the retain set when available (``use_retain``);
- the optimiser: SGD, lr 0.01, momentum 0.9, weight decay 5e-4, 10 epochs,
  batches of 128.

Where this differs: the authors shuffle D_R, D_F and D_A into one data set
and make each epoch a pass over all of it, with CIFAR-style augmentation on
D_R and D_F; here, as for the other methods of this package, an epoch is a
pass over D_A + D_F and every step adds ``retain_batch`` retain samples
(no augmentation). They search adversarial examples for the whole training
set once, offline; here the search runs on the forget set at unlearning time
(and counts in the method's time). Inputs are clipped to ``clamp`` only if
given (the authors clip images to [0, 1]).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..attacks.pgd import nearest_adversarial
from ..data.core import ArrayData
from ..errors import UnlearnError
from .base import register
from .loop import TrainConfig, TrainedMethod


@dataclass(frozen=True)
class AmunConfig(TrainConfig):
    """Defaults of the authors' code: SGD (lr 0.01, momentum 0.9, wd 5e-4), 10 epochs, batch 128.

    ``epochs`` counts passes over the adversarial examples plus (with
    ``include_forget``) the forget samples. ``norm`` and ``eps0`` set the
    search (PGD-L2 from 0.04 in the paper), ``pgd_steps`` its steps per
    budget and ``max_doublings`` how often a budget may double before the
    method gives up with an error.
    """

    epochs: float = 10.0
    lr: float = 0.01
    batch_size: int = 128  # adversarial (+ forget) samples per step
    weight_decay: float = 5e-4
    use_retain: bool = True
    retain_batch: int = 128  # retain samples per step when use_retain
    eps0: float = 0.04
    pgd_steps: int = 50
    norm: str = "l2"
    include_forget: bool = True
    max_doublings: int = 16
    clamp: tuple[float, float] | None = None  # input range, e.g. (0, 1) for images
    search_batch: int = 256  # samples attacked at once during the search


@register
class Amun(TrainedMethod):
    name = "amun"
    summary = (
        "Fine-tune on the nearest adversarial examples of the forget samples (with their "
        "adversarial labels) together with the forget samples, optionally with retain samples."
    )
    request_kinds = ("samples", "group")
    requires = ("classes",)
    Config = AmunConfig

    def prepare(self, ctx) -> None:
        super().prepare(ctx)
        cfg = self.config
        if cfg.epochs <= 0 or cfg.lr <= 0 or cfg.batch_size < 1:
            raise UnlearnError("amun needs epochs > 0, lr > 0 and batch_size >= 1")
        if cfg.use_retain:
            if cfg.retain_batch < 1:
                raise UnlearnError("amun with use_retain needs retain_batch >= 1")
            if len(ctx.retain) == 0:
                raise UnlearnError("amun with use_retain needs a non-empty retain set")
        if cfg.clamp is not None and (len(cfg.clamp) != 2 or cfg.clamp[0] >= cfg.clamp[1]):
            raise UnlearnError(f"amun clamp must be (low, high) with low < high, got {cfg.clamp}")

    def adversarial_set(self, model, ctx) -> tuple[ArrayData, dict]:
        """The forget samples' nearest adversarial examples, labelled by ``model``, and stats.

        The stats are the search time, the mean and largest budget found (0
        for a sample the model already misclassifies), the share of
        adversarial labels that differ from the true labels, the share of
        samples already misclassified, and the mean L2 size of the perturbation.
        """
        cfg = self.config
        forget = ctx.forget
        t0 = time.perf_counter()
        x_adv, y_adv, eps, found = nearest_adversarial(
            model,
            forget.x.to(ctx.task.device),
            forget.y.to(ctx.task.device),
            eps0=cfg.eps0,
            norm=cfg.norm,
            steps=cfg.pgd_steps,
            max_doublings=cfg.max_doublings,
            batch_size=cfg.search_batch,
            clamp=None if cfg.clamp is None else tuple(cfg.clamp),
            return_found=True,
        )
        found = found.cpu()
        if not bool(found.any()):
            raise UnlearnError(
                "amun: PGD found no adversarial example for any forget sample "
                f"(up to eps {cfg.eps0 * 2**cfg.max_doublings:g}); raise max_doublings"
            )
        # Samples whose class PGD never changed (saturated, extremely confident
        # predictions) get no adversarial example; their count is recorded.
        x_adv, y_adv, eps = x_adv.cpu()[found], y_adv.cpu()[found], eps.cpu()[found]
        forget_x, forget_y = forget.x[found], forget.y[found]
        stats = {
            "no_adversarial_found": int((~found).sum()),
            "search_seconds": time.perf_counter() - t0,
            "eps_mean": float(eps.mean()),
            "eps_max": float(eps.max()),
            "adv_label_changed": float((y_adv != forget_y).float().mean()),
            "already_misclassified": float((eps == 0).float().mean()),
            "delta_l2_mean": float((x_adv - forget_x).flatten(1).norm(dim=1).mean()),
        }
        return ArrayData(x_adv, y_adv, forget.classes, "adversarial"), stats

    def setup(self, model, ctx):
        cfg = self.config
        adv, stats = self.adversarial_set(model, ctx)
        self._extra.update(stats)
        if cfg.include_forget:
            forget = ctx.forget
            side = ArrayData(
                torch.cat([adv.x, forget.x]),
                torch.cat([adv.y, forget.y]),
                forget.classes,
                "adversarial+forget",
            )
        else:
            side = adv
        self._side = side
        self._fb = self.stream(ctx, side, 1)
        self._rb = self.stream(ctx, ctx.retain, 2, cfg.retain_batch) if cfg.use_retain else None

    def epoch_size(self, ctx):
        return len(self._side)  # an epoch is a pass over the adversarial (+ forget) samples

    def objective(self, model, ctx, t):
        _, (xb, yb) = next(self._fb)
        if self._rb is not None:
            _, (xr, yr) = next(self._rb)
            xb, yb = torch.cat([xb, xr]), torch.cat([yb, yr])
        return ctx.task.loss(model, xb, yb)
