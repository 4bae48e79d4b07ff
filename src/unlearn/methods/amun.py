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

Where this differs: the batching, set by ``batching``.

- ``"paired"`` (the default, as for the other methods of this package): each
  step draws ``batch_size`` samples of D_A (+ D_F) and adds ``retain_batch``
  retain samples, a fixed 50/50 mix at the defaults (128 + 128); ``epochs``
  counts passes over D_A (+ D_F), and the retain samples come from a
  shuffled stream of their own, as many per epoch as those steps take.
- ``"union"`` (the authors'): D_R (``use_retain``), D_F with its true labels
  (``include_forget``) and D_A with its adversarial labels (one example per
  forget sample whose label PGD could change) form one data set,
  shuffled afresh every pass by a seeded stream; each step takes the next
  ``batch_size`` samples of that pass without replacement (the last batch of
  a pass is the remainder), an epoch is one pass over the union, so
  ceil(|union| / batch_size) steps, and ``epochs`` counts those passes; the
  loss is the mean cross-entropy over the batch; ``retain_batch`` is unused.
  The mix is then the sets' sizes: forgetting a fraction f of the training
  set, D_F and D_A make 2f / ((1 - f) + 2f) = 2f / (1 + f) of the union,
  2 * 0.1 / (0.9 + 2 * 0.1) = 0.2 / 1.1, about 18 %, at 10 % forgetting, and
  an epoch takes (1 + f) / (2f) = 5.5 times the steps of a paired epoch.

In their code (``adversarial_unlearn.py``) ``amun`` with the retain set
trains on the whole training set D = D_R + D_F (kept, not filtered, for
``amun``) concatenated with D_A; without it on D_F + D_A; their ``advonly``
on D_R + D_A or D_A alone. The retain set is not subsampled (their
``--use_remain_sample`` is off by default and does not apply to ``amun``).
A ``torch.utils.data.DataLoader`` with ``shuffle=True`` and the default
``drop_last=False`` is rebuilt every epoch, ``--epochs`` (10) epochs of
``--batch_size`` (128; 256 on Tiny ImageNet) with ``nn.CrossEntropyLoss``.
They augment D_R and D_F (random crop and flip), not D_A; here nothing is
augmented. Their learning rate follows a ``StepLR`` (gamma 0.1, stepped
every epoch) whose step, ``--LRsteps``, their sweep script
``hyperparam_tune.py`` sets to 1 by default, so the rate falls tenfold each
epoch; here the ``schedule`` is constant unless set. They search adversarial
examples for the whole training set once, offline; here the search runs on
the forget set at unlearning time (and counts in the method's time). Inputs
are clipped to ``clamp`` only if given (the authors clip images to [0, 1]).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass

import torch

from ..attacks.pgd import nearest_adversarial
from ..data.core import ArrayData
from ..errors import UnlearnError
from ..training import index_stream
from .base import register
from .loop import TrainConfig, TrainedMethod

#: how the training batches are formed (see the module docstring)
BATCHINGS = ("paired", "union")


@dataclass(frozen=True)
class AmunConfig(TrainConfig):
    """Defaults of the authors' code: SGD (lr 0.01, momentum 0.9, wd 5e-4), 10 epochs, batch 128.

    ``batching`` is ``"paired"`` (default) or ``"union"`` (the authors'). Paired,
    ``epochs`` counts passes over the adversarial examples plus (with
    ``include_forget``) the forget samples, and each step adds ``retain_batch``
    retain samples (with ``use_retain``) to ``batch_size`` of those. Union,
    ``epochs`` counts passes over the union of the retain set (with
    ``use_retain``), the forget set (with ``include_forget``) and the
    adversarial examples, ``batch_size`` samples of it per step, and
    ``retain_batch`` is unused. ``norm`` and ``eps0`` set the
    search (PGD-L2 from 0.04 in the paper), ``pgd_steps`` its steps per
    budget and ``max_doublings`` how often a budget may double before the
    method gives up with an error.
    """

    epochs: float = 10.0
    lr: float = 0.01
    batch_size: int = 128  # adversarial (+ forget) samples per step; union: samples per step
    weight_decay: float = 5e-4
    use_retain: bool = True
    retain_batch: int = 128  # retain samples per step when use_retain (paired only)
    eps0: float = 0.04
    pgd_steps: int = 50
    norm: str = "l2"
    include_forget: bool = True
    max_doublings: int = 16
    clamp: tuple[float, float] | None = None  # input range, e.g. (0, 1) for images
    search_batch: int = 256  # samples attacked at once during the search
    batching: str = "paired"  # or "union": one shuffled pass over retain + forget + adversarial

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batching not in BATCHINGS:
            allowed = ", ".join(repr(b) for b in BATCHINGS)
            raise UnlearnError(f"amun batching must be one of {allowed}, got {self.batching!r}")


#: the active search cache (None: every run searches); see shared_adversarial_search
_CACHE: dict | None = None


@contextlib.contextmanager
def shared_adversarial_search():
    """Within the block, AMUN runs that search the same weights for the same forget
    samples with the same options reuse one search: the U-LiRA reference models are
    unlearned once per AMUN row, and rows that differ only in how they train on the
    adversarial set would otherwise repeat the (dominant) PGD search. The result is
    exactly the one a new search gives; only the reused run's ``search_seconds`` is 0
    (and ``search_cached`` 1). Used for reference models only, never for a reported
    row, whose time must include its search."""
    global _CACHE
    outer = _CACHE
    _CACHE = {} if outer is None else outer
    try:
        yield
    finally:
        _CACHE = outer


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
            if cfg.batching == "paired" and cfg.retain_batch < 1:
                raise UnlearnError("amun with use_retain (paired batching) needs retain_batch >= 1")
            if len(ctx.retain) == 0:
                raise UnlearnError("amun with use_retain needs a non-empty retain set")
        if cfg.clamp is not None and (len(cfg.clamp) != 2 or cfg.clamp[0] >= cfg.clamp[1]):
            raise UnlearnError(f"amun clamp must be (low, high) with low < high, got {cfg.clamp}")

    def adversarial_set(self, model, ctx) -> tuple[ArrayData, dict]:
        """:meth:`_adversarial_set`, read from the search cache when one is active
        (:func:`shared_adversarial_search`); the cached stats say so."""
        if _CACHE is None:
            return self._adversarial_set(model, ctx)
        key = self._search_key(model, ctx)
        if key in _CACHE:
            adv, stats = _CACHE[key]
            return adv, {**stats, "search_seconds": 0.0, "search_cached": 1}
        adv, stats = self._adversarial_set(model, ctx)
        _CACHE[key] = (adv, stats)
        return adv, stats

    def _search_key(self, model, ctx) -> str:
        """Everything the search's result depends on: the weights, the forget samples and
        the search options (the search is deterministic: no random start)."""
        cfg = self.config
        h = hashlib.sha1()
        for name, t in model.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        h.update(ctx.forget.x.contiguous().numpy().tobytes())
        h.update(ctx.forget.y.contiguous().numpy().tobytes())
        opts = (cfg.eps0, cfg.norm, cfg.pgd_steps, cfg.max_doublings, cfg.search_batch, cfg.clamp)
        h.update(repr((opts, str(ctx.task.device))).encode())
        return h.hexdigest()

    def _adversarial_set(self, model, ctx) -> tuple[ArrayData, dict]:
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
        if cfg.batching == "union":
            self._setup_union(ctx, adv)
            return
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
        self._epoch_items = len(side)  # an epoch is a pass over the adversarial (+ forget) samples
        self._fb = self.stream(ctx, side, 1)
        self._rb = self.stream(ctx, ctx.retain, 2, cfg.retain_batch) if cfg.use_retain else None

    def _setup_union(self, ctx, adv: ArrayData) -> None:
        """One shuffled stream over retain (+) forget (+) adversarial samples, the authors'
        batching; the parts are indexed in place, not copied into one set."""
        cfg = self.config
        task = ctx.task
        parts = {
            "retain": ctx.retain if cfg.use_retain else None,
            "forget": ctx.forget if cfg.include_forget else None,
            "adversarial": adv,
        }
        sizes = {k: (task.size(v) if v is not None else 0) for k, v in parts.items()}
        self._extra.update({f"union_{k}": n for k, n in sizes.items()})
        used = [v for k, v in parts.items() if sizes[k] > 0]
        counts = torch.tensor([task.size(v) for v in used])
        self._epoch_items = int(counts.sum())
        self._extra["union_size"] = self._epoch_items
        self._fb = _union_batches(task, used, counts, cfg.batch_size, ctx.generator(1))
        self._rb = None

    def epoch_size(self, ctx):
        return self._epoch_items

    def objective(self, model, ctx, t):
        _, (xb, yb) = next(self._fb)
        if self._rb is not None:
            _, (xr, yr) = next(self._rb)
            xb, yb = torch.cat([xb, xr]), torch.cat([yb, yr])
        return ctx.task.loss(model, xb, yb)


def _union_batches(task, parts, counts: torch.Tensor, batch_size: int, gen: torch.Generator):
    """Endless ``(indices, (x, y))`` batches over the concatenation of ``parts``
    (``counts`` items each): a seeded permutation of the whole union every pass,
    ``batch_size`` at a time, the last batch of a pass the remainder. Within a batch
    the samples are grouped by part (the loss is a mean over the batch)."""
    ends = torch.cumsum(counts, 0)
    starts = ends - counts
    for idx in index_stream(int(ends[-1]), batch_size, gen):
        which = torch.bucketize(idx, ends, right=True)  # the part each index falls in
        xs, ys = [], []
        for k, part in enumerate(parts):
            local = idx[which == k] - starts[k]
            if len(local):
                x, y = task.take(part, local)
                xs.append(x)
                ys.append(y)
        yield idx, (torch.cat(xs), torch.cat(ys))
