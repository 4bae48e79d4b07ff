"""How fast the vision-language base model learns to name concepts (tuning for vlm-siu).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tuning/vlm_teach_probe.py [--epochs 2]

Builds the benchmark's model (a new seeded vision encoder and projector feeding
SmolLM2-135M-Instruct), teaches it as ``unlearn.bench.vlm.teach`` does, one epoch at a
time, and after each epoch prints the seconds per step and the share of held-out images
(never trained on) whose concept it names, and the facts-by-name accuracy. Seed 0 of the
data and model; the benchmark reports other seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

import numpy as np


def main() -> int:
    from unlearn.bench.vlm import (
        SMOLLM2_IMAGE_TOKEN,
        DataSpec,
        ModelSpec,
        VLMRecipe,
        naming_hit,
        teach,
        teaching_items,
    )
    from unlearn.data.concepts import NAMING_QUESTIONS, make_concepts
    from unlearn.models.hf import load_smollm2
    from unlearn.tasks.vlm import VLMTask, llava_on

    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--vision-lr", type=float, default=1e-3)
    ap.add_argument("--vision-pretrain-epochs", type=int, default=0)
    args = ap.parse_args()
    d, m = DataSpec(), ModelSpec()
    cs = make_concepts(d.concepts, d.images, d.size, d.seed)
    lm, tok = load_smollm2()
    image_token = tok.convert_tokens_to_ids(SMOLLM2_IMAGE_TOKEN)
    task = VLMTask(tok, image_token, (d.size // m.patch) ** 2)
    model = llava_on(lm, image_token, d.size, m.patch, m.vision_hidden, m.vision_layers, seed=0)
    items = teaching_items(cs, d.train_images, set())
    held = list(range(d.train_images, d.images))
    recipe = VLMRecipe(
        epochs=1,
        lr=args.lr,
        vision_lr=args.vision_lr,
        vision_pretrain_epochs=args.vision_pretrain_epochs,
    )
    log = []
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        # one epoch per call; later epochs continue from the merged model (no warm-up)
        r = recipe if epoch == 0 else replace(recipe, warmup_steps=0, vision_pretrain_epochs=0)
        model, steps, _ = teach(model, task, items, r, seed=epoch)
        sec = (time.perf_counter() - t0) / steps
        qs = [NAMING_QUESTIONS[0]] * (len(cs) * len(held))
        ims = [cs.images[c][i] for c in range(len(cs)) for i in held]
        ans = task.generate(model, qs, 12, 16, images=ims)
        truth = [c for c in range(len(cs)) for _ in held]
        acc = 100 * np.mean([naming_hit(a, cs.names[c]) for a, c in zip(ans, truth, strict=True)])
        fq = [q for c in range(len(cs)) for q, _ in cs.facts[c]]
        fa = task.generate(model, fq, 16, 16)
        keys = [k for c in range(len(cs)) for k in cs.fact_keys[c]]
        facts = 100 * np.mean([k.lower() in a.lower() for a, k in zip(fa, keys, strict=True)])
        row = {
            "epoch": epoch + 1,
            "steps": steps,
            "seconds_per_step": sec,
            "held_out_naming_acc": acc,
            "facts_by_name_acc": facts,
            "example": ans[:3],
        }
        log.append(row)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
