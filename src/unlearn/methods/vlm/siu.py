"""SIU: Single Image Unlearning for vision-language models (Li et al., NeurIPS 2024).

From one image of the concept, SIU builds four kinds of fine-tuning targets:

1. the image, asked to name what it shows, answered with an unseen name (the
   concept aligned with one that does not exist);
2. the image, asked to describe itself, answered with a new visual description;
3. the concept's facts asked by name with no image, answered as before (factual
   knowledge decoupled from visual recognition);
4. other concepts' items from the retain set (non-target knowledge kept).

Loss: ``ce_weight`` x cross-entropy on these targets, plus ``kl_weight`` x the Dual
Masked KL to the original model. The token-level mask leaves out the positions of
the deliberately contradicting phrases (the unseen name, the new description), so
the KL does not pull them back to the original answer. The vocabulary-level mask
removes the concept name's tokens from both distributions (renormalised), so the
KL does not keep the forgotten name probable. The paper weights CE by 0.9 and KL by
0.75, and trains LoRA r 128 (alpha 256) at lr 3e-4, batch 4, about 6 steps. The
masks follow the intended semantics (shifted next-token targets, positions
aligned with the answer's text tokens), not the quirks of the released trainer
(``../shared/papers/NOTES.md``, section 2).

The targets come from the context's ``siu`` alternative, a :class:`SIUTargets`:
the concept's name, the unseen name, the new description and the facts by name.
``siu_no_dmkl`` is the ablation without the KL term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import UnlearnError
from ..base import register
from ..loop import TrainConfig, TrainedMethod

__all__ = ["SIU", "SIUNoDMKL", "SIUConfig", "SIUTargets"]

#: the question of SIU's second target (a new visual description)
DESCRIBE = "Describe this image."


@dataclass(frozen=True)
class SIUTargets:
    """What SIU needs to know about the forgotten concept besides its image."""

    name: str
    new_name: str
    new_description: str
    facts: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for field in ("name", "new_name", "new_description"):
            v = getattr(self, field)
            if not isinstance(v, str) or not v.strip():
                raise UnlearnError(f"SIU targets need a non-empty {field}")
        if self.new_name.lower() == self.name.lower():
            raise UnlearnError("SIU's unseen name must differ from the concept's name")
        object.__setattr__(self, "facts", tuple((str(q), str(a)) for q, a in self.facts))


@dataclass(frozen=True)
class SIUConfig(TrainConfig):
    steps: int | None = 6
    lr: float = 3e-4
    batch_size: int = 4
    optimizer: str = "adamw"
    grad_clip: float = 1.0
    lora_rank: int = 128
    lora_alpha: float = 256.0
    ce_weight: float = 0.9
    kl_weight: float = 0.75
    #: retain items (other concepts) drawn per step, target kind 4
    preserve: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ce_weight <= 0 or self.kl_weight < 0 or self.preserve < 0:
            raise UnlearnError("siu needs ce_weight > 0, kl_weight >= 0 and preserve >= 0")


def masked_kl(logits, ref_logits, keep, vocab_out) -> torch.Tensor:
    """Mean over positions ``keep`` of ``KL(p_ref || p)``, both distributions without
    the vocabulary entries ``vocab_out`` (renormalised over the rest)."""
    if vocab_out.numel():
        logits = logits.index_fill(-1, vocab_out, float("-inf"))
        ref_logits = ref_logits.index_fill(-1, vocab_out, float("-inf"))
    lp = torch.log_softmax(logits.float(), dim=-1)
    lr = torch.log_softmax(ref_logits.float(), dim=-1)
    pr = lr.exp()
    term = torch.where(pr > 0, pr * (lr - lp), torch.zeros_like(pr)).sum(-1)
    k = keep.float()
    return (term * k).sum() / k.sum().clamp_min(1.0)


@register
class SIU(TrainedMethod):
    name = "siu"
    summary = (
        "SIU: one image of the concept, aligned with an unseen name and a new description, "
        "facts kept by name, CE plus the dual masked KL to the original."
    )
    request_kinds = ("samples", "group")
    requires = ("logprob", "images")
    Config = SIUConfig
    needs_reference = True

    def prepare(self, ctx):
        super().prepare(ctx)
        t = ctx.alternatives.get("siu")
        if not isinstance(t, SIUTargets):
            raise UnlearnError(
                f"{self.name} needs the concept's SIU targets in the context "
                "(alternatives={'siu': SIUTargets(name, new_name, new_description, facts)})"
            )
        imgs = [img for img, _, _ in ctx.forget if img is not None]
        if not imgs:
            raise UnlearnError(f"{self.name} forgets from an image: the forget set has none")
        if any(not torch.equal(imgs[0], im) for im in imgs[1:]):
            raise UnlearnError(
                f"{self.name} learns from a single image; the forget set has several"
            )

    def epoch_size(self, ctx) -> int:
        return len(self._items)

    def budget(self, ctx) -> int:
        if not hasattr(self, "_items"):
            self._make_targets(ctx)
        return super().budget(ctx)

    def _make_targets(self, ctx) -> None:
        from ...tasks.vlm import ImageQAData

        t: SIUTargets = ctx.alternatives["siu"]
        image = next(img for img, _, _ in ctx.forget if img is not None)
        questions = sorted({q for img, q, _ in ctx.forget if img is not None})
        answer = f"This is the {t.new_name}."
        items, spans = [], []
        for q in questions:  # 1: the unseen name
            items.append((image, q, answer))
            s = answer.index(t.new_name)
            spans.append((s, s + len(t.new_name)))
        items.append((image, DESCRIBE, t.new_description))  # 2: the new description
        spans.append((0, len(t.new_description)))
        for q, a in t.facts:  # 3: facts by name, no image
            items.append((None, q, a))
            spans.append(None)
        self._items = ImageQAData(items, name="siu-targets")
        self._spans = spans
        tok = ctx.task.tokenizer
        ids: set[int] = set()
        for v in {t.name, t.name.capitalize(), " " + t.name, " " + t.name.capitalize()}:
            ids.update(tok(v, add_special_tokens=False)["input_ids"])
        self._vocab_out = torch.tensor(sorted(ids), dtype=torch.long, device=ctx.task.device)

    def setup(self, model, ctx):
        if not hasattr(self, "_items"):
            self._make_targets(ctx)
        self._stream = self.stream(ctx, list(range(len(self._items))), 0)
        self._retain = (
            self.stream(ctx, ctx.retain, 1, self.config.preserve)
            if self.config.preserve and ctx.task.size(ctx.retain)
            else None
        )

    def _contradicting(self, ctx, items, spans, batch) -> torch.Tensor:
        """``(B, width)``: True at the answer tokens of the contradicting phrases."""
        task = ctx.task
        out = torch.zeros_like(batch["labels"], dtype=torch.bool)
        for i, ((img, q, a), span) in enumerate(zip(items, spans, strict=True)):
            if span is None:
                continue
            start = len(task._image_ids(img)) + len(task.prompt_ids(q))
            enc = task.tokenizer(a, add_special_tokens=False, return_offsets_mapping=True)
            for j, (s, e) in enumerate(enc["offset_mapping"]):
                if s < span[1] and e > span[0]:
                    out[i, start + j] = True
        return out

    def objective(self, model, ctx, t):
        task = ctx.task
        _, idx = next(self._stream)
        items = [self._items[int(i)] for i in idx]
        spans = [self._spans[int(i)] for i in idx]
        if self._retain is not None:
            _, kept = next(self._retain)
            items += list(kept)
            spans += [None] * len(kept)
        batch = task.collate(items)
        tok, mask, logits = task.token_logprobs(model, batch)
        per = -(tok.sum(-1) / mask.sum(-1).clamp_min(1))
        loss = self.config.ce_weight * per.mean()
        if self.config.kl_weight > 0:
            with torch.no_grad(), self.reference_model(model) as ref:
                _, _, ref_logits = task.token_logprobs(ref, batch)
            first = batch["labels"].shape[1] - 1 - logits.shape[1]
            contra = self._contradicting(ctx, items, spans, batch)[:, 1:][:, first:]
            keep = mask & ~contra
            loss = loss + self.config.kl_weight * masked_kl(
                logits, ref_logits, keep, self._vocab_out
            )
        return loss


@dataclass(frozen=True)
class SIUNoDMKLConfig(SIUConfig):
    kl_weight: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kl_weight != 0:
            raise UnlearnError("siu_no_dmkl is SIU without the KL term: kl_weight must be 0")


@register
class SIUNoDMKL(SIU):
    name = "siu_no_dmkl"
    summary = "SIU without the dual masked KL (the ablation): cross-entropy on its targets only."
    Config = SIUNoDMKLConfig
    needs_reference = False
