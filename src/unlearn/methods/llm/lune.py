"""LUNE: LoRA unlearning with negative examples.

The backbone stays frozen; only low-rank adapters are trained, on negative
examples that pair each forget question with an answer that suppresses the fact
(a refusal, ``negatives: refuse``) or replaces it with another value
(``negatives: replace``, taken from the context's ``negatives``), plus an
optional retain NLL term (``alpha``). The adapter's rank and target modules are
configurable; it is merged into the weights or kept separate (``merge``).
Setting ``lora_rank`` to 0 runs the same loss as full fine-tuning, which is the
comparison the LUNE paper makes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import UnlearnError
from ..base import register
from . import losses
from .base import LMConfig, LMMethod


@dataclass(frozen=True)
class LUNEConfig(LMConfig):
    lora_rank: int = 8
    lr: float = 1e-3
    negatives: str = "replace"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.negatives not in ("replace", "refuse"):
            raise ValueError(f"negatives must be 'replace' or 'refuse', got {self.negatives!r}")


@register
class LUNE(LMMethod):
    name = "lune"
    summary = "LoRA adapters trained on negative examples (replace or refuse); backbone frozen"
    Config = LUNEConfig

    def prepare(self, ctx):
        if self.config.negatives == "replace":
            if ctx.negatives is None or len(ctx.negatives) != len(ctx.forget):
                raise UnlearnError(
                    "lune with negatives='replace' needs one replacement answer per forget pair "
                    "in the context"
                )
            for (q, _), (nq, _) in zip(ctx.forget, ctx.negatives, strict=True):
                if q != nq:
                    raise UnlearnError(f"negative example for {q!r} asks {nq!r} instead")
        elif not ctx.refusals:
            raise UnlearnError("lune with negatives='refuse' needs refusal answers")

    def loss(self, model, forget, retain, ctx):
        if self.config.negatives == "replace":
            neg = [ctx.negatives[i] for i in forget]
        else:
            neg = [(ctx.forget[i][0], ctx.refusal(i)) for i in forget]
        return losses.nll(*self.seq(model, neg)) + self.retain_nll(model, retain)
