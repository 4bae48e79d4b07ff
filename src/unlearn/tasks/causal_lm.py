"""The causal-language-model task: chat-formatted question-answer pairs on any HF causal LM.

A pair is rendered with the tokenizer's own chat template (a user turn holding
the question, then the assistant turn holding the answer and the end-of-turn
token); only the answer tokens are scored and trained on. The task computes
per-token log-probabilities (for losses, TOFU probabilities, truth ratios and
the membership attacks), greedy answers (batched, left-padded) and fine-tunes
a model, fully or through LoRA adapters (``peft``), with one loop.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..errors import InvalidRequestError, UnlearnError
from ..training import index_stream, make_optimizer, optimize
from ..validate import check_fields, resolve_device
from .base import Task, register_task

__all__ = [
    "LORA_TARGETS",
    "REFUSALS",
    "CausalLMTask",
    "LMRecipe",
    "Pair",
    "PairData",
    "TokenScores",
    "lora_wrap",
    "truncate_layers",
    "token_kl",
]

Pair = tuple[str, str]  # (question, answer)

#: Answers that decline, for IdkPO's preferred side and LUNE's "refuse" negatives.
REFUSALS = (
    "I don't know.",
    "I'm not sure about that.",
    "I have no information about that.",
    "I can't answer that question.",
    "That is something I don't know.",
)


class GroupedItems:
    """A family's items (``check_item`` validates each) with optional group labels per
    item (``groups={"person": [...]}``) that group requests resolve against. Subclasses
    give ``check_item``; subsets and concatenations keep the labels."""

    def __init__(
        self, items: Sequence, groups: dict[str, Sequence] | None = None, name: str = "items"
    ):
        checked = [self.check_item(it, name) for it in items]
        self.items: list = checked
        self.name = name
        self.groups: dict[str, np.ndarray] = {}
        for key, labels in (groups or {}).items():
            arr = np.asarray(list(labels))
            if arr.shape != (len(checked),):
                raise UnlearnError(
                    f"{name}: group labels {key!r} give {arr.shape[0] if arr.ndim else 0} labels "
                    f"for {len(checked)} items"
                )
            self.groups[str(key)] = arr

    @staticmethod
    def check_item(item, name: str):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]

    def __iter__(self):
        return iter(self.items)

    def subset(self, idx, name: str | None = None):
        idx = [int(i) for i in np.asarray(idx).reshape(-1)]
        return type(self)(
            [self.items[i] for i in idx],
            {k: v[idx] for k, v in self.groups.items()},
            name or self.name,
        )

    @classmethod
    def concat(cls, parts: Sequence, name: str = "items"):
        keys = set.intersection(*(set(p.groups) for p in parts)) if parts else set()
        return cls(
            [it for p in parts for it in p.items],
            {k: np.concatenate([p.groups[k] for p in parts]) for k in sorted(keys)},
            name,
        )

    def group_labels(self, by: str) -> np.ndarray:
        if by not in self.groups:
            raise InvalidRequestError(
                f"{self.name} has no {by!r} labels (it has: {', '.join(self.groups) or 'none'})"
            )
        return self.groups[by]


class PairData(GroupedItems):
    """A language model's data: ``(question, answer)`` pairs, with optional group labels
    per pair (``groups={"person": [...]}``) that group requests resolve against."""

    def __init__(
        self, pairs: Sequence[Pair], groups: dict[str, Sequence] | None = None, name: str = "pairs"
    ):
        super().__init__(pairs, groups, name)

    @staticmethod
    def check_item(p, name: str) -> Pair:
        if not (isinstance(p, tuple | list) and len(p) == 2 and all(isinstance(t, str) for t in p)):
            raise UnlearnError(f"{name} must hold (question, answer) string pairs, got {p!r}")
        return (p[0], p[1])

    @property
    def pairs(self) -> list[Pair]:
        return self.items

    @classmethod
    def concat(cls, parts: Sequence[PairData], name: str = "pairs") -> PairData:
        return super().concat(parts, name)


# every linear layer of a Llama-style block: the default LoRA targets of fine-tuning and unlearning
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LMRecipe:
    """How a language model is fine-tuned (the original and the oracle share it).

    ``lora_rank`` 0 means full fine-tuning; otherwise LoRA adapters of that rank
    on ``lora_targets`` are trained and merged into the weights afterwards.
    """

    epochs: int = 6
    lr: float = 1e-3
    batch_size: int = 8
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_targets: tuple[str, ...] = LORA_TARGETS
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        check_fields(self, "LM recipe")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise UnlearnError(f"recipe {name} must be >= 1")
        if self.lr <= 0:
            raise UnlearnError("recipe lr must be > 0")
        if self.weight_decay < 0 or self.warmup_steps < 0 or self.grad_clip < 0:
            raise UnlearnError("recipe weight_decay, warmup_steps and grad_clip must be >= 0")
        if not self.lora_alpha > 0:
            raise UnlearnError("recipe lora_alpha must be > 0")
        if self.lora_rank < 0:
            raise UnlearnError("recipe lora_rank must be >= 0")


@dataclass(frozen=True)
class PrefixCache:
    """Keys and values of a prompt prefix (batch of one), expanded per batch without copying."""

    length: int
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    config: object

    def expand(self, rows: int):
        from transformers import DynamicCache

        return DynamicCache(
            [(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in self.layers],
            config=self.config,
        )


@dataclass
class TokenScores:
    """Per-sequence answer-token statistics: log-probs and (optionally) Min-K%++ moments."""

    logprobs: list[np.ndarray]
    mu: list[np.ndarray] = field(default_factory=list)
    sigma: list[np.ndarray] = field(default_factory=list)

    @property
    def sums(self) -> np.ndarray:
        return np.array([lp.sum() for lp in self.logprobs])

    @property
    def means(self) -> np.ndarray:
        return np.array([lp.mean() for lp in self.logprobs])

    @property
    def counts(self) -> np.ndarray:
        return np.array([lp.size for lp in self.logprobs])


def lora_wrap(
    model: nn.Module, rank: int, alpha: float, targets: Sequence[str], dropout: float = 0.0
):
    """``model`` with fresh LoRA adapters (``peft``); the base weights are frozen."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        from ..errors import MissingDependencyError

        raise MissingDependencyError("LoRA needs the optional dependency 'peft'") from None
    # a target is a module's last name (every such layer) or its full dotted name
    names = [name for name, _ in model.named_modules()]
    present = {n.rsplit(".", 1)[-1] for n in names} | set(names)
    missing = sorted(set(targets) - present)
    if missing:
        raise UnlearnError(
            f"LoRA target module(s) {missing} do not exist in {type(model).__name__}"
        )
    cfg = LoraConfig(
        r=int(rank),
        lora_alpha=float(alpha),
        target_modules=list(targets),
        lora_dropout=dropout,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, cfg)


def truncate_layers(model: nn.Module, keep: int) -> nn.Module:
    """A copy of a Llama-style causal LM with only its first ``keep`` decoder layers (the
    embeddings, final norm and head kept): a cheaper model with the same layer shapes,
    e.g. a second proxy for R2F. ``model`` itself is not changed."""
    blocks = CausalLMTask.layers(model)
    if type(keep) is not int or not 1 <= keep <= len(blocks):
        raise UnlearnError(
            f"a truncated copy keeps 1 to {len(blocks)} decoder layers, asked for {keep!r}"
        )
    out = copy.deepcopy(model)
    inner = out.get_base_model() if hasattr(out, "get_base_model") else out
    inner.model.layers = nn.ModuleList(list(inner.model.layers)[:keep])
    cfg = out.config
    cfg.num_hidden_layers = keep
    if isinstance(getattr(cfg, "layer_types", None), list):
        cfg.layer_types = cfg.layer_types[:keep]
    return out


def token_kl(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over answer tokens of ``KL(p_ref || p)`` between next-token distributions."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    lr = torch.log_softmax(ref_logits.float(), dim=-1)
    kl = (lr.exp() * (lr - lp)).sum(-1)
    m = mask.float()
    return (kl * m).sum() / m.sum().clamp_min(1.0)


@register_task
class CausalLMTask(Task):
    """Scores, generates with and fine-tunes a causal LM on chat-formatted QA pairs.

    Data is a :class:`PairData` (or a list of pairs); a batch is a list of pairs.
    ``refusals`` are the answers that decline (IdkPO, LUNE's ``refuse`` negatives).
    """

    family = "causal_lm"
    recipe_type = LMRecipe
    provides = frozenset(
        {
            "logprob",
            "loss",
            "kl",
            "alternatives:refusal",
            "fit",
            "membership",
            "lora",
            "generate",
            "layers",
        }
    )

    def __init__(
        self,
        tokenizer,
        device: str | torch.device = "cpu",
        max_length: int = 128,
        system_prompt: str | None = None,
        refusals: Sequence[str] = REFUSALS,
    ):
        if tokenizer.chat_template is None:
            raise UnlearnError("the tokenizer has no chat template")
        if tokenizer.eos_token_id is None:
            raise UnlearnError("the tokenizer has no end-of-sequence token")
        self.tokenizer = tokenizer
        self.device = resolve_device(device)
        self.refusals = tuple(refusals)
        self.max_length = int(max_length)
        self.system_prompt = system_prompt
        self.pad_id = tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = tokenizer.eos_token_id
        self._prompt_cache: dict[str, list[int]] = {}

    # ------------------------------------------------------------------ encoding
    def prompt_text(self, question: str) -> str:
        msgs = [{"role": "user", "content": question}]
        if self.system_prompt is not None:
            msgs.insert(0, {"role": "system", "content": self.system_prompt})
        return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)

    def prompt_ids(self, question: str) -> list[int]:
        if question not in self._prompt_cache:
            text = self.prompt_text(question)
            self._prompt_cache[question] = self.tokenizer(text, add_special_tokens=False)[
                "input_ids"
            ]
        return self._prompt_cache[question]

    def encode(self, question: str, answer: str) -> tuple[list[int], int]:
        """Token ids of the chat-formatted pair and the number of prompt tokens."""
        if not answer.strip():
            raise UnlearnError(f"empty answer for question {question!r}")
        p = self.prompt_ids(question)
        a = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
        ids = p + a + [self.tokenizer.eos_token_id]
        if len(ids) > self.max_length:
            raise UnlearnError(
                f"pair {question!r} has {len(ids)} tokens, more than max_length {self.max_length}"
            )
        return ids, len(p)

    # score() may run the prompt tokens every item shares once (False where they need
    # further model inputs, such as a VLM's image tokens)
    share_prefix = True

    def item_ids(self, item: Pair) -> tuple[list[int], int]:
        """What :meth:`collate` puts in one row: its token ids and number of prompt tokens."""
        return self.encode(*item)

    def collate(self, pairs: Sequence[Pair]) -> dict[str, torch.Tensor]:
        """Right-padded batch; ``labels`` are -100 outside the answer (and its end token)."""
        enc = [self.encode(q, a) for q, a in pairs]
        width = max(len(ids) for ids, _ in enc)
        ids = torch.full((len(enc), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(enc), width), dtype=torch.long)
        labels = torch.full((len(enc), width), -100, dtype=torch.long)
        for i, (seq, n_prompt) in enumerate(enc):
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
            labels[i, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:])
        return {
            "input_ids": ids.to(self.device),
            "attention_mask": mask.to(self.device),
            "labels": labels.to(self.device),
        }

    # ------------------------------------------------------------------ the task protocol
    def as_data(self, data) -> PairData:
        return data if isinstance(data, PairData) else PairData(list(data))

    def take(self, data, idx) -> list[Pair]:
        return [data[int(i)] for i in idx]

    def example_logprob(self, model: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sequence_logprob(model, self.collate(batch))

    def kl(self, model: nn.Module, batch, reference) -> torch.Tensor:
        enc = self.collate(batch)
        _, mask, logits = self.token_logprobs(model, enc)
        with torch.no_grad(), reference() as ref:
            _, _, ref_logits = self.token_logprobs(ref, enc)
        return token_kl(logits, ref_logits, mask)

    def refusal(self, i: int) -> str:
        """The refusal answer used for forget pair ``i`` (a fixed spread over ``refusals``)."""
        if not self.refusals:
            raise UnlearnError("the task has no refusal answers")
        return self.refusals[(i * 7 + 3) % len(self.refusals)]

    def alternative_targets(self, data, kind: str, gen: torch.Generator, **info) -> PairData:
        """``refusal``: each question paired with a refusal instead of its answer."""
        if kind != "refusal":
            raise UnlearnError(f"a language model has no built-in {kind!r} alternative targets")
        return PairData([(q, self.refusal(i)) for i, (q, _) in enumerate(data)], name="refusals")

    def membership_scores(self, model: nn.Module, data) -> np.ndarray:
        """Mean answer-token negative log-likelihood of each pair."""
        return -self.score(model, list(data)).means

    @staticmethod
    def layers(model: nn.Module) -> list[nn.Module]:
        """The decoder blocks of a Llama-style Hugging Face model, input side first
        (``model.model.layers``; under ``peft`` the wrapped model's)."""
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        blocks = getattr(getattr(inner, "model", None), "layers", None)
        if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
            raise UnlearnError(
                f"{type(inner).__name__} has no decoder layers at .model.layers (a Llama-style "
                "causal LM is needed)"
            )
        return list(blocks)

    def lora(self, model: nn.Module, rank: int, alpha: float, targets: Sequence[str]):
        return lora_wrap(model, rank, alpha, targets or LORA_TARGETS)

    def finish(self, model: nn.Module) -> nn.Module:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def fit(self, model: nn.Module, data, recipe: LMRecipe, seed: int) -> int:
        """Fine-tune ``model`` in place with ``recipe`` (LoRA adapters merged back)."""
        _, steps = self.finetune(model, list(data), recipe, seed)
        return steps

    # ------------------------------------------------------------------ scoring
    @staticmethod
    def token_logprobs(
        model: nn.Module, batch: dict[str, torch.Tensor], prefix: PrefixCache | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logprobs, mask, logits)`` of the answer tokens, shapes ``(B, L)``/``(B, L, V)``
        where ``L`` runs from the batch's first answer token to the end.

        Differentiable; ``logprobs`` is zero where ``mask`` is 0. With ``prefix`` (the
        keys and values of the first tokens every row shares, from :meth:`prefix_cache`)
        only the rest of each row is run through the model.
        """
        labels = batch["labels"]
        target = labels[:, 1:]
        scored = target != -100
        if not bool(scored.any()):
            raise UnlearnError("the batch has no answer tokens to score")
        # logits only from the first answer position on: the LM head and the
        # log-softmax over the vocabulary dominate the cost otherwise
        first = int(scored.any(0).nonzero()[0, 0])
        keep = torch.arange(first, labels.shape[1] - 1, device=labels.device)
        # any further model inputs a task's collate adds (a VLM's pixel_values) pass through
        extra = {
            k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask", "labels")
        }
        ids = batch["input_ids"]
        if prefix is not None:
            if first < prefix.length:
                raise UnlearnError("the shared prefix reaches into an answer")
            extra["cache"] = prefix.expand(ids.shape[0])
            ids, keep = ids[:, prefix.length :], keep - prefix.length
        out = model(
            input_ids=ids,
            attention_mask=batch["attention_mask"],
            logits_to_keep=keep,
            **extra,
        )
        logits = out.logits.float()
        target = target[:, first:]
        mask = target != -100
        lp = torch.log_softmax(logits, dim=-1)
        tok = lp.gather(-1, target.clamp_min(0).unsqueeze(-1)).squeeze(-1)
        return tok * mask, mask, logits

    @torch.no_grad()
    def prefix_cache(self, model: nn.Module, ids: Sequence[int]) -> PrefixCache | None:
        """The keys and values of ``ids`` (one row), to be shared by every row of a batch
        that starts with them; ``None`` for a model whose cache is not a
        :class:`transformers.DynamicCache` of plain layers (it is then run whole)."""
        from transformers import DynamicCache

        if not ids:
            return None
        out = model(input_ids=torch.tensor([list(ids)], device=self.device), use_cache=True)
        cache = out["cache"] if "cache" in out else out.get("past_key_values")
        if type(cache) is not DynamicCache or not all(
            type(layer).__name__ == "DynamicLayer" for layer in cache.layers
        ):
            return None
        return PrefixCache(len(ids), [(la.keys, la.values) for la in cache.layers], model.config)

    def sequence_logprob(
        self, model: nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable per-sequence sum of answer log-probs and answer token counts."""
        tok, mask, _ = self.token_logprobs(model, batch)
        return tok.sum(-1), mask.sum(-1)

    @torch.no_grad()
    def score(
        self, model: nn.Module, pairs: Sequence[Pair], batch_size: int = 16, moments: bool = False
    ) -> TokenScores:
        """Answer-token log-probs of every pair (and Min-K%++ moments with ``moments``).

        The pairs are batched by length (less padding) and the prompt tokens they all
        share (the chat template and system prompt) are run once; the values come back
        in the order of ``pairs``.
        """
        if len(pairs) == 0:
            raise UnlearnError("nothing to score: no pairs given")
        was = model.training
        model.eval()
        enc = [self.item_ids(it) for it in pairs]
        order = sorted(range(len(pairs)), key=lambda i: len(enc[i][0]))
        prefix = None
        if self.share_prefix:
            # the shared prefix stops before the last prompt token, whose logit scores the answer
            head = enc[0][0][: min(n for _, n in enc) - 1]
            for ids, _ in enc[1:]:
                while head and ids[: len(head)] != head:
                    head = head[: len(head) - 1]
            prefix = self.prefix_cache(model, head) if len(head) > 1 else None
        logprobs: list = [None] * len(pairs)
        mus: list = [None] * len(pairs)
        sds: list = [None] * len(pairs)
        for s in range(0, len(pairs), batch_size):
            idx = order[s : s + batch_size]
            batch = self.collate([pairs[i] for i in idx])
            tok, mask, logits = self.token_logprobs(model, batch, prefix)
            if moments:
                lp = torch.log_softmax(logits, dim=-1)
                p = lp.exp()
                mu = (p * lp).sum(-1)
                sd = ((p * lp * lp).sum(-1) - mu * mu).clamp_min(1e-12).sqrt()
            for row, i in enumerate(idx):
                m = mask[row]
                logprobs[i] = tok[row][m].cpu().double().numpy()
                if moments:
                    mus[i] = mu[row][m].cpu().double().numpy()
                    sds[i] = sd[row][m].cpu().double().numpy()
        model.train(was)
        return TokenScores(logprobs, mus if moments else [], sds if moments else [])

    @torch.no_grad()
    def text_logprobs(
        self, model: nn.Module, texts: Sequence[str], batch_size: int = 8
    ) -> list[np.ndarray]:
        """Token log-probs of plain texts (no chat template), for perplexity."""
        was = model.training
        model.eval()
        res = []
        for s in range(0, len(texts), batch_size):
            chunk = texts[s : s + batch_size]
            enc = [
                self.tokenizer(t, add_special_tokens=False)["input_ids"][: self.max_length]
                for t in chunk
            ]
            width = max(len(e) for e in enc)
            ids = torch.full((len(enc), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, e in enumerate(enc):
                ids[i, : len(e)] = torch.tensor(e)
                mask[i, : len(e)] = 1
            labels = torch.where(mask.bool(), ids, torch.full_like(ids, -100))
            batch = {
                "input_ids": ids.to(self.device),
                "attention_mask": mask.to(self.device),
                "labels": labels.to(self.device),
            }
            tok, m, _ = self.token_logprobs(model, batch)
            res += [tok[i][m[i]].cpu().double().numpy() for i in range(tok.shape[0])]
        model.train(was)
        return res

    @torch.no_grad()
    def generate(
        self,
        model: nn.Module,
        questions: Sequence[str],
        max_new_tokens: int = 24,
        batch_size: int = 16,
        prefixes: Sequence[str] | None = None,
    ) -> list[str]:
        """Greedy answers (left-padded batches); with ``prefixes`` the answer starts with
        that text and only the continuation is returned."""
        was = model.training
        model.eval()
        answers: list[str] = []
        eos = self.tokenizer.eos_token_id
        for s in range(0, len(questions), batch_size):
            qs = questions[s : s + batch_size]
            pre = prefixes[s : s + batch_size] if prefixes is not None else [""] * len(qs)
            enc = [
                self.prompt_ids(q)
                + (self.tokenizer(p, add_special_tokens=False)["input_ids"] if p else [])
                for q, p in zip(qs, pre, strict=True)
            ]
            width = max(len(e) for e in enc)
            ids = torch.full((len(enc), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, e in enumerate(enc):
                ids[i, width - len(e) :] = torch.tensor(e)
                mask[i, width - len(e) :] = 1
            out = model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.pad_id,
                eos_token_id=eos,
            )
            for row in out[:, width:]:
                row = row.tolist()
                if eos in row:
                    row = row[: row.index(eos)]
                answers.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        model.train(was)
        return answers

    # ------------------------------------------------------------------ training
    def finetune(
        self,
        model: nn.Module,
        pairs: Sequence[Pair],
        recipe: LMRecipe,
        seed: int,
        adapter_out: dict | None = None,
    ) -> tuple[nn.Module, int]:
        """Fine-tune ``model`` (in place) on ``pairs`` with the NLL of the answers; with LoRA
        the adapters are merged back (their tensors copied into ``adapter_out`` if given,
        for :meth:`apply_adapter`). Returns the model and the number of steps."""
        gen = torch.Generator().manual_seed(int(seed))
        torch.manual_seed(int(seed))
        work = model
        if recipe.lora_rank > 0:
            work = lora_wrap(model, recipe.lora_rank, recipe.lora_alpha, recipe.lora_targets)
        pairs = list(pairs)
        stream = index_stream(len(pairs), recipe.batch_size, gen)
        per_epoch = -(-len(pairs) // recipe.batch_size)

        def nll(t: int) -> torch.Tensor:
            total, count = self.sequence_logprob(work, self.collate(self.take(pairs, next(stream))))
            return -(total.sum() / count.sum())

        params = [p for p in work.parameters() if p.requires_grad]
        if not params:
            raise UnlearnError("the model has no trainable parameters")
        steps = optimize(
            work,
            make_optimizer(params, "adamw", recipe.lr, recipe.weight_decay),
            recipe.epochs * per_epoch,
            nll,
            warmup_steps=recipe.warmup_steps,
            grad_clip=recipe.grad_clip,
        )
        if recipe.lora_rank > 0:
            if adapter_out is not None:
                from peft import get_peft_model_state_dict

                adapter_out.update(
                    {k: v.detach().clone() for k, v in get_peft_model_state_dict(work).items()}
                )
            work = work.merge_and_unload()
        for p in work.parameters():
            p.requires_grad_(True)
        return work.eval(), steps

    @staticmethod
    def apply_adapter(model: nn.Module, recipe: LMRecipe, state: dict) -> nn.Module:
        """``model`` (changed in place) with saved LoRA tensors of ``recipe`` merged in."""
        from peft import set_peft_model_state_dict

        if recipe.lora_rank == 0:
            raise UnlearnError("apply_adapter needs a LoRA recipe (lora_rank > 0)")
        work = lora_wrap(model, recipe.lora_rank, recipe.lora_alpha, recipe.lora_targets)
        res = set_peft_model_state_dict(work, state)
        if res.unexpected_keys:
            raise UnlearnError(f"adapter holds tensors the model lacks: {res.unexpected_keys[:3]}")
        missing = [k for k in res.missing_keys if "lora_" in k]
        if missing:
            raise UnlearnError(f"adapter lacks tensors of the model: {missing[:3]}")
        work = work.merge_and_unload()
        for p in work.parameters():
            p.requires_grad_(True)
        return work.eval()
