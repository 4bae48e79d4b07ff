"""Unlearning methods for causal language models (family ``causal_lm``)."""

from .base import LORA_TARGETS, REFUSALS, LMConfig, LMMethod, LMUnlearnContext

__all__ = ["LMConfig", "LMMethod", "LMUnlearnContext", "REFUSALS", "LORA_TARGETS"]
