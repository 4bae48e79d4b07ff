import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from unlearn.cli import main
from unlearn.io import save_model
from unlearn.models import build_model

TINY = {
    "name": "tiny",
    "data": {"name": "digits"},
    "model": {"name": "mlp", "hidden": [32]},
    "train": {
        "epochs": 4,
        "batch_size": 64,
        "lr": 0.01,
        "optimizer": "adam",
        "schedule": "constant",
    },
    "forget": {"kind": "random", "fraction": 0.1},
    "methods": [
        {"name": "finetune", "config": {"epochs": 1, "optimizer": "adam", "lr": 1e-3}},
        {"name": "neggrad_plus", "label": "ng", "config": {"epochs": 1, "optimizer": "adam"}},
    ],
    "seeds": [0, 1],
}


def write(tmp_path: Path, scenario: dict | str, name="s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(scenario if isinstance(scenario, str) else yaml.safe_dump(scenario))
    return p


def test_methods_command_lists_request_kinds(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "salun" in out and "samples, class" in out and "retrain" in out


def test_installed_entry_point():
    exe = Path(sys.executable).parent / "unlearn"
    if not exe.exists():
        exe = shutil.which("unlearn")
    assert exe, "the unlearn command is not installed in this environment"
    res = subprocess.run([str(exe), "methods"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "scrub" in res.stdout


def test_bench_writes_the_documented_layout(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["bench", str(write(tmp_path, TINY)), "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "forget_vs_test.png",
        "gap_and_time.png",
        "report.html",
        "report.md",
        "results.json",
    ]
    res = json.loads((out / "results.json").read_text())
    assert {"rows", "summary", "scenario", "versions"} <= set(res)
    methods = [r["method"] for r in res["rows"]]
    assert methods.count("original") == 2 and methods.count("retrain") == 2
    assert set(methods) == {"original", "retrain", "oracle_noise", "finetune", "ng"}
    for row in res["rows"]:
        m = row["metrics"]
        for k in ("forget_acc", "retain_acc", "test_acc", "mia_efficacy", "seconds", "peak_mem_mb"):
            assert k in m
        assert ("avg_gap" in m) == (row["method"] != "retrain")
        assert row["seed"] in (0, 1)
    summ = {s["method"]: s for s in res["summary"]}
    assert summ["ng"]["n_seeds"] == 2
    gaps = [r["metrics"]["avg_gap"] for r in res["rows"] if r["method"] == "ng"]
    assert summ["ng"]["mean"]["avg_gap"] == pytest.approx(sum(gaps) / 2)
    assert summ["ng"]["std"]["avg_gap"] >= 0
    md = (out / "report.md").read_text()
    assert "| oracle_noise |" in md and "Avg.Gap" in md
    assert "data:image/png;base64" in (out / "report.html").read_text()


def _bad(tmp_path, capsys, args, match):
    out = tmp_path / "out"
    code = main(["bench", *args, "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("unlearn: error:")
    assert match in err, err
    assert not out.exists(), "a failed run must not write anything"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


@pytest.mark.parametrize(
    "forget, match",
    [
        ({"kind": "samples", "indices": [0, 99999]}, "index 99999 is out of range"),
        ({"kind": "class", "classes": [12]}, "class 12 does not occur"),
        ({"kind": "class", "classes": list(range(10))}, "whole training set"),
        ({"kind": "random", "fraction": 1.5}, "strictly between 0 and 1"),
    ],
)
def test_bad_requests_exit_2(tmp_path, capsys, forget, match):
    _bad(tmp_path, capsys, [str(write(tmp_path, {**TINY, "forget": forget}))], match)


def test_malformed_scenarios_exit_2(tmp_path, capsys):
    _bad(tmp_path, capsys, [str(write(tmp_path, "data: [unclosed"))], "not valid YAML")
    _bad(tmp_path, capsys, [str(write(tmp_path, "- a\n- b\n"))], "must be a mapping")
    _bad(tmp_path, capsys, [str(write(tmp_path, {**TINY, "methodz": []}))], "unknown key")
    _bad(
        tmp_path,
        capsys,
        [str(write(tmp_path, {**TINY, "methods": ["forgetify"]}))],
        "unknown method 'forgetify'",
    )
    _bad(tmp_path, capsys, [str(write(tmp_path, {**TINY, "seeds": "zero"}))], "'seeds'")
    _bad(tmp_path, capsys, [str(tmp_path / "missing.yaml")], "does not exist")
    _bad(tmp_path, capsys, [str(write(tmp_path, TINY)), "--seeds", "a,b"], "--seeds")


def test_checkpoint_of_another_architecture_exits_2(tmp_path, capsys):
    wrong = build_model(
        {"name": "mlp", "input_shape": [1, 8, 8], "num_classes": 10, "hidden": [16]}
    )
    ckpt = save_model(
        wrong,
        tmp_path / "wrong.safetensors",
        {"name": "mlp", "input_shape": [1, 8, 8], "num_classes": 10, "hidden": [16]},
    )
    scenario = {**TINY, "checkpoint": str(ckpt)}
    _bad(tmp_path, capsys, [str(write(tmp_path, scenario))], "holds model")


def test_train_then_bench_from_checkpoint(tmp_path, capsys):
    scenario = write(tmp_path, TINY)
    ckpt = tmp_path / "orig.safetensors"
    assert main(["train", str(scenario), "--out", str(ckpt)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    s2 = write(
        tmp_path,
        {**TINY, "checkpoint": "orig.safetensors", "seeds": [0], "methods": TINY["methods"][:1]},
        "s2.yaml",
    )
    out = tmp_path / "out2"
    assert main(["bench", str(s2), "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())
    orig = [r for r in res["rows"] if r["method"] == "original"][0]
    assert orig["metrics"]["steps"] == 0  # loaded, not trained


def test_bench_dispatches_certified_scenarios(tmp_path, capsys):
    scenario = {
        "name": "cert",
        "kind": "certified",
        "data": {"name": "digits"},
        "model": {"lam": 0.2, "sigma": 0.5},
        "fractions": [0.02],
        "seeds": [0],
        "repeats": 1,
    }
    out = tmp_path / "good"
    assert main(["bench", str(write(tmp_path, scenario)), "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())
    labels = {r["method"] for r in res["rows"]}
    assert labels == {"original@2%", "retrain@2%", "oracle_noise@2%", "newton_removal@2%"}
    md = (out / "report.md").read_text()
    assert "newton_removal@2%" in md and "Avg.Gap is the mean" not in md
    _bad(tmp_path, capsys, [str(write(tmp_path, {**scenario, "fractions": [2]}))], "fractions")
    bad_kind = {**TINY, "kind": "quantum"}
    _bad(tmp_path, capsys, [str(write(tmp_path, bad_kind))], "unknown kind 'quantum'")


def test_usage_errors_are_one_line_from_the_installed_command(tmp_path):
    exe = Path(sys.executable).parent / "unlearn"
    if not exe.exists():
        exe = shutil.which("unlearn")
    scenario = write(tmp_path, TINY)
    for args in (
        ["train", str(scenario)],
        ["bench", "--fast"],
        ["train", str(scenario), "--out", ""],
    ):
        res = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2, res.stderr
        assert len(lines) == 1 and lines[0].startswith("unlearn: error:"), res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]
