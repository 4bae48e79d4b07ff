"""KUnBR: knowledge density estimation and block re-insertion ("Beyond Superficial
Forgetting", ``../shared/papers/NOTES.md`` section 10).

Ordinary unlearning of a language model mostly changes a few output-side "cover"
layers; the facts stay in the deeper ones and a little fine-tuning brings them
back. KUnBR runs in two stages:

1. **Superficial unlearning**: gradient difference (ascent on the forget set plus
   ``alpha`` times the retain loss) with the shared loop, its step budget and its
   early stop on the probe (``target_forget_acc``), exactly as ``graddiff``.
2. **Block re-insertion**: the decoder layers are cut into contiguous blocks
   (``blocks``, or ``block_size`` layers each). Each of ``rounds`` rounds takes one
   block of the unlearned model, inserts it into a copy of the *original* model
   (whose other layers still know the facts, so no cover layer can hide them),
   trains only that block there on ``-NLL(forget) + c * NLL(retain)`` for
   ``round_steps`` steps (one pass over the forget set by default), and copies it
   back into the unlearned model. The optimiser state starts afresh every round,
   as in the released code.

Which blocks (``select``):

- ``density`` (default): the blocks with the highest knowledge density, the
  ``top_k`` densest cycled densest first. **The density formula is a
  reconstruction**: the released code defines density selectors but never calls
  them. Ours is the root-mean-square, per parameter of the block, of the gradient of
  the mean forget-set NLL, on the original model (``density_on: original``: where the
  facts are stored) or on the stage-1 model (``density_on: unlearned``: where the
  loss still finds them). The scores of every block are in the run record.
- ``released``: the released code's order: block 0 for ``visits`` consecutive
  rounds, then block 1, and so on (18 rounds of 3 visits on 8 blocks there, so the
  two output-side blocks are never re-inserted); no density is used (the scores are
  still computed and recorded, for comparison).

The paper trains with Lion (lr 2e-7, batch 6); Lion is not in PyTorch, so the
optimiser is the loop's (AdamW by default for language models).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from ...errors import UnlearnError
from ...training import make_optimizer, optimize
from ..base import register
from ..gradient_ascent import GradDiff, GradDiffConfig
from ..loop import LM_PRESET


@dataclass(frozen=True)
class KUnBRConfig(GradDiffConfig):
    """Stage 1 is ``graddiff`` with the shared options (``steps``, ``lr``, ``alpha``,
    ``target_forget_acc``...); the rest configure the re-insertion rounds."""

    blocks: int = 6
    block_size: int = 0  # layers per block; 0: split the layers into ``blocks`` blocks
    rounds: int = 6
    round_steps: int = 0  # 0: one pass over the forget set (ceil(n_forget / batch_size))
    round_lr: float = 0.0  # 0: the stage-1 ``lr``
    c: float = 1.0  # weight of the retain NLL during re-insertion
    select: str = "density"
    top_k: int = 2
    visits: int = 3
    density_on: str = "original"

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = []
        if self.blocks < 1 or self.block_size < 0:
            bad.append("blocks must be >= 1 and block_size >= 0")
        if self.rounds < 0 or self.round_steps < 0:
            bad.append("rounds and round_steps must be >= 0")
        if self.round_lr < 0 or self.c < 0:
            bad.append("round_lr and c must be >= 0")
        if self.select not in ("density", "released"):
            bad.append(f"select must be 'density' or 'released', got {self.select!r}")
        if self.top_k < 1 or self.visits < 1:
            bad.append("top_k and visits must be >= 1")
        if self.density_on not in ("original", "unlearned"):
            bad.append(f"density_on must be 'original' or 'unlearned', got {self.density_on!r}")
        if bad:
            raise UnlearnError("; ".join(bad))


def layer_blocks(n_layers: int, blocks: int, block_size: int = 0) -> list[list[int]]:
    """Contiguous groups of layer indices, input side first: ``block_size`` layers each
    (the last block takes the remainder), or ``blocks`` groups as even as possible (at
    most one per layer)."""
    if n_layers < 1:
        raise UnlearnError("the model has no layers to split into blocks")
    if block_size > 0:
        return [
            list(range(i, min(i + block_size, n_layers))) for i in range(0, n_layers, block_size)
        ]
    k = min(int(blocks), n_layers)
    edges = [round(i * n_layers / k) for i in range(k + 1)]
    return [list(range(edges[i], edges[i + 1])) for i in range(k)]


def block_order(density: list[float], cfg: KUnBRConfig) -> list[int]:
    """The block re-inserted in each round."""
    n = len(density)
    if cfg.select == "released":
        return [min(r // cfg.visits, n - 1) for r in range(cfg.rounds)]
    ranked = sorted(range(n), key=lambda b: (-density[b], b))[: min(cfg.top_k, n)]
    return [ranked[r % len(ranked)] for r in range(cfg.rounds)]


@register
class KUnBR(GradDiff):
    name = "kunbr"
    summary = (
        "Gradient difference, then decoder blocks re-inserted one at a time into the original "
        "and unlearned there (densest first)."
    )
    requires = ("logprob", "layers")
    request_kinds = ("samples", "group")
    presets = {"causal_lm": LM_PRESET}
    Config = KUnBRConfig

    def prepare(self, ctx):
        super().prepare(ctx)
        if self.config.lora_rank > 0:
            raise UnlearnError(
                "kunbr trains whole decoder blocks: set lora_rank 0 (LoRA adapters would leave "
                "the re-inserted block's weights as they are)"
            )

    def touched(self) -> str:
        return "all parameters (stage 1), then the chosen decoder blocks"

    # -- density ---------------------------------------------------------------------
    def _density(self, model: nn.Module, ctx, groups: list[list[int]]) -> list[float]:
        """RMS per parameter of the gradient of the mean forget NLL, per block."""
        task = ctx.task
        layers = task.layers(model)
        was = [p.requires_grad for p in model.parameters()]
        for p in model.parameters():
            p.requires_grad_(False)
        params = [[p for i in g for p in layers[i].parameters()] for g in groups]
        for ps in params:
            for p in ps:
                p.requires_grad_(True)
                p.grad = None
        forget = ctx.forget
        n = task.size(forget)
        bs = self.config.batch_size
        batches = [list(range(s, min(s + bs, n))) for s in range(0, n, bs)]
        for idx in batches:
            loss = task.mean_loss(model, task.take(forget, idx)) / len(batches)
            loss.backward()
        out = []
        for ps in params:
            sq = sum(float((p.grad.double() ** 2).sum()) for p in ps if p.grad is not None)
            count = sum(p.numel() for p in ps)
            out.append(math.sqrt(sq / max(count, 1)))
        for p, w in zip(model.parameters(), was, strict=True):
            p.grad = None
            p.requires_grad_(w)
        return out

    # -- the two stages ----------------------------------------------------------------
    def unlearn(self, model, ctx):
        cfg = self.config
        model, steps1 = super().unlearn(model, ctx)  # stage 1: graddiff with the shared loop
        task = ctx.task
        n_layers = len(task.layers(model))
        groups = layer_blocks(n_layers, cfg.blocks, cfg.block_size)
        # the original's copy that blocks are re-inserted into; before the first round it
        # is the original itself, so the density "on the original" is taken on it (never
        # on the caller's model, which must not get gradients)
        hybrid = copy.deepcopy(ctx.original).to(task.device).eval()
        density = self._density(hybrid if cfg.density_on == "original" else model, ctx, groups)
        order = block_order(density, cfg)
        layers_u, layers_h = task.layers(model), task.layers(hybrid)
        layers_o = task.layers(ctx.original)  # read only: restores the hybrid's blocks
        n_forget = task.size(ctx.forget)
        per_round = cfg.round_steps or max(1, -(-n_forget // cfg.batch_size))
        lr = cfg.round_lr or cfg.lr
        forget = self.stream(ctx, ctx.forget, 11)
        retain = self.stream(ctx, ctx.retain, 12) if task.size(ctx.retain) and cfg.c else None
        for p in hybrid.parameters():
            p.requires_grad_(False)
        hybrid.train()
        steps2 = 0
        for b in order:
            with torch.no_grad():
                for i in groups[b]:
                    layers_h[i].load_state_dict(layers_u[i].state_dict())
            params = [p for i in groups[b] for p in layers_h[i].parameters()]
            for p in params:
                p.requires_grad_(True)
            opt = make_optimizer(params, cfg.optimizer, lr, cfg.weight_decay, cfg.momentum)

            def loss_fn(t: int) -> torch.Tensor:
                _, fb = next(forget)
                loss = -task.mean_loss(hybrid, fb)
                if retain is not None:
                    _, rb = next(retain)
                    loss = loss + cfg.c * task.mean_loss(hybrid, rb)
                return loss

            steps2 += optimize(hybrid, opt, per_round, loss_fn, grad_clip=cfg.grad_clip)
            with torch.no_grad():
                for i in groups[b]:
                    layers_u[i].load_state_dict(layers_h[i].state_dict())
                    layers_h[i].load_state_dict(layers_o[i].state_dict())
            for p in params:
                p.requires_grad_(False)

        self._extra["kunbr"] = {
            "blocks": [[g[0], g[-1]] for g in groups],
            "density": density,
            "density_on": cfg.density_on,
            "select": cfg.select,
            "order": order,
            "stage1_steps": int(steps1),
            "round_steps": per_round,
        }
        return model, steps1 + steps2
