"""The metric registry: every metric a row carries is declared, with what it needs."""

from __future__ import annotations

import pytest

from unlearn.errors import UnlearnError
from unlearn.metrics.registry import METRICS, NEEDS, check_rows


def test_every_metric_declares_families_needs_and_direction():
    assert {"avg_gap", "forget_quality", "ulira_auc", "privleak", "epsilon"} <= set(METRICS)
    for name, spec in METRICS.items():
        assert spec.name == name and spec.families and spec.about
        assert set(spec.needs) <= set(NEEDS)
        assert spec.better in ("higher", "lower", "oracle", "none")
    # attacks are metrics that need reference models; the oracle-relative ones need the oracle
    assert METRICS["ulira_auc"].needs == ("reference",)
    assert "oracle" in METRICS["avg_gap"].needs and "oracle" in METRICS["privleak"].needs


def test_an_undeclared_metric_is_refused():
    rows = [{"method": "m", "metrics": {"test_acc": 1.0, "made_up": 2.0}}]
    with pytest.raises(UnlearnError, match="'made_up'"):
        check_rows(rows, "classifier")
    with pytest.raises(UnlearnError, match="does not declare for causal_lm"):
        check_rows([{"method": "m", "metrics": {"avg_gap": 1.0}}], "causal_lm")
    check_rows([{"method": "m", "metrics": {"avg_gap": None}}], "classifier")


def test_the_runner_refuses_a_kind_that_is_not_a_name():
    from unlearn.bench.core import family_for

    with pytest.raises(UnlearnError, match="unknown kind"):
        family_for({"kind": [1]})
