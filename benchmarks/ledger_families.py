"""The deletion ledger beyond classifiers (issue 18): clients leaving a federation one
after another under a certified epsilon budget, and people's facts removed from a
fine-tuned language model, and identities forgotten by a generator.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ledger_families.py [--out DIR]
        [--seeds 1,2] [--parts fed,lm,gen]

1. **Federation.** The D-SGD federation of ``benchmarks/dfl-certified-ring.yaml`` (16
   clients on a ring, MNIST-1D on random Fourier features, a linear softmax model) is
   trained with ``unlearn train``'s code for each seed. Four clients, drawn with the
   seed, leave one after another, each request processed by ``dfl_certified`` with the
   scenario's setting (epsilon 0.5, delta 1e-5, 2 Newton steps, CG tolerance 0.01) under
   a policy that retrains once the epsilon spent since the last retrain passes 1.2 (so
   after the third). After every step the ledger's model is compared with the oracle:
   the federation of the clients left, trained from scratch with the registered seed.
2. **Language model.** SmolLM2-135M-Instruct fine-tuned on the 50 people of
   ``benchmarks/smollm2-fictitious-relearn.yaml`` (seed 1; the benchmark's cached LoRA
   adapters when present) receives two requests, each for one person's 5 facts,
   processed by gradient difference (``LM_METHOD``). Reported: the certificate's
   metrics (forget answer accuracy, loss-attack AUC against the held-out people,
   utility on retained pairs) before and after each request, and its wall time.

3. **Generator.** The identity generator of ``benchmarks/generator-sugar.yaml`` (300
   identities; the benchmark's cached original for the seed) receives three requests,
   each for 10 identities drawn with the seed, processed by GUIDE with the benchmark's
   setting scaled to 10 identities (``GEN_METHOD``: the same lr, batch of identities and
   retained preservation, 60 steps per identity as the benchmark's 3000 for 50). After
   every step the certificate is compared with the oracle's figures: the generator
   trained without every identity removed so far (the benchmark's cache key), scored by
   the same handler.

Writes DIR/results.json and DIR/report.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FED_SCENARIO = ROOT / "benchmarks" / "dfl-certified-ring.yaml"
LM_SCENARIO = ROOT / "benchmarks" / "smollm2-fictitious-relearn.yaml"
CERT = {
    "epsilon": 0.5,
    "delta": 1.0e-5,
    "curvature": "hessian_cg",
    "damping": 0.0,
    "newton_steps": 2,
    "tol": 0.01,
}
EPSILON_BUDGET = 1.2
N_CLIENTS_LEAVING = 4
# the reported benchmark's gradient-difference rate, for a fixed 10 steps (one person's
# 5 pairs; no probe set decides when to stop in a ledger request)
LM_METHOD = ("graddiff", {"steps": 10, "lr": 2.0e-5})
LM_PEOPLE = 2
GEN_SCENARIO = ROOT / "benchmarks" / "generator-sugar.yaml"
GEN_REQUESTS, GEN_PER_REQUEST = 3, 10
GEN_METHOD = (
    "guide",
    {
        "steps": 60 * GEN_PER_REQUEST, "lr": 2.0e-4, "sequential": False, "batch_identities": 8,
        "preserve": 100.0, "preserve_latents": 64, "neighbour_radius": 0.0,
    },
)  # fmt: skip


def _fresh(work: Path) -> Path:
    """``work`` as an empty folder (a previous run's removed)."""
    import shutil

    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    return work


def _processed(led, rid: str) -> dict:
    """The body of request ``rid``'s ``request_processed`` entry."""
    return next(
        json.loads(e["body"]) for e in led.entries()
        if e["request_id"] == rid and e["kind"] == "request_processed"
    )  # fmt: skip


def _summary(led, seed: int, train_s: float, steps: list, **extra) -> dict:
    """One family's run for results.json, with the ledger's final ``verify``."""
    report = led.verify()
    return {
        "seed": seed,
        **extra,
        "train_seconds": train_s,
        "steps": steps,
        "verify_ok": report.ok,
        "verify_problems": report.problems,
    }


def federation(out: Path, seed: int) -> dict:
    from unlearn.ledger import Ledger
    from unlearn.ledger.federated import FedSetup, train_fed_checkpoint
    from unlearn.metrics.classification import loss_threshold_auc

    work = _fresh(out / f"fed-seed{seed}")
    model_path = work / "fed.safetensors"
    t0 = time.perf_counter()
    acc0 = train_fed_checkpoint(FED_SCENARIO, seed, model_path)
    train_s = time.perf_counter() - t0
    led = Ledger.create(work / "L")
    led.register_model(
        "fed", model_path, FED_SCENARIO, seed=seed,
        policy={"retrain_if": {"epsilon_total": EPSILON_BUDGET}},
    )  # fmt: skip
    setup = FedSetup(FED_SCENARIO, seed)
    leaving = [int(c) for c in np.random.default_rng([seed, 53]).permutation(16)]
    leaving = leaving[:N_CLIENTS_LEAVING]
    steps = []
    gone: list[int] = []
    for c in leaving:
        rid = led.add(f"client-{c}", "fed", {"group": {"by": "client", "ids": [c]}},
                      "dfl_certified", CERT)  # fmt: skip
        led.process()
        gone.append(c)
        bodies = {e["request_id"]: json.loads(e["body"]) for e in led.entries()
                  if e["kind"] in ("request_processed", "retrain")}  # fmt: skip
        body = bodies[rid]
        state = led.model_state("fed")
        retrained = [b for r, b in bodies.items() if b["run"]["method"] == "retrain"]
        keep = np.flatnonzero(~np.isin(setup.train.client, gone))
        oracle, info = setup.fit(keep, seed)
        mine = setup.train.subset(np.flatnonzero(setup.train.client == c))
        test_loss = setup.task.losses(oracle, setup.xt, setup.yt)
        step = {
            "client": c,
            "request": rid,
            "test_acc": body["metrics"]["test_acc"],
            "mia_auc": body["metrics"]["mia_auc"],
            "epsilon": body["metrics"].get("epsilon"),
            "request_seconds": body["wall_seconds"],
            "oracle_test_acc": setup.task.accuracy(oracle, setup.xt, setup.yt),
            "oracle_mia_auc": float(
                loss_threshold_auc(setup.task.losses(oracle, mine.x, mine.y), test_loss)
            ),
            "oracle_seconds": info["seconds"],
            "retrains_so_far": state["retrains"],
            "epsilon_since_retrain": state["epsilon_since_retrain"],
        }
        if len(retrained) > sum(1 for s in steps if s.get("retrain")):
            r = retrained[-1]
            step["retrain"] = {
                "test_acc": r["metrics"]["test_acc"],
                "seconds": r["wall_seconds"],
            }
        steps.append(step)
        print(f"fed seed {seed}: client {c} left: {step}", flush=True)
    return _summary(led, seed, train_s, steps, original_test_acc=acc0)


def language_model(out: Path, seed: int) -> dict:
    from unlearn.ledger import Ledger
    from unlearn.ledger.lm import lm_setup, train_lm_checkpoint

    work = _fresh(out / f"lm-seed{seed}")
    model_path = work / "lm.safetensors"
    t0 = time.perf_counter()
    train_lm_checkpoint(LM_SCENARIO, seed, model_path)
    train_s = time.perf_counter() - t0
    led = Ledger.create(work / "L")
    led.register_model("lm", model_path, LM_SCENARIO, seed=seed)
    setup = lm_setup(LM_SCENARIO)
    people = sorted(set(setup.train.groups["person"].tolist()))
    chosen = [int(p) for p in np.random.default_rng([seed, 59]).choice(people, LM_PEOPLE, False)]
    handler = led._handler(led.model_state("lm"))
    steps = []
    for p in chosen:
        theirs = [i for i, q in enumerate(setup.train.groups["person"]) if q == p]
        state = led.model_state("lm")
        before = handler.metrics(handler.load(model_path), theirs, set(state["removed"]))
        name, cfg = LM_METHOD
        rid = led.add(f"person-{p}", "lm", {"group": {"by": "person", "ids": [p]}}, name, cfg)
        led.process()
        body = _processed(led, rid)
        step = {
            "person": p,
            "request": rid,
            "before": before,
            "after": body["metrics"],
            "request_seconds": body["wall_seconds"],
            "method_seconds": body["run"]["seconds"],
        }
        steps.append(step)
        print(f"lm seed {seed}: person {p}: {step}", flush=True)
    return _summary(led, seed, train_s, steps)


def generator(out: Path, seed: int) -> dict:
    from unlearn.ledger import Ledger
    from unlearn.ledger.generator import GenSetup, train_generator_checkpoint

    work = _fresh(out / f"gen-seed{seed}")
    model_path = work / "gen.safetensors"
    t0 = time.perf_counter()
    acc0 = train_generator_checkpoint(GEN_SCENARIO, seed, model_path)
    train_s = time.perf_counter() - t0
    led = Ledger.create(work / "L")
    led.register_model("gen", model_path, GEN_SCENARIO, seed=seed)
    setup = GenSetup(GEN_SCENARIO)
    handler = led._handler(led.model_state("gen"))
    k = setup.data.identities
    order = [int(i) for i in np.random.default_rng([seed, 61]).permutation(k)]
    y = setup.data.data.y.numpy()
    steps, gone = [], []
    for r in range(GEN_REQUESTS):
        ids = sorted(order[r * GEN_PER_REQUEST : (r + 1) * GEN_PER_REQUEST])
        name, cfg = GEN_METHOD
        rid = led.add(f"people-{r}", "gen", {"group": {"by": "identity", "ids": ids}}, name, cfg)
        led.process()
        body = _processed(led, rid)
        gone += ids
        oracle, info = setup.fit(np.setdiff1d(np.arange(k), gone), seed)
        images = np.flatnonzero(np.isin(y, ids)).tolist()
        removed = set(np.flatnonzero(np.isin(y, gone)).tolist())
        step = {
            "identities": ids,
            "request": rid,
            "metrics": body["metrics"],
            "request_seconds": body["wall_seconds"],
            "oracle": handler.metrics(oracle, images, removed),
            "oracle_seconds": info["trained_seconds"],
        }
        steps.append(step)
        print(f"gen seed {seed}: request {r}: {step}", flush=True)
    return _summary(led, seed, train_s, steps, original_test_acc=acc0)


def _mean_sd(values) -> str:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if len(v) == 0:
        return "–"
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v[0]:.2f}"


def report(res: dict) -> str:
    lines = ["# The ledger beyond classifiers", "", f"Command: `{res['command']}`", ""]
    if res.get("fed"):
        lines += [
            "## Clients leaving a federation (`dfl-certified-ring`)",
            "",
            f"dfl_certified per request ({json.dumps(CERT)}); retrain once the epsilon "
            f"since the last retrain passes {EPSILON_BUDGET}. Oracle: the clients left, "
            "trained from scratch with the registered seed.",
            "",
            "| seed | step | client | test acc (ledger) | test acc (oracle) | MIA AUC on the "
            "client (ledger) | (oracle) | epsilon since retrain | retrained after | request s "
            "| oracle s |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for run in res["fed"]:
            for i, s in enumerate(run["steps"], 1):
                rt = s.get("retrain")
                lines.append(
                    f"| {run['seed']} | {i} | {s['client']} | {s['test_acc']:.2f} | "
                    f"{s['oracle_test_acc']:.2f} | {s['mia_auc']:.2f} | "
                    f"{s['oracle_mia_auc']:.2f} | {s['epsilon_since_retrain']:.2f} | "
                    + (f"yes ({rt['test_acc']:.2f} %)" if rt else "no")
                    + f" | {s['request_seconds']:.1f} | {s['oracle_seconds']:.1f} |"
                )
        gaps = [s["test_acc"] - s["oracle_test_acc"] for r in res["fed"] for s in r["steps"]]
        lines += [
            "",
            f"Ledger minus oracle test accuracy over every step: {_mean_sd(gaps)} points "
            f"(max |gap| {max(abs(g) for g in gaps):.2f}).",
            "Verify: "
            + ", ".join(
                f"seed {r['seed']}: " + ("ok" if r["verify_ok"] else str(r["verify_problems"]))
                for r in res["fed"]
            ),
            "",
        ]
    if res.get("lm"):
        lines += [
            "## People's facts removed from SmolLM2 (`smollm2-fictitious-relearn`)",
            "",
            f"{LM_METHOD[0]} {json.dumps(LM_METHOD[1])} per request (one person, 5 pairs).",
            "",
            "| seed | person | forget acc before | after | MIA AUC before | after | utility "
            "(retained answer acc) before | after | request s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for run in res["lm"]:
            for s in run["steps"]:
                b, a = s["before"], s["after"]
                lines.append(
                    f"| {run['seed']} | {s['person']} | {b['forget_acc']:.0f} | "
                    f"{a['forget_acc']:.0f} | {b['mia_auc']:.1f} | {a['mia_auc']:.1f} | "
                    f"{b['test_acc']:.1f} | {a['test_acc']:.1f} | {s['request_seconds']:.0f} |"
                )
        lines += [""]
    if res.get("gen"):
        lines += [
            "## Identities forgotten by a generator (`generator-sugar`)",
            "",
            f"{GEN_METHOD[0]} {json.dumps(GEN_METHOD[1])} per request ({GEN_PER_REQUEST} "
            "identities). Rates are the judge's (%): retained identities at their latents; "
            "the request's at the model's latents; the request's at the latent inverted from "
            "their photographs. Oracle: trained without every identity removed so far.",
            "",
            "| seed | step | retained (ledger) | (oracle) | forgotten at latents (ledger) | "
            "above floor (ledger) | forgotten, inverted (ledger) | (oracle) | all removed, "
            "inverted (ledger) | (oracle) | request s |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for run in res["gen"]:
            for i, s in enumerate(run["steps"], 1):
                m, o = s["metrics"], s["oracle"]
                lines.append(
                    f"| {run['seed']} | {i} | {m['test_acc']:.1f} | {o['test_acc']:.1f} | "
                    f"{m['forget_acc']:.1f} | {m['forget_above_floor']:.3f} | "
                    f"{m['forget_inverted_acc']:.1f} | {o['forget_inverted_acc']:.1f} | "
                    f"{m['removed_inverted_acc']:.1f} | {o['removed_inverted_acc']:.1f} | "
                    f"{s['request_seconds']:.0f} |"
                )
        lines += [
            "",
            "Verify: "
            + ", ".join(
                f"seed {r['seed']}: " + ("ok" if r["verify_ok"] else str(r["verify_problems"]))
                for r in res["gen"]
            ),
            "",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "ledger-families"))
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--parts", default="fed,lm")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    parts = set(args.parts.split(","))
    res: dict = {"command": "OMP_NUM_THREADS=1 .venv/bin/python " + " ".join(sys.argv)}
    if "fed" in parts:
        res["fed"] = [federation(out, s) for s in seeds]
    if "lm" in parts:
        res["lm"] = [language_model(out, s) for s in seeds]
    if "gen" in parts:
        res["gen"] = [generator(out, s) for s in seeds]
    (out / "results.json").write_text(json.dumps(res, indent=1, default=float))
    (out / "report.md").write_text(report(res))
    print(report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
