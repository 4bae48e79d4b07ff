"""Tuning probe for generator-sugar on seed 0 (never reported), the 50 identities of
benchmarks/tuning/generator-sugar-seed0-d.yaml (docs/tuning.md, fifth round): how similar
the surrogate targets themselves are to the forgotten identities, then one method run and
the forgotten similarity of each identity in the order they were forgotten.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tuning/generator_order_probe.py STEPS [JSON]

JSON overrides the GUIDE config (preservation 100 over 64 retained latents, lr 2e-4, no
neighbours); {"method": "sugar", ...} runs SUGAR instead. Prints the figures.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from unlearn.bench.generator import GeneratorFamily
from unlearn.methods.base import get_method

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    torch.set_num_threads(1)
    raw = yaml.safe_load((ROOT / "benchmarks/tuning/generator-sugar-seed0-d.yaml").read_text())
    fam = GeneratorFamily()
    sc = fam.parse(raw, "probe", None)
    fam.setup(sc, print)
    world = next(fam.worlds(sc, 0))
    task, scorer, ctx = fam.task, world.state["scorer"], world.ctx
    orig = ctx.original
    ids = [int(i) for i in ctx.request.groups]
    idx = torch.as_tensor(ids)
    cent = scorer.cent[idx]

    def sim(model, latents) -> np.ndarray:
        emb = scorer.samples(model, latents)
        return (emb * cent[:, None, :]).sum(-1).mean(1).numpy()

    w_avg, lat = orig.w_avg, orig.latents
    radius = float((lat - w_avg).norm(dim=1).median())
    away = F.normalize(lat[idx] - w_avg, dim=1)
    for d in (1.0, 2.0, 3.0):  # GUIDE's reflected surrogates at d median radii
        print(f"surrogate at d={d}: similarity {sim(orig, w_avg - d * radius * away).mean():.3f}")
    print(f"w_avg: similarity {sim(orig, w_avg[None].repeat(len(ids), 1)).mean():.3f}")
    cfg = {
        "steps": int(sys.argv[1]) if len(sys.argv) > 1 else 90,
        "lr": 2e-4,
        "preserve": 100.0,
        "preserve_latents": 64,
        "neighbour_radius": 0.0,
    }
    if len(sys.argv) > 2:
        cfg.update(json.loads(sys.argv[2]))
    name = cfg.pop("method", "guide")
    method = get_method(name, cfg)
    method.bind(task)
    t0 = time.time()
    model, _ = method.run(orig, ctx)
    print(f"{name} {cfg}: {time.time() - t0:.0f} s")
    per = sim(model, model.latents[idx])
    print("per identity, in forgetting order:", np.round(per, 2).tolist())
    parts = (per[:10].mean(), per[20:30].mean(), per[-10:].mean())
    print("first 10 {:.3f}, 21-30 {:.3f}, last 10 {:.3f}".format(*parts))
    print(scorer.score(model, model.latents[idx]))


if __name__ == "__main__":
    main()
