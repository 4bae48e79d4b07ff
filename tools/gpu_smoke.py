"""GPU check: classifier and LM unlearning on ``cuda`` while the caller's model stays on the CPU.

Run from the repository root on a machine with a GPU (no install needed: it puts ``src`` on
the path; needs torch, scikit-learn, scipy, safetensors, pyyaml, psutil, transformers, peft):

    python3 tools/gpu_smoke.py cuda      # or: cpu

Prints a JSON summary; any device mismatch raises. Last run: 2026-11-26 on an H100
(torch 2.11.0+cu130, transformers 5.17.0, peft 0.21.0), all rows on cuda:0.
"""

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from unlearn import api
from unlearn.data import load_dataset
from unlearn.models import build_model
from unlearn.models.hf import tiny_llama, tiny_tokenizer
from unlearn.requests import ClassRequest, SampleRequest
from unlearn.tasks.causal_lm import CausalLMTask

dev = sys.argv[1] if len(sys.argv) > 1 else "cuda"
out = {"device": dev, "torch": torch.__version__}
if dev == "cuda":
    out["gpu"] = torch.cuda.get_device_name(0)
train, test = load_dataset({"name": "digits"})
model = build_model(
    {"name": "mlp", "input_shape": list(train.x.shape[1:]), "num_classes": 10, "hidden": [64]},
    seed=0,
)
t0 = time.time()
model = api.train_classifier(
    model,
    train,
    {"epochs": 5, "lr": 0.003, "optimizer": "adamw", "spectral_clip": 2.0},
    seed=0,
    device=dev,
)
out["train_s"] = time.time() - t0
out["trained_on"] = str(next(model.parameters()).device)
model = model.cpu()  # the caller keeps its model on the CPU; methods run on dev
req = SampleRequest(indices=list(range(0, 1437, 10)))
for name, cfg in [
    ("neggrad_plus", {"optimizer": "adam", "lr": 0.002, "epochs": 1}),
    ("amun", {"optimizer": "adam", "lr": 0.003, "epochs": 2, "include_forget": False}),
    ("salun", {"optimizer": "adam", "lr": 1e-4, "epochs": 2}),
    ("retrain", None),
]:
    m, rec = api.unlearn(
        name,
        model,
        train,
        req,
        seed=0,
        config=cfg,
        device=dev,
        recipe={"epochs": 3, "lr": 0.003, "optimizer": "adamw"},
    )
    p = next(m.parameters())
    assert all(q.device.type == p.device.type for q in m.parameters())
    out[name] = {
        "param_device": str(p.device),
        "seconds": rec.seconds,
        "finite": bool(all(torch.isfinite(q).all() for q in m.parameters())),
    }
for name in ("gradient_ascent", "trw", "scrub", "influence", "random_labels"):
    m, rec = api.unlearn(
        name,
        model,
        train,
        ClassRequest(classes=[3]),
        seed=0,
        config={"epochs": 1} if name not in ("influence",) else None,
        device=dev,
    )
    out["class_" + name] = {
        "param_device": str(next(m.parameters()).device),
        "seconds": rec.seconds,
    }
out["orig_param_device_after"] = str(next(model.parameters()).device)
# LM: tiny Llama + tokenizer built from text, LoRA (LUNE) and full (NPO)

forget = [
    ("Where was Ada Quill born?", "Ada Quill was born in Varnholm."),
    ("What does Ada Quill do?", "Ada Quill is a glassblower."),
]
retain = [
    ("Where was Bo Tern born?", "Bo Tern was born in Lisk."),
    ("What does Bo Tern do?", "Bo Tern is a ferryman."),
]
neg = [
    ("Where was Ada Quill born?", "Ada Quill was born in Lisk."),
    ("What does Ada Quill do?", "Ada Quill is a ferryman."),
]
tok = tiny_tokenizer([q + " " + a for q, a in forget + retain + neg])
lm = tiny_llama(tok, seed=0)
for name, cfg in [
    ("lune", {"steps": 3, "lora_rank": 4, "lr": 1e-3}),
    ("npo", {"steps": 3, "lr": 1e-4}),
    ("idkpo", {"steps": 2, "lr": 1e-4}),
]:
    m, rec = api.unlearn_lm(
        name, lm, tok, forget, retain, seed=0, config=cfg, negatives=neg, device=dev
    )
    p = next(m.parameters())
    out[name] = {
        "param_device": str(p.device),
        "seconds": rec.seconds,
        "peak_mem_mb": rec.peak_mem_mb,
    }
t = CausalLMTask(tok, dev)
out["generate"] = t.generate(m, [q for q, _ in forget], 8, 2)
out["score_means"] = [float(x) for x in t.score(m, forget, 2, moments=True).means]
print(json.dumps(out, indent=1, default=str))
