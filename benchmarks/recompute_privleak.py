"""Rewrite PrivLeak in stored LM results from their Min-K% AUCs, in MUSE's sign and
denominator (issue 12). Results written before that fix held (a - r) / r * 100; the
stored ``mink_auc`` of each row and of its seed's oracle (``retrain``) row are all the
new value needs, so nothing is retrained.

    .venv/bin/python benchmarks/recompute_privleak.py benchmarks/out/smollm2-*/

Each folder's results.json, report.md and report.html are rewritten (as one unit);
folders whose rows carry no ``mink_auc`` are left as they are.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from unlearn.bench.core import summarise
from unlearn.bench.report import write_outputs
from unlearn.metrics.llm import privleak


def recompute(results: dict) -> int:
    """Set every non-oracle row's privleak from its and its oracle's mink_auc; returns how
    many rows changed. Rows are matched to the oracle of the same seed and part (the
    ``@part`` suffix of a row's label)."""

    def split(label: str) -> tuple[str, str]:
        base, _, part = label.partition("@")
        return base, part

    oracle = {}
    for r in results["rows"]:
        base, part = split(r["method"])
        if base == "retrain":
            oracle[(r["seed"], part)] = r["metrics"].get("mink_auc")
    changed = 0
    for r in results["rows"]:
        m = r["metrics"]
        base, part = split(r["method"])
        if base == "retrain" or "privleak" not in m:
            continue
        a, ref = m.get("mink_auc"), oracle.get((r["seed"], part))
        new = None if a is None or ref is None else privleak(a, ref)
        if new != m["privleak"]:
            m["privleak"] = new
            changed += 1
    results["summary"] = summarise(results["rows"])
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path)
    args = ap.parse_args(argv)
    for folder in args.folders:
        path = folder / "results.json"
        results = json.loads(path.read_text(encoding="utf-8"))
        if not any("mink_auc" in r["metrics"] for r in results["rows"]):
            print(f"{folder}: no Min-K% AUC, left as it is")
            continue
        n = recompute(results)
        write_outputs(results, folder)
        print(f"{folder}: {n} PrivLeak values rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
