"""The diffusion task: class-conditional denoising diffusion models (Hugging Face ``diffusers``).

A model is any module called as ``model(x_t, t, class_labels=c)`` that returns the
predicted noise (a tensor, or an object with ``.sample`` as ``diffusers`` models
return), for instance a ``diffusers.UNet2DModel`` with ``num_class_embeds`` set to
the number of classes plus one: the last class index is the *null* condition that
classifier-free guidance needs. Training (:meth:`DiffusionTask.fit`, the base model
and the oracle) is DDPM's noise-prediction objective with the label replaced by the
null class with probability ``cond_dropout``; sampling (:meth:`DiffusionTask.sample`)
is DDIM with classifier-free guidance ``eps_u + w (eps_c - eps_u)``.

Data is an :class:`~unlearn.data.core.ArrayData` of images (N, C, H, W) in [-1, 1]
with class labels; a batch is ``(x, y)``. Capabilities beyond the base ones:

- ``loss``: :meth:`mean_loss`, the denoising loss of a batch (what fine-tuning minimises);
- ``denoise``: :meth:`eps`, :meth:`noisy`, :meth:`denoise_loss` with an explicit condition;
- ``conditions``: a fixed label set with a null class (``num_classes``, ``null_class``);
- ``sampling``: :meth:`sample` (DDIM, guidance, optionally stopped partway, as ESD needs).
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

__all__ = ["DiffusionRecipe", "DiffusionTask", "class_unet"]


@dataclass(frozen=True)
class DiffusionRecipe:
    """How the base model and the oracle are trained: ``steps`` optimiser steps on batches
    of ``batch_size`` drawn with replacement across passes, ``lr`` (peak of the one-cycle
    schedule), and an exponential moving average of the weights (``ema_decay``; 0: none;
    with the usual warm-up, decay ``min(ema_decay, (1 + t) / (10 + t))`` at step ``t``)
    that becomes the trained model."""

    steps: int = 4000
    batch_size: int = 64
    lr: float = 2e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    schedule: str = "onecycle"
    ema_decay: float = 0.0

    def __post_init__(self) -> None:
        check_fields(self, "diffusion recipe")
        if self.steps < 1 or self.batch_size < 1 or not self.lr > 0:
            raise UnlearnError("diffusion recipe needs steps >= 1, batch_size >= 1 and lr > 0")
        if self.optimizer not in ("adamw", "adam", "sgd"):
            raise UnlearnError(f"unknown optimizer {self.optimizer!r} (adamw, adam or sgd)")
        if self.schedule not in ("onecycle", "cosine", "constant"):
            raise UnlearnError(f"unknown schedule {self.schedule!r} (onecycle, cosine, constant)")
        if not 0 <= self.ema_decay < 1 or self.weight_decay < 0:
            raise UnlearnError("ema_decay must lie in [0, 1) and weight_decay be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


def class_unet(
    num_classes: int,
    size: int = 16,
    channels: int = 1,
    block_out_channels: tuple[int, ...] = (16, 32, 64),
    layers_per_block: int = 1,
    attention: bool = False,
    norm_num_groups: int = 8,
    seed: int = 0,
) -> nn.Module:
    """A class-conditional ``diffusers.UNet2DModel`` with ``num_classes + 1`` class
    embeddings (the last is the null condition), initialised from ``seed``."""
    from diffusers import UNet2DModel

    levels = len(block_out_channels)
    if levels < 1 or size % (2 ** (levels - 1)):
        raise UnlearnError(
            f"a {size}x{size} image cannot be halved {levels - 1} times "
            f"(block_out_channels {list(block_out_channels)})"
        )
    if any(c % norm_num_groups for c in block_out_channels):
        raise UnlearnError(
            f"every entry of block_out_channels {list(block_out_channels)} must be a multiple "
            f"of norm_num_groups {norm_num_groups}"
        )
    last_down = "AttnDownBlock2D" if attention else "DownBlock2D"
    first_up = "AttnUpBlock2D" if attention else "UpBlock2D"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return UNet2DModel(
            sample_size=size,
            in_channels=channels,
            out_channels=channels,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            down_block_types=("DownBlock2D",) * (levels - 1) + (last_down,),
            up_block_types=(first_up,) + ("UpBlock2D",) * (levels - 1),
            num_class_embeds=num_classes + 1,
            norm_num_groups=norm_num_groups,
        )


@register_task
class DiffusionTask(Task):
    """Denoising loss, guided sampling and DDPM training of a class-conditional model."""

    family = "diffusion"
    recipe_type = DiffusionRecipe
    provides = frozenset(
        {"loss", "denoise", "conditions", "sampling", "fit", "reinit", "membership"}
    )

    def __init__(
        self,
        num_classes: int,
        *,
        timesteps: int = 1000,
        beta_schedule: str = "squaredcos_cap_v2",
        cond_dropout: float = 0.1,
        sample_steps: int = 20,
        guidance: float = 2.0,
        device: str | torch.device = "cpu",
        eval_batch: int = 500,
    ):
        from diffusers import DDPMScheduler

        if num_classes < 2:
            raise UnlearnError("a class-conditional diffusion model needs at least two classes")
        if timesteps < 2 or sample_steps < 1 or sample_steps > timesteps:
            raise UnlearnError(
                f"need timesteps >= 2 and 1 <= sample_steps <= timesteps, got {timesteps} and "
                f"{sample_steps}"
            )
        if not 0 <= cond_dropout < 1:
            raise UnlearnError(f"cond_dropout must lie in [0, 1), got {cond_dropout}")
        if not guidance >= 0:
            raise UnlearnError(f"guidance must be >= 0, got {guidance}")
        try:
            self.scheduler = DDPMScheduler(
                num_train_timesteps=int(timesteps), beta_schedule=beta_schedule
            )
        except NotImplementedError as exc:
            raise UnlearnError(f"unknown beta_schedule {beta_schedule!r}: {exc}") from None
        self.num_classes = int(num_classes)
        self.null_class = self.num_classes
        self.timesteps = int(timesteps)
        self.cond_dropout = float(cond_dropout)
        self.sample_steps = int(sample_steps)
        self.guidance = float(guidance)
        self.device = resolve_device(device)
        self.eval_batch = int(eval_batch)
        self._alphas = self.scheduler.alphas_cumprod.float()

    def settings(self) -> dict:
        """What defines the training objective (the sampler's settings do not: a cached
        model stays valid when they change)."""
        return {
            "num_classes": self.num_classes,
            "timesteps": self.timesteps,
            "beta_schedule": self.scheduler.config.beta_schedule,
            "cond_dropout": self.cond_dropout,
        }

    # -- models ------------------------------------------------------------------------
    def check_model(self, model) -> None:
        super().check_model(model)
        n = getattr(getattr(model, "config", None), "num_class_embeds", None)
        if n is not None and n < self.num_classes + 1:
            raise UnlearnError(
                f"the model has {n} class embeddings; {self.num_classes} classes and the null "
                f"condition need {self.num_classes + 1}"
            )

    def eps(self, model: nn.Module, x_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor):
        """The model's noise prediction for ``x_t`` at timesteps ``t`` under labels ``c``."""
        dev = self._device_of(model)
        out = model(x_t.to(dev), t.to(dev), class_labels=c.to(dev))
        return out.sample if hasattr(out, "sample") else out

    def _device_of(self, model: nn.Module) -> torch.device:
        p = next(model.parameters(), None)
        return self.device if p is None else p.device

    # -- the objective ----------------------------------------------------------------------
    def noisy(self, x: torch.Tensor, t: torch.Tensor | None = None, gen=None):
        """``(x_t, t, noise)``: ``x`` noised at timesteps ``t`` (uniform when None)."""
        if t is None:
            t = torch.randint(0, self.timesteps, (len(x),), generator=gen)
        noise = torch.randn(x.shape, generator=gen)
        a = self._alphas[t].view(-1, *([1] * (x.ndim - 1)))
        return a.sqrt() * x + (1 - a).sqrt() * noise, t, noise

    def denoise_loss(
        self, model: nn.Module, x: torch.Tensor, c: torch.Tensor, reduction: str = "mean", gen=None
    ) -> torch.Tensor:
        """DDPM's noise-prediction loss ``||eps - eps_theta(x_t, t | c)||^2`` of images ``x``
        under labels ``c`` (per example with ``reduction='none'``)."""
        x_t, t, noise = self.noisy(x, gen=gen)
        err = (self.eps(model, x_t, t, c) - noise.to(self._device_of(model))) ** 2
        per = err.flatten(1).mean(1)
        return per.mean() if reduction == "mean" else per

    def drop_conditions(self, y: torch.Tensor, gen=None) -> torch.Tensor:
        """Labels with each replaced by the null class with probability ``cond_dropout``."""
        if self.cond_dropout == 0:
            return y
        drop = torch.rand(len(y), generator=gen) < self.cond_dropout
        return torch.where(drop, torch.full_like(y, self.null_class), y)

    def as_data(self, data):
        from ..data.core import as_array_data

        out = as_array_data(data)
        if out.x.ndim != 4:
            raise UnlearnError(
                f"a diffusion task needs images (N, C, H, W), got shape {tuple(out.x.shape)}"
            )
        return out

    def take(self, data, idx):
        return data.x[idx], data.y[idx]

    def per_example_loss(self, model: nn.Module, batch) -> torch.Tensor:
        """Each image's denoising loss under its label, with condition dropout (the
        training objective, so a fine-tuned model keeps its unconditional branch)."""
        x, y = batch
        return self.denoise_loss(model, x, self.drop_conditions(y), reduction="none")

    def mean_loss(self, model: nn.Module, batch) -> torch.Tensor:
        return self.per_example_loss(model, batch).mean()

    @torch.no_grad()
    def membership_scores(self, model: nn.Module, data, draws: int = 8, seed: int = 0):
        """Each image's denoising loss under its label, averaged over ``draws`` seeded
        timesteps and noises (the loss attack's score; lower: more likely a member)."""
        gen = torch.Generator().manual_seed(int(seed))
        total = torch.zeros(len(data))
        was = model.training
        model.eval()
        try:
            for _ in range(draws):
                for s in range(0, len(data), self.eval_batch):
                    x, y = data.x[s : s + self.eval_batch], data.y[s : s + self.eval_batch]
                    total[s : s + len(x)] += self.denoise_loss(
                        model, x, y, reduction="none", gen=gen
                    ).cpu()
        finally:
            model.train(was)
        return (total / draws).numpy()

    # -- sampling ---------------------------------------------------------------------------
    def guided_eps(self, model, z, t, labels, guidance: float) -> torch.Tensor:
        """``eps_u + w (eps_c - eps_u)`` (one batched call; ``w = 1``: the conditional alone)."""
        tt = torch.full((len(z),), int(t), dtype=torch.long)
        if guidance == 1.0:
            return self.eps(model, z, tt, labels)
        null = torch.full_like(labels, self.null_class)
        e = self.eps(model, torch.cat([z, z]), torch.cat([tt, tt]), torch.cat([labels, null]))
        e_c, e_u = e.chunk(2)
        return e_u + guidance * (e_c - e_u)

    def ddim(self, steps: int | None = None):
        """A DDIM scheduler for this task's noise schedule, set to ``steps`` steps; the
        steps are spaced from the last timestep down ("trailing"), so sampling starts
        from pure noise at ``timesteps - 1``."""
        from diffusers import DDIMScheduler

        sched = DDIMScheduler.from_config(self.scheduler.config, timestep_spacing="trailing")
        sched.set_timesteps(int(steps or self.sample_steps))
        return sched

    def sample(
        self,
        model: nn.Module,
        labels: torch.Tensor | list[int],
        *,
        guidance: float | None = None,
        steps: int | None = None,
        seed: int = 0,
        stop_at: int | None = None,
        shape: tuple[int, ...] | None = None,
        grad: bool = False,
    ) -> torch.Tensor:
        """Images for ``labels`` by DDIM (``steps``, default ``sample_steps``) with guidance
        ``guidance`` (default the task's), from seeded noise, in batches of ``eval_batch``.
        ``stop_at=i`` returns the partly denoised ``x_t`` after ``i`` steps instead (its
        timestep is ``ddim(steps).timesteps[i]``), as ESD trains on."""
        labels = torch.as_tensor(labels, dtype=torch.long)
        w = self.guidance if guidance is None else float(guidance)
        if shape is None:
            shape = self.image_shape(model)
        gen = torch.Generator().manual_seed(int(seed))
        sched = self.ddim(steps)
        ts = sched.timesteps if stop_at is None else sched.timesteps[: int(stop_at)]
        dev = self._device_of(model)
        was = model.training
        model.eval()
        out = []
        try:
            with torch.set_grad_enabled(grad):
                for s in range(0, len(labels), self.eval_batch):
                    lab = labels[s : s + self.eval_batch]
                    z = torch.randn((len(lab), *shape), generator=gen).to(dev)
                    for t in ts:
                        e = self.guided_eps(model, z, t, lab, w)
                        z = sched.step(e, t, z).prev_sample
                    out.append(z if stop_at is not None else z.clamp(-1, 1))
        finally:
            model.train(was)
        if not out:
            return torch.zeros((0, *shape))
        return torch.cat(out).cpu()

    def image_shape(self, model: nn.Module) -> tuple[int, ...]:
        cfg = getattr(model, "config", None)
        size, ch = getattr(cfg, "sample_size", None), getattr(cfg, "in_channels", None)
        if size is None or ch is None:
            raise UnlearnError(
                "cannot tell the image shape of this model (no config.sample_size / "
                "in_channels): pass shape=(C, H, W)"
            )
        hw = (size, size) if isinstance(size, int) else tuple(size)
        return (int(ch), *hw)

    # -- training ---------------------------------------------------------------------------
    def fresh_model(self, model: nn.Module, seed: int) -> nn.Module:
        from ..methods._common import reinitialise

        return reinitialise(model, seed)

    def fit(self, model: nn.Module, data, recipe: DiffusionRecipe, seed: int) -> int:
        """Train ``model`` on ``data`` (images and labels) with DDPM's objective and condition
        dropout; with ``ema_decay`` the weights' moving average replaces them at the end."""
        if len(data) == 0:
            raise UnlearnError("cannot train a diffusion model on an empty set")
        if int(data.y.max()) >= self.num_classes or int(data.y.min()) < 0:
            raise UnlearnError(
                f"labels must lie in [0, {self.num_classes}); the null class is the model's"
            )
        model.to(self.device).train()
        gen = torch.Generator().manual_seed(int(seed))
        noise_gen = torch.Generator().manual_seed(int(seed) + 7919)
        opt = make_optimizer(model.parameters(), recipe.optimizer, recipe.lr, recipe.weight_decay)
        stream = index_stream(len(data), recipe.batch_size, gen)
        ema = None
        if recipe.ema_decay > 0:
            ema = [p.detach().clone() for p in model.parameters()]

        def loss_fn(t: int) -> torch.Tensor:
            x, y = self.take(data, next(stream))
            return self.denoise_loss(model, x, self.drop_conditions(y, noise_gen), gen=noise_gen)

        done = [0]

        def update_ema() -> None:
            if ema is not None:
                t = done[0]
                decay = min(recipe.ema_decay, (1 + t) / (10 + t))
                done[0] += 1
                with torch.no_grad():
                    for e, p in zip(ema, model.parameters(), strict=True):
                        e.lerp_(p.detach(), 1 - decay)

        steps = optimize(
            model, opt, recipe.steps, loss_fn, schedule=recipe.schedule, after_step=[update_ema]
        )
        if ema is not None:
            with torch.no_grad():
                for e, p in zip(ema, model.parameters(), strict=True):
                    p.copy_(e)
        model.eval()
        return steps


def labels_for(classes: list[int] | np.ndarray, per_class: int) -> torch.Tensor:
    """``per_class`` copies of every class in ``classes``, grouped by class."""
    return torch.as_tensor(np.repeat(np.asarray(classes, dtype=np.int64), int(per_class)))


def upsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] resized bilinearly to ``size`` x ``size`` and mapped to
    [-1, 1] (the range DDPM's clipping assumes)."""
    if images.ndim != 4:
        raise UnlearnError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    x = images.float()
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x.clamp(0, 1) * 2 - 1).contiguous()
