"""The results-table comparison that guards refactors (benchmarks/compare_tables.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "compare_tables", Path(__file__).resolve().parents[1] / "benchmarks" / "compare_tables.py"
)
ct = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ct)

OLD = """## s1

| Method | Test acc | Seconds |
|---|---|---|
| original | 90.00 ± 1.00 | 5.0 ± 0.1 |
| `salun` | 80.00 ± 0.50 | 1.0 ± 0.1 |
| retrain | - | – |
"""


def test_within_a_spread_passes_and_beyond_fails():
    same = OLD.replace("90.00 ± 1.00", "90.90 ± 0.20").replace("5.0 ± 0.1", "9.0 ± 0.1")
    bad, cost, gone = ct.compare(OLD, same)
    assert bad == [] and gone == [] and len(cost) == 1  # only the timing moved
    moved = OLD.replace("80.00 ± 0.50", "81.00 ± 0.40")
    bad, _, _ = ct.compare(OLD, moved)
    assert bad == ["s1 / salun / Test acc: 80 ± 0.5 -> 81 ± 0.4"]
    _, _, gone = ct.compare(OLD, OLD.replace("| `salun` | 80.00 ± 0.50 | 1.0 ± 0.1 |\n", ""))
    assert gone == ["s1 / salun / Seconds", "s1 / salun / Test acc"]
