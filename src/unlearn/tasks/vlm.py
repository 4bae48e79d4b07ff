"""Vision-language models: a LLaVA-style model (image encoder, projector, causal LM).

The task extends the causal-LM task with images. An item is ``(image, question,
answer)``; ``image`` is a ``(3, H, W)`` float tensor or ``None`` for a text-only
question (facts asked by name). An image enters as ``n_image_tokens`` copies of the
model's image token, placed before the chat-formatted prompt; the model's
``forward`` replaces them with the projected image features (transformers'
``LlavaForConditionalGeneration``, or any model with the same ``pixel_values``
interface). Everything built on answer log-probabilities (gradient ascent, KL, NPO,
IdkPO's refusals, membership scores, greedy answers) works unchanged.

Two builders: :func:`tiny_llava` (random weights, built in code, for tests) and
:func:`llava_on` (a small vision encoder and projector feeding a given causal LM, e.g.
SmolLM2, which keeps its weights).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import UnlearnError
from .base import register_task
from .causal_lm import LORA_TARGETS, CausalLMTask, GroupedItems

__all__ = ["ImageQAData", "VLMTask", "tiny_llava", "llava_on", "lm_lora_targets"]

Item = tuple  # (image tensor or None, question, answer)


class ImageQAData(GroupedItems):
    """``(image, question, answer)`` items, with optional group labels per item
    (``groups={"concept": [...]}``) that group requests resolve against."""

    @staticmethod
    def check_item(it, name: str) -> Item:
        if not (isinstance(it, tuple | list) and len(it) == 3):
            raise UnlearnError(f"{name} must hold (image, question, answer) items, got {it!r}")
        img, q, a = it
        if img is not None and not (isinstance(img, torch.Tensor) and img.ndim == 3):
            raise UnlearnError(f"{name}: an image must be a (3, H, W) tensor or None")
        if not (isinstance(q, str) and isinstance(a, str)):
            raise UnlearnError(f"{name}: question and answer must be strings")
        return (img, q, a)


def lm_lora_targets(model: nn.Module) -> list[str]:
    """The names of the language model's linear layers (LoRA targets that leave the vision
    encoder alone; plain suffixes would also match its attention projections)."""
    out = [
        n
        for n, m in model.named_modules()
        if "language_model" in n
        and isinstance(m, nn.Linear)
        and n.rsplit(".", 1)[-1] in LORA_TARGETS
    ]
    if not out:
        raise UnlearnError(f"{type(model).__name__} has no language-model linear layers to adapt")
    return out


@register_task
class VLMTask(CausalLMTask):
    """Scores, generates with and fine-tunes a LLaVA-style model on image QA items."""

    family = "vlm"
    #: the causal-LM capabilities, and ``images``: items carry images (SIU)
    provides = CausalLMTask.provides | {"images"}

    def __init__(
        self,
        tokenizer,
        image_token_id: int,
        n_image_tokens: int,
        device: str | torch.device = "cpu",
        max_length: int = 160,
        system_prompt: str | None = None,
        **kw,
    ):
        super().__init__(tokenizer, device, max_length, system_prompt, **kw)
        if not isinstance(n_image_tokens, int) or n_image_tokens < 1:
            raise UnlearnError(f"n_image_tokens must be a positive integer, got {n_image_tokens!r}")
        self.image_token_id = int(image_token_id)
        self.n_image_tokens = n_image_tokens

    def check_model(self, model) -> None:
        super().check_model(model)
        cfg = getattr(model, "config", None)
        tok = getattr(cfg, "image_token_id", getattr(cfg, "image_token_index", None))
        if tok is not None and int(tok) != self.image_token_id:
            raise UnlearnError(
                f"the model's image token is {tok}, the task's {self.image_token_id}"
            )

    # ------------------------------------------------------------------ encoding
    def as_data(self, data) -> ImageQAData:
        return data if isinstance(data, ImageQAData) else ImageQAData(list(data))

    def _image_ids(self, image) -> list[int]:
        return [self.image_token_id] * self.n_image_tokens if image is not None else []

    # the image tokens come first and need pixel_values: no prompt prefix is shared in score()
    share_prefix = False

    def item_ids(self, item: Item) -> tuple[list[int], int]:
        img, q, a = item
        ids, n_prompt = self.encode(q, a)
        pre = self._image_ids(img)
        return pre + ids, len(pre) + n_prompt

    def collate(self, items: Sequence[Item]) -> dict[str, torch.Tensor]:
        enc = [self.item_ids(it) for it in items]
        width = max(len(ids) for ids, _ in enc)
        if width > self.max_length + self.n_image_tokens:
            raise UnlearnError(f"an item has {width} tokens, more than max_length allows")
        ids = torch.full((len(enc), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(enc), width), dtype=torch.long)
        labels = torch.full((len(enc), width), -100, dtype=torch.long)
        for i, (seq, n_prompt) in enumerate(enc):
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
            labels[i, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:])
        out = {
            "input_ids": ids.to(self.device),
            "attention_mask": mask.to(self.device),
            "labels": labels.to(self.device),
        }
        pix = [img for img, _, _ in items if img is not None]
        if pix:
            out["pixel_values"] = torch.stack(pix).to(self.device)
        return out

    def alternative_targets(self, data, kind: str, gen: torch.Generator, **info) -> ImageQAData:
        """``refusal``: each item (image kept) answered with a refusal."""
        if kind != "refusal":
            raise UnlearnError(f"a vision-language model has no built-in {kind!r} targets")
        return ImageQAData(
            [(img, q, self.refusal(i)) for i, (img, q, _) in enumerate(data)], name="refusals"
        )

    @torch.no_grad()
    def generate(
        self,
        model: nn.Module,
        questions,
        max_new_tokens: int = 16,
        batch_size: int = 16,
        prefixes=None,
        images=None,
    ) -> list[str]:
        """Greedy answers to ``questions``, each about ``images[i]`` (a tensor or None)."""
        if prefixes is not None:
            raise UnlearnError("answer prefixes are not supported for vision-language models")
        images = list(images) if images is not None else [None] * len(questions)
        if len(images) != len(questions):
            raise UnlearnError("give one image (or None) per question")
        was = model.training
        model.eval()
        answers: list[str] = []
        eos = self.tokenizer.eos_token_id
        for s in range(0, len(questions), batch_size):
            qs, ims = questions[s : s + batch_size], images[s : s + batch_size]
            enc = [self._image_ids(im) + self.prompt_ids(q) for q, im in zip(qs, ims, strict=True)]
            width = max(len(e) for e in enc)
            ids = torch.full((len(enc), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, e in enumerate(enc):
                ids[i, width - len(e) :] = torch.tensor(e)
                mask[i, width - len(e) :] = 1
            extra = {}
            pix = [im for im in ims if im is not None]
            if pix:
                extra["pixel_values"] = torch.stack(pix).to(self.device)
            out = model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.pad_id,
                eos_token_id=eos,
                **extra,
            )
            for row in out[:, width:]:
                row = row.tolist()
                if eos in row:
                    row = row[: row.index(eos)]
                answers.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        model.train(was)
        return answers

    @staticmethod
    def layers(model: nn.Module) -> list[nn.Module]:
        """The language model's decoder blocks, input side first."""
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        lm = getattr(getattr(inner, "model", None), "language_model", None)
        blocks = getattr(lm, "layers", None)
        if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
            raise UnlearnError(f"{type(inner).__name__} has no language-model layers")
        return list(blocks)

    def lora(self, model: nn.Module, rank: int, alpha: float, targets: Sequence[str]):
        from .causal_lm import lora_wrap

        return lora_wrap(model, rank, alpha, targets or lm_lora_targets(model))


def _vision_config(image_size: int, patch: int, hidden: int, layers: int, heads: int):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=patch,
        num_channels=3,
        projection_dim=hidden,
    )


def tiny_llava(
    vocab_size: int,
    image_token_id: int,
    image_size: int = 16,
    patch: int = 4,
    seed: int = 0,
    hidden: int = 32,
    layers: int = 2,
) -> nn.Module:
    """A LLaVA model with random weights and tiny vision and text configs (tests)."""
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    cfg = LlavaConfig(
        vision_config=_vision_config(image_size, patch, hidden, 2, 2),
        text_config=text,
        image_token_index=image_token_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
        image_seq_length=(image_size // patch) ** 2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlavaForConditionalGeneration(cfg).eval()


def llava_on(
    lm: nn.Module,
    image_token_id: int,
    image_size: int = 32,
    patch: int = 8,
    vision_hidden: int = 128,
    vision_layers: int = 3,
    seed: int = 0,
) -> nn.Module:
    """A LLaVA model whose language model is ``lm`` (a Llama-style causal LM, e.g.
    SmolLM2, its weights copied) and whose vision encoder and projector are new, seeded
    and small: ``(image_size / patch)^2`` image tokens."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    cfg = LlavaConfig(
        vision_config=_vision_config(image_size, patch, vision_hidden, vision_layers, 4),
        text_config=lm.config,
        image_token_index=image_token_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
        image_seq_length=(image_size // patch) ** 2,
    )
    if not 0 <= image_token_id < lm.config.vocab_size:
        raise UnlearnError(f"image token {image_token_id} is outside the vocabulary")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(cfg)
    missing = model.model.language_model.load_state_dict(lm.model.state_dict(), strict=True)
    del missing
    model.lm_head.load_state_dict(lm.lm_head.state_dict())
    if getattr(lm.config, "tie_word_embeddings", False):
        model.tie_weights()
    return model.eval()
