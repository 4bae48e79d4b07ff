"""LUNE: LoRA unlearning with negative examples.

The backbone stays frozen; only low-rank adapters are trained, on negative
examples that pair each forget question with an answer that suppresses the fact
(a refusal, ``negatives: refuse``) or replaces it with another value
(``negatives: replace``, the context's ``replace`` alternative targets), plus a
retain term (``alpha``). The adapter's rank and target modules are
configurable; it is merged into the weights or kept separate (``merge``).
Setting ``lora_rank`` to 0 runs the same loss as full fine-tuning, which is the
comparison the LUNE paper makes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import UnlearnError
from ..base import register
from ..gradient_ascent import GradDiffConfig
from ..loop import LM_PRESET, ForgetRetainMethod


@dataclass(frozen=True)
class LUNEConfig(GradDiffConfig):
    lora_rank: int = 8
    lr: float = 1e-3
    negatives: str = "replace"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.negatives not in ("replace", "refuse"):
            raise UnlearnError(f"negatives must be 'replace' or 'refuse', got {self.negatives!r}")


_LUNE_PRESET = {k: v for k, v in LM_PRESET.items() if k != "lr"}


@register
class LUNE(ForgetRetainMethod):
    name = "lune"
    summary = "LoRA adapters trained on negative examples (replace or refuse); backbone frozen."
    requires = ("logprob", "lora")
    presets = {"causal_lm": _LUNE_PRESET}
    Config = LUNEConfig

    def prepare(self, ctx):
        super().prepare(ctx)
        if self.config.negatives == "replace":
            neg = ctx.alternatives.get("replace")
            if neg is None or len(neg) != len(ctx.forget):
                raise UnlearnError(
                    "lune with negatives='replace' needs one replacement answer per forget pair "
                    "in the context"
                )
            for (q, _), (nq, _) in zip(ctx.forget, neg, strict=True):
                if q != nq:
                    raise UnlearnError(f"negative example for {q!r} asks {nq!r} instead")
        elif "alternatives:refusal" not in ctx.task.provides:
            raise UnlearnError("lune with negatives='refuse' needs a task with refusal answers")

    def setup(self, model, ctx):
        super().setup(model, ctx)
        kind = "replace" if self.config.negatives == "replace" else "refusal"
        self._negatives = ctx.alternative(kind)

    def objective(self, model, ctx, t):
        idx, _ = self.next_forget()
        neg = ctx.task.take(self._negatives, idx)
        return ctx.task.mean_loss(model, neg) + self.retain_term(model, ctx)
