"""Resumable runs (``unlearn bench --resume``): saved rows are reused, a killed run redoes
only the rows it had not saved, and the result equals an uninterrupted run's."""

from __future__ import annotations

import pytest

from unlearn.bench import core
from unlearn.errors import ScenarioError

from .test_relearn import _scenario

TIMED = ("seconds", "time_vs_oracle", "peak_mem_mb", "baseline_mem_mb")


def _strip(obj):
    """``obj`` without what differs between two runs of the same work: timings, records."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMED and k != "record"}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _run(raw, where):
    fam = core.family_for(raw)
    return core.run_parsed(fam, core.parse(fam, raw, "resume-test", None), resume=where)


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    raw = _scenario()
    first = _run(raw, tmp_path)
    assert first["resumed"]["rows"] == []
    files = sorted(tmp_path.rglob("*.json"))
    assert len(files) == 5  # original, retrain, oracle_noise and two methods
    again = _run(raw, tmp_path)  # everything saved: nothing computed
    assert len(again["resumed"]["rows"]) == 5
    assert _strip(again["rows"]) == _strip(first["rows"])
    # a run killed after the references: the methods are computed again, and their forget
    # quality (against the oracle's restored truth ratios), attack and weight change match
    for f in files:
        if "gradient_ascent" in f.name or "kunbr" in f.name:
            f.unlink()
    partial = _run(raw, tmp_path)
    assert {r["method"] for r in partial["resumed"]["rows"]} == {
        "original", "retrain", "oracle_noise"}  # fmt: skip
    assert _strip(partial["rows"]) == _strip(first["rows"])
    kunbr = next(r for r in partial["rows"] if r["method"] == "kunbr")
    assert kunbr["metrics"]["forget_quality"] is not None and "relearn" in kunbr
    # another set-up (the attack's settings changed) reuses nothing
    other = _scenario(epochs=1)
    assert _run(other, tmp_path)["resumed"]["rows"] == []


def test_families_whose_attacks_need_models_refuse_to_resume(tmp_path):
    raw = {
        "name": "x",
        "data": {"name": "digits"},
        "model": {"name": "mlp"},
        "forget": {"kind": "random", "fraction": 0.1},
        "methods": [{"name": "finetune"}],
    }
    fam = core.family_for(raw)
    with pytest.raises(ScenarioError, match="cannot be resumed"):
        core.run_parsed(fam, core.parse(fam, raw, "x", None), resume=tmp_path)


def test_an_ablation_run_resumes_group_by_group(tmp_path):
    import copy

    from .test_ablation import TINY

    raw = copy.deepcopy(TINY)
    first = _run(raw, tmp_path)
    files = sorted(tmp_path.rglob("*.json"))
    # 3 seeds x 2 groups x 2 modes x (original + 1 method)
    assert len(files) == 24
    for f in files:  # keep only the originals: every method row of every group is redone
        if not f.name.startswith("original"):
            f.unlink()
    again = _run(raw, tmp_path)
    assert {r["method"].split("@")[0] for r in again["resumed"]["rows"]} == {"original"}
    assert _strip(again["rows"]) == _strip(first["rows"])


def test_a_diffusion_run_resumes_with_its_attack_traces(tmp_path):
    pytest.importorskip("diffusers")
    from .test_diffusion import _scenario as diffusion_scenario

    raw = diffusion_scenario(tmp_path)
    first = _run(raw, tmp_path / "rows")
    for f in (tmp_path / "rows").rglob("*.json"):
        if f.name.startswith("esd"):
            f.unlink()
    again = _run(raw, tmp_path / "rows")
    assert {r["method"] for r in again["resumed"]["rows"]} == {
        "original", "retrain", "oracle_noise", "dimum"}  # fmt: skip
    assert _strip(again["rows"]) == _strip(first["rows"])
    assert "dimra" in next(r for r in again["rows"] if r["method"] == "dimum")


def test_changing_one_method_recomputes_only_its_rows(tmp_path):
    raw = _scenario()
    first = _run(raw, tmp_path)
    changed = _scenario()
    changed["methods"][1]["steps"] = 3  # kunbr
    changed["description"] = "a new description changes nothing"
    again = _run(changed, tmp_path)
    assert {r["method"] for r in again["resumed"]["rows"]} == {
        "original", "retrain", "oracle_noise", "gradient_ascent"}  # fmt: skip
    kept = [r for r in _strip(again["rows"]) if r["method"] != "kunbr"]
    assert kept == [r for r in _strip(first["rows"]) if r["method"] != "kunbr"]


def test_tensor_cache_builds_once_then_restores_what_it_saved(tmp_path):
    import torch

    from unlearn.bench.tensorcache import cache_path, cached_tensors

    calls = []

    def build():
        calls.append("build")
        return "built", {"w": torch.arange(6.0).view(2, 3)}

    def restore(tensors):
        calls.append("restore")
        return tensors["w"]

    key = {"seed": 1, "data": [1, 2]}
    res, sec, hit = cached_tensors(tmp_path, "thing", key, build, restore)
    assert (res, hit, calls) == ("built", False, ["build"]) and sec >= 0
    path = cache_path(tmp_path, "thing", {"data": [1, 2], "seed": 1})  # key order: same file
    assert path.is_file() and not list(tmp_path.glob("*.tmp"))
    again, sec2, hit2 = cached_tensors(tmp_path, "thing", key, build, restore)
    assert hit2 and calls == ["build", "restore"] and sec2 == sec
    assert torch.equal(again, torch.arange(6.0).view(2, 3))
    # another key, or no cache folder, builds again and (without a folder) writes nothing
    cached_tensors(tmp_path, "thing", {**key, "seed": 2}, build, restore)
    cached_tensors(None, "thing", key, build, restore)
    assert calls.count("build") == 3 and len(list(tmp_path.glob("thing-*"))) == 2
