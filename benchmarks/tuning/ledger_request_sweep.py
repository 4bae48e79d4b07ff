"""Which method setting serves many small deletion requests (tuning for benchmarks/ledger_bench.py).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tuning/ledger_request_sweep.py [--seed 5]

On a tuning seed the report never uses: the MNIST-1D CNN of mnist1d-random10 trained with
that seed receives 10 requests of 4 random samples in a row, once per candidate setting
(no retrain policy), and the test accuracy after each request, the accuracy on the 40
removed samples and the loss-threshold attack's AUC on them are printed. The scenario's
NegGrad+ setting was tuned for one request of 400 samples; with 4 it repeats the same
forget batch for 85 steps.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

CANDIDATES = {
    "neggrad_plus-scenario": (
        "neggrad_plus",
        {"optimizer": "adam", "lr": 0.002, "alpha": 0.8, "epochs": 1.5, "schedule": "cosine"},
    ),
    "neggrad_plus-0.1ep": (
        "neggrad_plus",
        {"optimizer": "adam", "lr": 0.001, "alpha": 0.9, "epochs": 0.1},
    ),
    "neggrad_plus-0.3ep-a95": (
        "neggrad_plus",
        {"optimizer": "adam", "lr": 0.0005, "alpha": 0.95, "epochs": 0.3},
    ),
    "finetune-0.5ep": ("finetune", {"optimizer": "adam", "lr": 0.001, "epochs": 0.5}),
    "finetune-1ep-1e-4": ("finetune", {"optimizer": "adam", "lr": 0.0001, "epochs": 1}),
}


def main() -> int:
    from ledger_bench import SCENARIO, train

    from unlearn.ledger import Ledger
    from unlearn.ledger.handlers import ClassifierHandler

    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "ledger-sweep"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    original = train(out, args.seed)
    res = {}
    for label, (method, config) in CANDIDATES.items():
        work = out / label
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        model = work / "model.safetensors"
        shutil.copy(original, model)
        led = Ledger.create(work / "ledger")
        led.register_model("cnn", model, SCENARIO, seed=args.seed)
        handler = ClassifierHandler(led.model_state("cnn"))
        rng = np.random.default_rng([args.seed, 18])
        picks = rng.choice(len(handler.train), size=(args.requests, 4), replace=False)
        for i, ids in enumerate(picks):
            led.add(f"s{i}", "cnn", {"samples": sorted(ids.tolist())}, method, config)
        t = time.perf_counter()
        led.process()
        seconds = time.perf_counter() - t
        removed = sorted(led.model_state("cnn")["removed"])
        final = handler.metrics(handler.load(model), removed, set(removed))
        trail = [round(p["test_acc"], 1) for p in led.status()["processed"]]
        res[label] = {
            "trail": trail,
            "test_acc": final["test_acc"],
            "removed_acc": final["forget_acc"],
            "removed_mia_auc": final["removed_mia_auc"],
            "seconds": seconds,
        }
        print(label, json.dumps(res[label]), flush=True)
    base = handler.metrics(handler.load(original), removed, set(removed))
    res["original"] = {
        "test_acc": base["test_acc"],
        "removed_acc": base["forget_acc"],
        "removed_mia_auc": base["removed_mia_auc"],
    }
    print("original", json.dumps(res["original"]))
    (out / "sweep.json").write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
