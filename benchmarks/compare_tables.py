"""Compare two versions of docs/results.md table by table: is every number within one
seed-spread of the other's?

    .venv/bin/python benchmarks/compare_tables.py                  # HEAD's file vs the working copy
    .venv/bin/python benchmarks/compare_tables.py --old REV --new docs/results.md

A cell "m ± s" of the new table is within one seed-spread of the old one's "m0 ± s0" when
``|m - m0| <= max(s, s0)`` (for cells without a spread, equal to the printed digits).
Timing and memory columns (Seconds, Peak MB, Time / oracle) are listed apart: they
measure the machine as much as the method. Exits 1 when a non-timing cell differs by
more than a spread, so it can guard a refactor that must not change results.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COST = ("seconds", "peak mb", "time / oracle", "train-state mb", "baseline mb", "peak cuda mb")
NUM = r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
CELL = re.compile(rf"^\s*({NUM})(?:\s*±\s*({NUM}))?\s*$")


def tables(text: str) -> dict[tuple[str, str, str], tuple[float, float | None]]:
    """``(section, row, column) -> (mean, spread)`` for every numeric cell of every table."""
    out: dict = {}
    section, header = "", None
    for line in text.splitlines():
        if line.startswith("## "):
            section, header = line[3:].strip(), None
            continue
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if set("".join(cells)) <= set("-: "):
            continue
        for col, cell in zip(header[1:], cells[1:], strict=False):
            m = CELL.match(cell.replace("`", ""))
            if m:
                spread = float(m.group(2)) if m.group(2) else None
                out[(section, cells[0].strip("`"), col)] = (float(m.group(1)), spread)
    return out


def compare(old: str, new: str) -> tuple[list[str], list[str], list[str]]:
    a, b = tables(old), tables(new)
    bad, cost, gone = [], [], []
    for key, (m0, s0) in sorted(a.items()):
        if key not in b:
            gone.append(" / ".join(key))
            continue
        m1, s1 = b[key]
        tol = max(s0 or 0.0, s1 or 0.0)
        if s0 is None and s1 is None:
            tol = 0.0
        if abs(m1 - m0) > tol + 1e-12:
            line = f"{' / '.join(key)}: {m0:g} ± {s0 or 0:g} -> {m1:g} ± {s1 or 0:g}"
            (cost if key[2].lower() in COST else bad).append(line)
    return bad, cost, gone


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", default="HEAD", help="git revision of docs/results.md (or a path)")
    ap.add_argument("--new", default=str(ROOT / "docs" / "results.md"))
    args = ap.parse_args()
    if Path(args.old).is_file():
        old = Path(args.old).read_text()
    else:
        old = subprocess.run(
            ["git", "show", f"{args.old}:docs/results.md"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    bad, cost, gone = compare(old, Path(args.new).read_text())
    for title, lines in (
        ("differ by more than one seed-spread", bad),
        ("timing / memory cells that moved (machine-dependent)", cost),
        ("cells no longer present", gone),
    ):
        print(f"{len(lines)} {title}")
        for line in lines:
            print("  " + line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
