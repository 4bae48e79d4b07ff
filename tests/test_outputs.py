"""Outputs of a run: strict JSON (no NaN / Infinity), missing values shown as missing, and
an output folder replaced as one unit, also when the writer is killed (kill -9) at any point."""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import signal
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import yaml

from unlearn.bench import report
from unlearn.bench.report import strict_json, write_outputs
from unlearn.errors import UnlearnError

CLASSIFIER_FILES = ["forget_vs_test.png", "gap_and_time.png", "report.html", "report.md"]


def strict_loads(text: str):
    """json.loads that refuses NaN, Infinity and -Infinity (as jq and JavaScript do)."""

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def _results(rows: list[dict], name: str = "strict", **extra) -> dict:
    """A classifier results dict around ``rows`` (summary as the runner computes it)."""
    from unlearn.bench.runner import summarise

    return {
        "scenario": {"name": name, "description": "synthetic", **extra.pop("scenario", {})},
        "scenario_name": name,
        "request": "random 10 %",
        "model_spec": {"name": "mlp"},
        "train_recipe": {"epochs": 1},
        "methods": {"ng": {"method": "neggrad_plus", "config": {"lr": 0.1}}},
        "seeds": [0, 1],
        "versions": {"unlearn": "test"},
        "total_seconds": 1.0,
        "rows": rows,
        "summary": summarise(rows),
        **extra,
    }


def _row(method: str, seed: int, **metrics) -> dict:
    base = {"forget_acc": 90.0 + seed, "test_acc": 91.0, "retain_acc": 99.0, "seconds": 1.0}
    return {"method": method, "seed": seed, "metrics": {**base, **metrics}}


# ---------------------------------------------------------------- strict JSON


def test_strict_loads_refuses_what_python_writes_by_default():
    with pytest.raises(ValueError, match="NaN"):
        strict_loads(json.dumps({"x": float("nan")}))
    with pytest.raises(ValueError, match="Infinity"):
        strict_loads(json.dumps([float("-inf")]))


def test_strict_json_replaces_non_finite_values_recursively():
    obj = {
        "a": float("nan"),
        "b": [1.0, float("inf"), (2, float("-inf"))],
        "c": {"d": np.float32("nan"), "e": np.float64(2.5), "f": np.int64(3)},
        "g": None,
        "h": "NaN",
    }
    out = strict_json(obj)
    assert out == {"a": None, "b": [1.0, None, [2, None]], "c": {"d": None, "e": 2.5, "f": 3},
                   "g": None, "h": "NaN"}  # fmt: skip
    assert type(out["c"]["f"]) is int
    json.dumps(out, allow_nan=False)
    assert math.isnan(obj["a"])  # the input is not changed


def test_outputs_with_nan_inf_and_none_are_strict_json_and_shown_missing(tmp_path):
    rows = []
    for seed in (0, 1):
        rows.append(_row("original", seed, seconds=float("nan"), avg_gap=5.0))
        rows.append(_row("retrain", seed, mia_efficacy=float("inf")))
        rows.append(_row("oracle_noise", seed, avg_gap=1.0, time_vs_oracle=1.0))
        rows.append(_row("ng", seed, avg_gap=float("inf") if seed else 1.0, time_vs_oracle=2.0))
    targets = [
        {
            "name": "original time",
            "rows": "original",
            "require": [{"metric": "seconds", "below": 5}],
        },
        {"name": "ng accuracy", "rows": "ng", "require": [{"metric": "test_acc", "at_least": 90}]},
    ]
    res = _results(rows, scenario={"targets": targets}, total_seconds=float("nan"))
    res["summary"][0]["std"]["forget_acc"] = float("nan")  # a spread that could not be computed
    res["rows"][3]["metrics"]["time_vs_oracle"] = None  # a value that was not measured
    res["summary"][3]["mean"]["time_vs_oracle"] = None
    out = write_outputs(res, tmp_path / "out")

    text = (out / "results.json").read_text()
    data = strict_loads(text)
    assert "NaN" not in text and "Infinity" not in text
    orig = [r for r in data["rows"] if r["method"] == "original"]
    assert all(r["metrics"]["seconds"] is None for r in orig)
    assert data["rows"][3]["metrics"]["time_vs_oracle"] is None
    assert data["total_seconds"] is None
    summ = {s["method"]: s for s in data["summary"]}
    assert summ["original"]["mean"]["seconds"] is None
    assert summ["ng"]["mean"]["avg_gap"] is None  # inf on one seed: no finite mean
    assert summ["retrain"]["mean"]["mia_efficacy"] is None

    md = (out / "report.md").read_text()
    table = {ln.split("|")[1].strip(): ln for ln in md.splitlines() if ln.startswith("| ")}
    cells = [c.strip() for c in table["original"].split("|")[2:-1]]
    header = [c.strip() for c in table["Method"].split("|")[2:-1]]
    assert cells[header.index("Seconds")] == "–"
    assert cells[header.index("Forget acc")] == "90.50 ± –"
    ng = [c.strip() for c in table["ng"].split("|")[2:-1]]
    assert ng[header.index("Avg.Gap")] == "–"
    assert [c.strip() for c in table["retrain"].split("|")[2:-1]][header.index("MIA-eff.")] == "–"
    assert not any(c in ("0", "0.00", "0.000", "nan", "inf") for c in cells + ng)
    assert "Total wall time of the run: –." in md
    assert "- original time: missing — `original`: seconds –" in md
    assert "- ng accuracy: met — `ng`: test_acc 91" in md
    html = (out / "report.html").read_text()
    assert "<h2>Targets</h2>" in html and "original time: missing" in html
    assert "<td>–</td>" in html
    assert sorted(p.name for p in out.iterdir()) == sorted([*CLASSIFIER_FILES, "results.json"])


def test_plots_leave_out_rows_without_values(tmp_path):
    rows = [_row(m, s, avg_gap=1.0, time_vs_oracle=0.5) for m in ("original", "ng") for s in (0, 1)]
    rows += [{"method": "retrain", "seed": s, "metrics": {"seconds": 2.0}} for s in (0, 1)]
    out = write_outputs(_results(rows), tmp_path / "out")  # retrain has no accuracies
    assert (out / "forget_vs_test.png").stat().st_size > 0
    llm_rows = [
        {"method": "original", "seed": 0, "metrics": {"model_utility": 0.5, "forget_quality": 0.1}},
        {"method": "retrain", "seed": 0, "metrics": {"model_utility": float("nan")}},
        {"method": "x", "seed": 0, "metrics": {"model_utility": 0.4, "forget_quality": 0.2}},
    ]
    res = _results(llm_rows, kind="llm", seeds=[0])
    res["summary"][0]["mean"]["forget_quality"] = None  # read back from a results.json
    out = write_outputs(res, tmp_path / "llm")
    assert (out / "forget_quality_vs_utility.png").stat().st_size > 0
    assert "| retrain | – |" in (out / "report.md").read_text()


def test_a_malformed_targets_block_fails_before_anything_is_written(tmp_path):
    res = _results([_row("original", 0)], scenario={"targets": [{"name": "x", "rows": "a"}]})
    with pytest.raises(UnlearnError, match="needs `require`, `pick` or `show`"):
        write_outputs(res, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", ["", ".", "..", "a/.."])
def test_an_output_folder_needs_a_name(tmp_path, bad):
    with pytest.raises(UnlearnError, match="has no name"):
        write_outputs(_results([_row("original", 0)]), bad)


def test_real_benchmark_flows_write_strict_json(tmp_path, capsys):
    """The tiny classifier, certified and LLM scenarios of the other tests, through the CLI."""
    from tests.test_cli import TINY as CLASSIFIER
    from tests.test_llm_bench import TINY as LLM
    from unlearn.cli import main

    original_acc = {"rows": "original", "require": [{"metric": "test_acc", "at_least": 0}]}
    lm_method = LLM["methods"][0].get("label", LLM["methods"][0]["name"])
    scenarios = {
        "classifier": {
            **CLASSIFIER,
            "seeds": [0],
            "methods": CLASSIFIER["methods"][:1],
            "targets": [{"name": "original accuracy", **original_acc}],
        },
        "certified": {
            "name": "cert",
            "kind": "certified",
            "data": {"name": "digits"},
            "model": {"lam": 0.2, "sigma": 0.5},
            "fractions": [0.02],
            "seeds": [0],
            "repeats": 1,
        },
        "llm": {
            **LLM,
            "model": {"name": "tiny", "hidden": 32, "layers": 1},
            "recipe": {**LLM["recipe"], "epochs": 1},
            "eval": {"retain_items": 2, "max_new_tokens": 4},
            "methods": [{**LLM["methods"][0], "steps": 1}],
            "targets": [
                {"name": "original seconds", "rows": "original", "show": ["seconds"]},
                {"name": "utility", "rows": lm_method, "require": [
                    {"metric": "model_utility", "at_least": 0}]},
            ],
        },
    }  # fmt: skip
    for kind, scenario in scenarios.items():
        path = tmp_path / f"{kind}.yaml"
        path.write_text(yaml.safe_dump(scenario))
        out = tmp_path / f"out-{kind}"
        assert main(["bench", str(path), "--out", str(out), "--quiet"]) == 0, kind
        data = strict_loads((out / "results.json").read_text())
        assert data["rows"] and data["summary"], kind
        md = (out / "report.md").read_text()
        assert ("## Targets" in md) == ("targets" in scenario), kind
        if "targets" in scenario:  # each required target met on the run's own values
            judged = md.split("## Targets")[1].split("## Hyperparameters")[0]
            assert judged.count(": met — ") == 1, judged
        assert not re.search(r"\bnan\b|\binf\b", md, re.IGNORECASE), kind
    capsys.readouterr()


# ---------------------------------------------------------------- one folder, replaced as one unit


def _run_results(run: str) -> dict:
    """Results whose every output file carries ``run`` (title, JSON and, in the test, plots)."""
    rows = [_row(m, s, avg_gap=1.0) for m in ("original", "retrain", "ng") for s in (0, 1)]
    return _results(rows, name=run)


def _check_complete(folder: Path, fake_plots: bool = False) -> str:
    """The folder holds every output of one write; returns that write's run id."""
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted([*CLASSIFIER_FILES, "results.json"]), names
    run = strict_loads((folder / "results.json").read_text())["scenario_name"]
    assert (folder / "report.md").read_text().startswith(f"# {run}\n")
    assert f"<title>{run}</title>" in (folder / "report.html").read_text()
    for png in ("forget_vs_test.png", "gap_and_time.png"):
        data = (folder / png).read_bytes()
        assert data == _fake_png(run) if fake_plots else data.startswith(b"\x89PNG"), png
    return run


def _fake_png(run: str) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + run.encode()


def _fake_plots(results: dict, folder: Path) -> list[str]:
    """Small stand-ins for the plots that carry the run id (and take no time to draw)."""
    for name in ("forget_vs_test.png", "gap_and_time.png"):
        (folder / name).write_bytes(_fake_png(results["scenario_name"]))
    return ["forget_vs_test.png", "gap_and_time.png"]


def _writer(out: Path, generation: int, exchange: bool, errors: Path) -> None:
    """The child: writes ``out`` again and again until it is killed. Every rename and
    deletion waits a little before and after (20 ms after a rename), so that kills land in
    every step of the swap about as often as while files are written."""
    try:

        def slow(fn, after):
            def wrapped(*args, **kwargs):
                time.sleep(0.002)
                result = fn(*args, **kwargs)
                time.sleep(after)
                return result

            return wrapped

        os.rename = slow(os.rename, 0.02)
        shutil.rmtree = slow(shutil.rmtree, 0.005)
        report._exchange = slow(report._exchange, 0.02) if exchange else (lambda a, b: False)
        for i in range(10**9):
            write_outputs(_run_results(f"run-{generation:03d}-{i:06d}"), out)
            left = sorted(p.name for p in out.parent.iterdir() if p.name != out.name)
            if left:
                raise AssertionError(f"hidden leftovers after a successful write: {left}")
    except BaseException:
        errors.write_text(traceback.format_exc())
        os._exit(3)
    os._exit(0)


def _can_exchange(tmp_path: Path) -> bool:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "in-a").touch()
    swapped = report._exchange(a, b)
    assert not swapped or (b / "in-a").exists()
    shutil.rmtree(a)
    shutil.rmtree(b)
    return swapped


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_kill_at_random_points_leaves_the_old_or_the_new_folder(tmp_path, monkeypatch, exchange):
    if exchange and not _can_exchange(tmp_path):
        pytest.skip("this system cannot swap two folders in one step (renameat2)")
    kills = 30
    parent = tmp_path / "parent"
    out = parent / "out"
    errors = tmp_path / "errors.txt"
    monkeypatch.setattr(report, "_plots", _fake_plots)  # the forked writers inherit it
    write_outputs(_run_results("run-000-000000"), out)  # an old folder to replace
    rng = random.Random(10)
    last, mid_write, recovered = "", 0, 0
    t0 = time.monotonic()
    for generation in range(1, kills + 1):
        pid = os.fork()
        if pid == 0:
            _writer(out, generation, exchange, errors)
        time.sleep(rng.uniform(0.0, 0.1))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
            errors.read_text() if errors.exists() else f"the writer ended by itself ({status})"
        )
        hidden = [p for p in parent.iterdir() if p.name != out.name]
        mid_write += bool(hidden)
        if not out.exists():
            # only between the two renames of the fallback: the old folder is under its trash
            # name, complete, and the next write puts it back
            assert not exchange
            trash = [p for p in hidden if re.fullmatch(r"\.out\.trash-[0-9_a-f]+", p.name)]
            assert len(trash) == 1, hidden
            _check_complete(trash[0], fake_plots=True)
            report._recover(out)
            recovered += 1
        run = _check_complete(out, fake_plots=True)
        assert run >= last, f"{run} is older than {last}, seen before"
        last = run
    assert time.monotonic() - t0 < 25
    assert mid_write >= kills // 3, f"only {mid_write} of {kills} kills hit a write under way"
    if not exchange:
        assert recovered >= 1, "no kill landed between the two renames"
    write_outputs(_run_results("run-999-000000"), out)
    assert [p.name for p in parent.iterdir()] == ["out"]
    assert _check_complete(out, fake_plots=True) == "run-999-000000"


def test_replacing_removes_old_files_and_cleans_leftovers_of_killed_writes(tmp_path):
    out = tmp_path / "out"
    write_outputs(_run_results("first"), out)
    (out / "stale.txt").write_text("from an older layout")
    # what killed writes can leave: a half-written folder, a folder being deleted, and
    # leftovers of other outputs whose names begin the same way (kept)
    tmp = report._sibling(out, "tmp")
    tmp.mkdir()
    (tmp / "results.json").write_text("{")
    doomed = report._sibling(out, "del")
    doomed.mkdir()
    other = report._sibling(tmp_path / "out.v2", "tmp")
    other.mkdir()
    write_outputs(_run_results("second"), out)
    assert _check_complete(out) == "second"
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", other.name])


def test_an_old_folder_left_under_its_trash_name_is_put_back_first(tmp_path):
    out = tmp_path / "out"
    write_outputs(_run_results("old"), out)
    trash = report._sibling(out, "trash")
    os.rename(out, trash)  # a kill between the two renames of the fallback
    half = report._sibling(out, "tmp")
    half.mkdir()
    report._recover(out)
    assert _check_complete(out) == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    os.rename(out, report._sibling(out, "trash"))
    write_outputs(_run_results("new"), out)
    assert _check_complete(out) == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_failed_write_keeps_the_old_folder_and_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "out"
    write_outputs(_run_results("old"), out)

    def broken(results, folder):
        (folder / "forget_vs_test.png").write_bytes(b"half")
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(report, "_plots", broken)
    with pytest.raises(RuntimeError, match="plotting failed"):
        write_outputs(_run_results("new"), out)
    assert _check_complete(out) == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_an_output_path_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_text("keep me")
    with pytest.raises(UnlearnError, match="not a folder"):
        write_outputs(_run_results("x"), path)
    assert path.read_text() == "keep me"
