"""The deletion ledger's benchmark (issue 18): sequential requests against the oracle,
kill -9 at random times, concurrent writers, and tampering.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ledger_bench.py [--out DIR] [--seeds 0,1]

1. **Sequential.** The MNIST-1D CNN of ``benchmarks/mnist1d-random10.yaml`` (trained with
   ``unlearn train``) receives 100 requests in a row, each for 4 random training samples
   (400 in all, 10 %), each processed with NegGrad+ at a setting tuned for small requests on seed 5,
   under a policy that retrains when test accuracy falls 2 points below the reference.
   The oracle is the scenario's recipe retrained without all 400 (the same seed, and
   two other seeds for its spread). Reported: test accuracy, accuracy on the removed
   samples and the loss-threshold attack's AUC on them (against the test set) for the
   original, the ledger's final model and the oracle.
2. **kill -9.** A ledger on the same model with 60 pending requests; processes running
   ``process`` are killed with SIGKILL at uniformly random times (0 to 1.3 times one
   request's measured duration) until every request is done. After every kill: the
   chain and tables verify, the model file is the one before or after a request, no
   request is half-done. At the end: every request processed exactly once.
3. **Concurrency.** 4 processes submit 50 requests each at once: 200 request entries,
   the chain intact, 200 distinct ids.
4. **Tampering.** Single-byte edits at random positions of random entry fields of a
   ledger with 10 processed requests, and of the model file: each must make ``verify``
   fail, naming the entry (or file).

Writes DIR/results.json and DIR/report.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "benchmarks" / "mnist1d-random10.yaml"
# chosen on tuning seed 5 by benchmarks/tuning/ledger_request_sweep.py (docs/tuning.md): the
# scenario's NegGrad+ setting, tuned for one request of 400 samples, took test accuracy
# from 93.6 to 63 % on the first 4-sample request
NG = {"optimizer": "adam", "lr": 0.0005, "alpha": 0.95, "epochs": 0.3}
N_REQUESTS, PER_REQUEST = 100, 4


def train(out: Path, seed: int) -> Path:
    path = out / f"original-seed{seed}.safetensors"
    if not path.is_file():
        exe = str(Path(sys.executable).parent / "unlearn")
        subprocess.run(
            [exe, "train", str(SCENARIO), "--seed", str(seed), "--out", str(path)], check=True
        )
    return path


def sequential(out: Path, seed: int, policy: bool = True) -> dict:
    from unlearn.ledger import Ledger
    from unlearn.ledger.handlers import ClassifierHandler

    work = out / f"sequential{'' if policy else '-no-policy'}-seed{seed}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    model = work / "model.safetensors"
    shutil.copy(train(out, seed), model)
    led = Ledger.create(work / "ledger")
    led.register_model(
        "cnn",
        model,
        SCENARIO,
        seed=seed,
        policy={"retrain_if": {"test_acc_drop": 2.0}} if policy else None,
    )
    rng = np.random.default_rng([seed, 18])
    n = len(ClassifierHandler(led.model_state("cnn")).train)
    picks = rng.choice(n, size=N_REQUESTS * PER_REQUEST, replace=False).reshape(N_REQUESTS, -1)
    t0 = time.perf_counter()
    for i, ids in enumerate(picks):
        led.add(f"subject-{i}", "cnn", {"samples": sorted(ids.tolist())}, "neggrad_plus", NG)
    led.process()
    seconds = time.perf_counter() - t0
    report = led.verify()
    status = led.status()
    handler = ClassifierHandler(led.model_state("cnn"))
    removed = sorted(led.model_state("cnn")["removed"])

    def scores(m) -> dict:
        met = handler.metrics(m, removed, set(removed))
        return {
            "test_acc": met["test_acc"],
            "removed_acc": met["forget_acc"],
            "removed_mia_auc": met["removed_mia_auc"],
        }

    rows = {
        "original": scores(handler.load(train(out, seed))),
        "ledger": scores(handler.load(model)),
    }
    oracle_seconds = []
    for k, s in enumerate((seed, seed + 1000, seed + 2000)):
        t = time.perf_counter()
        m, _ = handler.retrain(set(removed), s)
        oracle_seconds.append(time.perf_counter() - t)
        rows["oracle" if k == 0 else f"oracle_seed{s}"] = scores(m)
    trail = [p["test_acc"] for p in status["processed"]]
    return {
        "seed": seed,
        "requests": N_REQUESTS,
        "samples_removed": len(removed),
        "retrains": status["models"]["cnn"]["retrains"],
        "processed_entries": len(status["processed"]),
        "verify_ok": report.ok,
        "verify_problems": report.problems,
        "seconds": seconds,
        "oracle_seconds": float(np.mean(oracle_seconds)),
        "test_acc_trail": trail,
        "rows": rows,
        "gap_to_oracle": rows["ledger"]["test_acc"] - rows["oracle"]["test_acc"],
    }


def _process_child(root: str):
    from unlearn.ledger import Ledger

    with Ledger.open(root) as led:
        led.process()
    os._exit(0)


def _fork(target, *args):
    p = mp.get_context("fork").Process(target=target, args=args)
    p.start()
    return p


def crashes(out: Path, n_requests: int = 60, seed: int = 0) -> dict:
    from unlearn.ledger import Ledger
    from unlearn.ledger.handlers import file_sha256

    work = out / "crash"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    model = work / "model.safetensors"
    shutil.copy(train(out, 0), model)
    led = Ledger.create(work / "ledger")
    led.register_model("cnn", model, SCENARIO, seed=0)
    for i in range(n_requests):
        led.add(f"s{i}", "cnn", {"samples": [2 * i, 2 * i + 1]}, "neggrad_plus", NG)
    # one request's duration, measured in a child that is not killed
    from unlearn.ledger.handlers import ClassifierHandler

    handler = ClassifierHandler(led.model_state("cnn"))
    t = time.perf_counter()
    first = _fork(_one, str(work / "ledger"))
    first.join()
    one = time.perf_counter() - t
    rng = random.Random(seed)
    trials = corrupt_ledgers = corrupt_models = 0
    hashes = {file_sha256(model)}
    for e in led.entries():
        if e["kind"] == "request_processed":
            hashes.add(json.loads(e["body"])["hash_after"])
    killed_at = []
    while any(r["status"] != "done" for r in led.requests()):
        p = _fork(_process_child, str(work / "ledger"))
        delay = rng.uniform(0, 1.3 * one)
        time.sleep(delay)
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
            trials += 1
            killed_at.append(delay)
        p.join()
        with Ledger.open(work / "ledger") as check:
            problems = [
                x
                for x in check.verify().problems
                if "model file" not in x and "certificate" not in x
            ]
            for e in check.entries():
                if e["kind"] == "request_processed":
                    hashes.add(json.loads(e["body"])["hash_after"])
            statuses = {r["status"] for r in check.requests()}
        corrupt_ledgers += bool(problems) or not statuses <= {"pending", "processing", "done"}
        try:
            handler.load(model)
            corrupt_models += file_sha256(model) not in hashes
        except Exception:  # noqa: BLE001 - counting a model file that no longer loads
            corrupt_models += 1
        if trials > 400:
            break
    led.process()
    final = led.verify()
    per = [e["request_id"] for e in led.entries() if e["kind"] == "request_processed"]
    return {
        "requests": n_requests,
        "kill_trials": trials,
        "one_request_seconds": one,
        "corrupted_ledgers": corrupt_ledgers,
        "corrupted_model_files": corrupt_models,
        "lost_requests": n_requests - len(set(per)),
        "doubled_requests": len(per) - len(set(per)),
        "final_verify_ok": final.ok,
        "final_problems": final.problems,
    }


def _one(root: str):
    from unlearn.ledger import Ledger

    with Ledger.open(root) as led:
        led.process(max_requests=1)
    os._exit(0)


def _adder(root: str, base: int, k: int):
    from unlearn.ledger import Ledger

    with Ledger.open(root) as led:
        for i in range(k):
            led.add(f"w{base}-{i}", "cnn", {"samples": [1000 * base + i]}, "neggrad_plus", NG)
    os._exit(0)


def concurrency(out: Path, procs: int = 4, each: int = 50) -> dict:
    from unlearn.ledger import Ledger

    work = out / "concurrency"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    model = work / "model.safetensors"
    shutil.copy(train(out, 0), model)
    led = Ledger.create(work / "ledger")
    led.register_model("cnn", model, SCENARIO, seed=0)
    t = time.perf_counter()
    ps = [_fork(_adder, str(work / "ledger"), b, each) for b in range(procs)]
    for p in ps:
        p.join()
    seconds = time.perf_counter() - t
    rep = led.verify()
    entries = led.entries()
    return {
        "processes": procs,
        "requests_each": each,
        "request_entries": sum(e["kind"] == "request_added" for e in entries),
        "distinct_ids": len({r["id"] for r in led.requests()}),
        "exit_codes": [p.exitcode for p in ps],
        "chain_ok": rep.ok,
        "problems": rep.problems,
        "seconds": seconds,
    }


def tampering(out: Path, edits: int = 300, file_edits: int = 100, seed: int = 0) -> dict:
    from unlearn.ledger import Ledger

    work = out / "tamper"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    model = work / "model.safetensors"
    shutil.copy(train(out, 0), model)
    led = Ledger.create(work / "ledger", sign=True)
    led.register_model("cnn", model, SCENARIO, seed=0)
    for i in range(10):
        led.add(f"s{i}", "cnn", {"samples": [3 * i, 3 * i + 1, 3 * i + 2]}, "neggrad_plus", NG)
    led.process()
    assert led.verify().ok
    led.close()
    db = work / "ledger" / "ledger.sqlite"
    pristine = work / "pristine.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    shutil.copy(db, pristine)
    rng = random.Random(seed)
    cols = ["at", "kind", "model", "request_id", "body", "prev_hash", "hash"]
    detected = named = 0
    misses = []
    for _ in range(edits):
        shutil.copy(pristine, db)
        conn = sqlite3.connect(db)
        seq = rng.randint(1, conn.execute("SELECT MAX(seq) FROM entries").fetchone()[0])
        col = rng.choice([c for c in cols if c != "request_id" or seq > 1])
        (value,) = conn.execute(f"SELECT {col} FROM entries WHERE seq = ?", (seq,)).fetchone()
        pos = rng.randrange(len(value))
        new = chr(rng.choice([c for c in range(33, 127) if c != ord(value[pos])]))
        conn.execute(
            f"UPDATE entries SET {col} = ? WHERE seq = ?",
            (value[:pos] + new + value[pos + 1 :], seq),
        )
        conn.commit()
        conn.close()
        with Ledger.open(work / "ledger") as led:
            rep = led.verify()
        detected += not rep.ok
        named += any(f"entry {seq} (" in p for p in rep.problems)
        if rep.ok:
            misses.append({"seq": seq, "column": col, "pos": pos})
    shutil.copy(pristine, db)
    raw = model.read_bytes()
    f_detected = f_named = 0
    for _ in range(file_edits):
        b = bytearray(raw)
        i = rng.randrange(len(b))
        b[i] = (b[i] + rng.randint(1, 255)) % 256
        model.write_bytes(bytes(b))
        with Ledger.open(work / "ledger") as led:
            rep = led.verify()
        f_detected += not rep.ok
        f_named += any(f"model file {model}" in p for p in rep.problems)
    model.write_bytes(raw)
    return {
        "entry_edits": edits,
        "entry_edits_detected": detected,
        "entry_edits_naming_the_entry": named,
        "undetected": misses,
        "model_file_edits": file_edits,
        "model_file_edits_detected": f_detected,
        "model_file_edits_naming_the_file": f_named,
    }


def _sequential_block(runs: list[dict], title: str) -> list[str]:
    lines = [
        f"## {title}",
        "",
        "| seed | row | test acc | acc on the 400 removed | loss-attack AUC on them |",
        "|---|---|---|---|---|",
    ]
    for s in runs:
        for name, r in s["rows"].items():
            lines.append(
                f"| {s['seed']} | {name} | {r['test_acc']:.2f} | {r['removed_acc']:.2f} "
                f"| {r['removed_mia_auc']:.1f} |"
            )
    gaps = [s["gap_to_oracle"] for s in runs]
    trails = [s["test_acc_trail"] for s in runs]
    return lines + [
        "",
        f"Test accuracy, ledger minus oracle: {', '.join(f'{g:+.2f}' for g in gaps)} "
        f"(mean {np.mean(gaps):+.2f}); lowest test accuracy after any step: "
        f"{[round(min(t), 1) for t in trails]}; retrains the policy asked for: "
        f"{[s['retrains'] for s in runs]}; seconds for the 100 requests: "
        f"{[round(s['seconds']) for s in runs]} (one retrain: "
        f"{[round(s['oracle_seconds'], 1) for s in runs]} s); "
        f"verify: {[s['verify_ok'] for s in runs]}.",
        "",
    ]


def report(res: dict) -> str:
    lines = [
        "# Deletion ledger benchmark",
        "",
        "Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ledger_bench.py`",
        "",
    ]
    lines += _sequential_block(
        res["sequential"],
        "100 sequential requests (4 samples each, NegGrad+), retrain when test accuracy "
        "falls 2 points",
    )
    if "sequential_no_policy" in res:
        lines += _sequential_block(res["sequential_no_policy"], "The same, no retrain policy")
    c = res["crash"]
    lines += [
        "## kill -9 at random times",
        "",
        f"{c['kill_trials']} kills over {c['requests']} requests (one request takes "
        f"{c['one_request_seconds']:.1f} s): {c['corrupted_ledgers']} corrupted ledgers, "
        f"{c['corrupted_model_files']} corrupted model files, {c['lost_requests']} lost and "
        f"{c['doubled_requests']} doubled requests; final verify "
        f"{'passed' if c['final_verify_ok'] else 'FAILED'}.",
        "",
    ]
    k = res["concurrency"]
    lines += [
        "## Concurrent submitters",
        "",
        f"{k['processes']} processes x {k['requests_each']} requests: "
        f"{k['request_entries']} request entries, {k['distinct_ids']} distinct ids, chain "
        f"{'intact' if k['chain_ok'] else 'BROKEN'} ({k['seconds']:.1f} s).",
        "",
    ]
    t = res["tampering"]
    lines += [
        "## Tampering",
        "",
        f"{t['entry_edits']} single-character edits of random entry fields: "
        f"{t['entry_edits_detected']} detected, {t['entry_edits_naming_the_entry']} named "
        f"the entry. {t['model_file_edits']} single-byte edits of the model file: "
        f"{t['model_file_edits_detected']} detected, "
        f"{t['model_file_edits_naming_the_file']} named the file.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "ledger"))
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument(
        "--parts", default="sequential,sequential_no_policy,crash,concurrency,tampering"
    )
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = args.parts.split(",")
    path = out / "results.json"
    res = json.loads(path.read_text()) if path.is_file() else {}
    if "sequential" in parts:
        res["sequential"] = [sequential(out, int(s)) for s in args.seeds.split(",")]
    if "sequential_no_policy" in parts:
        res["sequential_no_policy"] = [
            sequential(out, int(s), policy=False) for s in args.seeds.split(",")
        ]
    if "crash" in parts:
        res["crash"] = crashes(out)
    if "concurrency" in parts:
        res["concurrency"] = concurrency(out)
    if "tampering" in parts:
        res["tampering"] = tampering(out)
    path.write_text(json.dumps(res, indent=1) + "\n")
    if all(k in res for k in ("sequential", "crash", "concurrency", "tampering")):
        (out / "report.md").write_text(report(res))
    print(json.dumps({k: v for k, v in res.items() if k != "sequential"}, indent=1)[:3000])
    for s in res.get("sequential", []):
        print(s["seed"], s["rows"], s["retrains"], round(s["seconds"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
