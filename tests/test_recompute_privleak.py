"""benchmarks/recompute_privleak.py rewrites stored PrivLeak values from stored AUCs."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location(
        "recompute_privleak", ROOT / "benchmarks" / "recompute_privleak.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(method, seed, auc, leak):
    return {"method": method, "seed": seed, "metrics": {"mink_auc": auc, "privleak": leak}}


def test_old_values_become_muse_values_per_seed():
    mod = _load()
    results = {
        "rows": [
            _row("original", 0, 100.0, 220.0),
            _row("retrain", 0, 31.25, None),
            _row("npo", 0, 80.0, 60.0),
            _row("original", 1, 80.0, 60.0),
            _row("retrain", 1, 50.0, None),
            _row("npo", 1, None, None),
        ]
    }
    assert mod.recompute(results) == 3
    got = {(r["method"], r["seed"]): r["metrics"]["privleak"] for r in results["rows"]}
    assert got[("original", 0)] == pytest.approx(-100.0)
    assert got[("npo", 0)] == pytest.approx((31.25 - 80.0) / 68.75 * 100)
    assert got[("original", 1)] == pytest.approx(-60.0)  # the 80 vs 50 case
    assert got[("npo", 1)] is None and got[("retrain", 0)] is None
    by = {s["method"]: s for s in results["summary"]}
    assert by["original"]["mean"]["privleak"] == pytest.approx(-80.0)
    assert by["npo"]["mean"]["privleak"] is None  # missing on one seed: missing
