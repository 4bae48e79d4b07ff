"""Run a scenario on the local process pool and on Ray and check the numbers agree.

    .venv/bin/python benchmarks/compare_engines.py [SCENARIO] [--out DIR]

Runs ``unlearn bench SCENARIO`` twice, with ``--engine local`` and ``--engine ray``
(same seeds, two workers, one BLAS thread each), and compares every row's metrics
except the costs (seconds, memory), which are measured, not computed. Writes
DIR/local, DIR/ray and DIR/engines.json; exits 1 when a number differs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COSTS = {"seconds", "peak_mem_mb", "baseline_mem_mb", "time_vs_oracle", "train_state_mb"}


def numbers(doc: dict) -> dict:
    return {
        f"{r['method']}/seed{r['seed']}": {k: v for k, v in r["metrics"].items() if k not in COSTS}
        for r in doc["rows"]
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "scenario", nargs="?", default=str(ROOT / "benchmarks" / "mnist1d-random10.yaml")
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "engines"))
    args = ap.parse_args()
    out = Path(args.out)
    exe = str(Path(sys.executable).parent / "unlearn")
    docs, seconds = {}, {}
    for engine in ("local", "ray"):
        t0 = time.perf_counter()
        subprocess.run(
            [
                exe,
                "bench",
                args.scenario,
                "--out",
                str(out / engine),
                "--quiet",
                "--engine",
                engine,
                "--workers",
                "2",
                "--threads",
                "1",
            ],
            check=True,
        )
        seconds[engine] = time.perf_counter() - t0
        docs[engine] = json.loads((out / engine / "results.json").read_text())
    a, b = numbers(docs["local"]), numbers(docs["ray"])
    diffs = [
        (row, k, a[row][k], b.get(row, {}).get(k))
        for row in a
        for k in a[row]
        if b.get(row, {}).get(k) != a[row][k]
    ]
    report = {
        "scenario": args.scenario,
        "rows": len(a),
        "values_compared": sum(len(m) for m in a.values()),
        "differences": diffs,
        "same_rows": sorted(a) == sorted(b),
        "seconds": seconds,
        "execution": {e: d["execution"] for e, d in docs.items()},
    }
    (out / "engines.json").write_text(json.dumps(report, indent=1))
    ok = not diffs and report["same_rows"]
    print(
        f"{report['values_compared']} values in {len(a)} rows: "
        f"{'identical' if ok else f'{len(diffs)} differ'} on local and ray "
        f"(local {seconds['local']:.0f} s, ray {seconds['ray']:.0f} s)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
