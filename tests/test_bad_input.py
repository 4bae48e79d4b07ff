"""Bad input to the command line: one ``unlearn: error:`` line, exit code 2, found before
anything trains, and every file left as it was.

(a) a table of hand-written bad scenarios, files and calls, each run in-process through
``unlearn.cli.main`` with training forbidden; (b) a property-based test that runs mutated
scenario files through ``unlearn bench`` (see ``test_mutated_scenarios``); (c) the library
checks behind them (data, checkpoints) called directly.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import math
import os
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from unlearn.cli import main
from unlearn.data import ArrayData, as_array_data
from unlearn.errors import UnlearnError
from unlearn.io import load_model, read_checkpoint_spec, save_model
from unlearn.models import build_model

#: A valid scenario that runs fully in well under a second (plots excluded): scikit-learn
#: digits, an MLP with 8 hidden units, one epoch, one seed, one cheap method.
BASE = {
    "name": "tiny",
    "data": {"name": "digits"},
    "model": {"name": "mlp", "hidden": [8]},
    "train": {
        "epochs": 1,
        "batch_size": 256,
        "lr": 0.01,
        "optimizer": "adam",
        "schedule": "constant",
    },
    "forget": {"kind": "random", "fraction": 0.1},
    "methods": [{"name": "gradient_ascent", "config": {"epochs": 1, "lr": 0.001}}],
    "seeds": [0],
}
SPEC = {"name": "mlp", "hidden": [8], "input_shape": [1, 8, 8], "num_classes": 10}
DROP = object()
NESTED: list = []
for _ in range(80):
    NESTED = [NESTED]


def _parts(path: str) -> list:
    parts: list = []
    for part in path.split("."):
        name, *idx = part.replace("]", "").split("[")
        parts += ([name] if name else []) + [int(i) for i in idx]
    return parts


def _get(tree, path: str):
    """The value at ``path``; KeyError, IndexError or TypeError where there is none."""
    for p in _parts(path):
        tree = tree[p]
    return tree


def _set(tree: dict, path: str, value) -> dict:
    """A deep copy of ``tree`` with ``path`` ("a.b[0].c") set to ``value`` (DROP: removed)."""
    tree = copy.deepcopy(tree)
    parts = _parts(path)
    node = tree
    for p in parts[:-1]:
        node = node[p]
    if value is DROP:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return tree


def _write(tmp: Path, content, name: str = "s.yaml") -> Path:
    p = tmp / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    elif isinstance(content, str):
        p.write_text(content, encoding="utf-8")
    else:
        p.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
    return p


def _bench(path: Path, tmp: Path, *extra: str) -> list[str]:
    return ["bench", str(path), "--out", str(tmp / "out"), "--quiet", *extra]


def _checkpoint(tmp: Path, name: str = "ckpt.safetensors", spec: dict | None = SPEC) -> Path:
    return save_model(build_model(SPEC, seed=0), tmp / name, spec)


def _raw_checkpoint(tmp: Path, state: dict, spec_text: str | None) -> Path:
    meta = {"format": "pt"}
    if spec_text is not None:
        meta["unlearn_spec"] = spec_text
    path = tmp / "ckpt.safetensors"
    save_file(state, str(path), metadata=meta)
    return path


def _with_checkpoint(tmp: Path, ckpt: Path) -> list[str]:
    return _bench(_write(tmp, {**BASE, "checkpoint": ckpt.name}), tmp)


def _state() -> dict:
    return {k: v.clone() for k, v in build_model(SPEC, seed=0).state_dict().items()}


# -- the cases: (id, build(tmp) -> argv, what the message must say) --------------------------

# scenario mutations: (id, path, value, match)
MUTATIONS = [
    # top level
    ("unknown-key", "methodz", [], "unknown key"),
    ("kind-unknown", "kind", "quantum", "unknown kind 'quantum'"),
    ("kind-null", "kind", None, "unknown kind None"),
    ("no-data", "data", DROP, "missing key 'data'"),
    ("no-methods", "methods", DROP, "missing key 'methods'"),
    ("data-list", "data", ["digits"], "'data' must be a mapping"),
    ("name-int", "name", 5, "'name' must be a string"),
    ("name-empty", "name", "  ", "'name' must not be empty"),
    ("description-list", "description", ["a"], "'description' must be a string"),
    ("nan-anywhere", "train.lr", math.nan, "must be a finite number"),
    ("inf-method-lr", "methods[0].config.lr", math.inf, "must be a finite number"),
    ("deeply-nested", "description", "NESTED", "nested more than"),
    # seeds
    ("seed-negative", "seeds", [-1], "'seeds'[0] must be an integer in [0,"),
    ("seed-bool", "seeds", [True], "'seeds'[0] must be an integer"),
    ("seed-float", "seeds", [1.5], "'seeds'[0] must be an integer"),
    ("seed-string", "seeds", "zero", "'seeds' must be a non-empty list"),
    ("seeds-empty", "seeds", [], "'seeds' must be a non-empty list"),
    ("seeds-duplicate", "seeds", [1, 1], "duplicates"),
    ("seed-huge", "seeds", [2**40], "must be an integer in [0,"),
    # noise_seed_offset
    ("offset-zero", "noise_seed_offset", 0, "non-zero integer"),
    ("offset-string", "noise_seed_offset", "1000", "non-zero integer"),
    ("offset-bool", "noise_seed_offset", True, "non-zero integer"),
    ("offset-negative-seed", "noise_seed_offset", -5, "is outside [0,"),
    ("offset-collides", "seeds", [0, 1000], "is also one of the 'seeds'"),
    # data
    ("data-unknown-name", "data.name", "imagenet", "unknown data set 'imagenet'"),
    ("data-name-int", "data.name", 3, "unknown data set 3"),
    ("data-unknown-option", "data.subset", 10, "unknown option(s) ['subset']"),
    ("data-fraction-string", "data.test_fraction", "0.2", "'test_fraction' must be a number"),
    ("data-fraction-range", "data.test_fraction", 1.5, "strictly between 0 and 1"),
    ("data-fraction-tiny", "data.test_fraction", 0.001, "cannot split data set"),
    ("data-split-seed-neg", "data.split_seed", -1, "'split_seed' must lie in"),
    ("data-format-unknown", "data", {"format": "parquet", "path": "x"}, "unknown data format"),
    ("data-format-no-path", "data", {"format": "cifar10"}, "needs a 'path'"),
    ("data-format-missing", "data", {"format": "cifar10", "path": "nope"}, "does not exist"),
    ("data-name-and-format", "data.format", "cifar10", "either 'name' or 'format'"),
    ("mnist1d-too-small", "data", {"name": "mnist1d", "num_train": 5}, "'num_train' must lie"),
    ("mnist1d-huge", "data", {"name": "mnist1d", "num_train": 10**12}, "'num_train' must lie"),
    # model
    ("model-unknown", "model.name", "vit", "unknown model 'vit'"),
    ("model-no-name", "model.name", DROP, "'model' needs a 'name'"),
    ("model-unknown-option", "model.depth", 3, "unknown option(s) ['depth']"),
    ("model-hidden-string", "model.hidden", "abc", "must be a list of positive integers"),
    ("model-hidden-negative", "model.hidden", [-1], "'hidden'[0] must lie in [1,"),
    ("model-hidden-float", "model.hidden", [8.5], "must be a positive integer"),
    ("model-huge", "model.hidden", [2**20, 2**20], "parameters, more than"),
    ("model-width-zero", "model", {"name": "cnn", "width": 0}, "must lie in [1,"),
    ("model-shape-mismatch", "model.input_shape", [1, 4, 4], "differs from the data's"),
    ("model-classes-mismatch", "model.num_classes", 3, "differs from the data's"),
    ("cnn-on-tabular", "data", {"name": "iris"}, "the CNN takes"),  # with model: cnn below
    # train (the recipe)
    ("train-list", "train", [1], "'train' must be a mapping"),
    ("train-unknown", "train.epoch", 3, "unknown training option"),
    ("train-optimizer", "train.optimizer", "adagrad", "unknown optimizer"),
    ("train-epochs-zero", "train.epochs", 0, "epochs >= 1"),
    ("train-epochs-float", "train.epochs", 1.5, "epochs"),
    ("train-lr-string", "train.lr", "fast", "lr"),
    ("train-lr-negative", "train.lr", -0.1, "lr > 0"),
    # forget
    ("forget-fraction-range", "forget.fraction", 1.5, "strictly between 0 and 1"),
    ("forget-class-missing", "forget", {"kind": "class", "classes": [12]}, "class 12"),
    ("forget-all-classes", "forget", {"kind": "class", "classes": list(range(10))}, "whole"),
    ("forget-index-range", "forget", {"kind": "samples", "indices": [0, 99999]}, "out of range"),
    ("forget-indices-string", "forget", {"kind": "samples", "indices": "abc"}, "integers"),
    ("forget-kind-unknown", "forget.kind", "person", "forget"),
    ("forget-seed-negative", "forget.seed", -3, "'forget' seed must be an integer"),
    ("forget-seed-string", "forget.seed", "x", "'forget' seed must be an integer"),
    ("forget-feature", "forget", {"kind": "feature", "features": [0, 1]}, "feature requests"),
    ("forget-list", "forget", [0.1], "'forget' must be a mapping"),
    # methods
    ("methods-empty", "methods", [], "'methods' must be a non-empty list"),
    ("method-unknown", "methods", ["forgetify"], "unknown method 'forgetify'"),
    ("method-name-int", "methods", [{"name": 5}], "must be a non-empty string"),
    ("method-no-name", "methods", [{"config": {}}], "needs a 'name'"),
    ("method-extra-key", "methods[0].lr", 0.1, "unknown key(s) ['lr']"),
    ("method-config-list", "methods[0].config", [1], "must be a mapping"),
    ("method-unknown-option", "methods[0].config.speed", 1, "unknown option"),
    ("method-lr-fast", "methods[0].config.lr", "fast", "'lr'"),
    ("method-epochs-string", "methods[0].config.epochs", "two", "'epochs'"),
    ("method-label-reserved", "methods[0].label", "original", "reserved"),
    ("method-label-int", "methods[0].label", 3, "label must be a non-empty string"),
    ("method-duplicate", "methods", ["gradient_ascent", "gradient_ascent"], "appears twice"),
    ("method-lm-only", "methods", ["idkpo"], "idkpo"),
    ("method-class-only", "methods", ["trw"], "does not support samples requests"),
    # device
    ("device-unknown", "device", "tpu", "device"),
    ("device-missing-cuda", "device", "cuda:7", "cuda:7"),
    ("device-int", "device", 0, "'device' must be a string"),
    ("device-garbage", "device", "cuda:x", "device"),
    # attacks
    ("attacks-list", "attacks", [1], "'attacks' must be a mapping"),
    ("attacks-unknown", "attacks", {"bogus": 1}, "unknown attack option"),
    ("attacks-references-odd", "attacks", {"references": 5, "rmia": True}, "even"),
    ("attacks-references-string", "attacks", {"references": "16"}, "must be an integer"),
    (
        "attacks-two-models",
        "attacks",
        {"challenge": {"models": 2, "rows": ["gradient_ascent"]}},
        "models >= 3",
    ),  # noqa: E501
    ("attacks-row-unknown", "attacks", {"ulira": ["nope"]}, "not a row"),
    ("attacks-rmia-string", "attacks", {"rmia": "yes"}, "true or false"),
    ("attacks-workers-zero", "attacks", {"workers": 0}, "'workers' must be in [1,"),
    ("attacks-cache-int", "attacks", {"cache_dir": 5}, "'cache_dir'"),
    ("attacks-mia-nn-samples", "attacks", {"mia_nn": True}, "class requests"),
    ("attacks-nn-refs-odd", "attacks", {"mia_nn_references": 3}, "even"),
    # checkpoint (the file's own problems are in CUSTOM below)
    ("checkpoint-missing", "checkpoint", "nope.safetensors", "does not exist"),
    ("checkpoint-int", "checkpoint", 5, "'checkpoint' must be a file path"),
    ("checkpoint-empty", "checkpoint", "", "'checkpoint' must be a file path"),
    ("checkpoint-folder", "checkpoint", ".", "is not a file"),
    ("checkpoint-yaml", "checkpoint", "s.yaml", "not a safetensors checkpoint"),
]


def _mutation_case(path: str, value, match: str | None, case_id: str):
    def build(tmp: Path):
        raw = _set(BASE, path, NESTED if value == "NESTED" else value)
        if case_id == "cnn-on-tabular":
            raw["model"] = {"name": "cnn"}
        return _bench(_write(tmp, raw), tmp), match

    return build


def _file(content, match):
    return lambda tmp: (_bench(_write(tmp, content), tmp), match)


def _ckpt_case(make, match):
    return lambda tmp: (_with_checkpoint(tmp, make(tmp)), match)


def _nan_state():
    state = _state()
    state["net.1.weight"][0, 0] = float("nan")
    return state


def _inf_state():
    state = _state()
    state["net.3.bias"][2] = float("inf")
    return state


def _truncated(tmp: Path) -> Path:
    path = _checkpoint(tmp)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    return path


def _bench_out(out: str, match: str, prepare=None):
    def build(tmp: Path):
        if prepare is not None:
            prepare(tmp)
        return ["bench", str(_write(tmp, BASE)), "--out", out.format(tmp=tmp), "--quiet"], match

    return build


def _train(argv_tail, match, prepare=None):
    def build(tmp: Path):
        scenario = _write(tmp, BASE)
        if prepare is not None:
            prepare(tmp)
        tail = [a.format(tmp=tmp) for a in argv_tail]
        return ["train", str(scenario), *tail], match

    return build


def _foreign_folder(tmp: Path) -> None:
    (tmp / "mine").mkdir()
    (tmp / "mine" / "notes.txt").write_text("keep me")


CUSTOM = [
    # files that are not a scenario
    ("file-not-utf8", _file(b"name: caf\xe9\n", "not UTF-8")),
    ("file-utf16", _file("name: x\n".encode("utf-16"), "not UTF-8")),
    ("file-empty", _file("", "is empty")),
    ("file-only-comments", _file("# nothing here\n", "is empty")),
    ("file-list", _file("- a\n- b\n", "must be a mapping of keys to values, got a list")),
    ("file-scalar", _file("hello\n", "got a string")),
    ("file-bad-yaml", _file("data: [unclosed\n", "not valid YAML")),
    ("file-tabs", _file("name: x\n\tdata: 1\n", "not valid YAML")),
    ("file-nul", _file(b"name: x\x00\n", "NUL")),
    ("file-date", _file(yaml.safe_dump(BASE) + "description: 2024-01-01\n", "date")),
    ("file-set", _file(yaml.safe_dump(BASE) + "description: !!set {a: null}\n", "set")),
    ("file-binary", _file(yaml.safe_dump(BASE) + "description: !!binary aGk=\n", "bytes")),
    ("file-int-key", _file(yaml.safe_dump(BASE) + "1: 2\n", "not a string")),
    ("file-alias-loop", _file(yaml.safe_dump(BASE) + "description: &a [*a]\n", "nested")),
    (
        "file-python-tag",
        _file(yaml.safe_dump(BASE) + "description: !!python/object:os.system {}\n", "YAML"),
    ),
    ("file-missing", lambda tmp: (_bench(tmp / "missing.yaml", tmp), "does not exist")),
    ("file-is-folder", lambda tmp: (_bench(tmp, tmp), "is not a file")),
    # checkpoints
    ("ckpt-spec-broken-json", _ckpt_case(lambda t: _raw_checkpoint(t, _state(), "{bad"), "JSON")),
    ("ckpt-spec-list", _ckpt_case(lambda t: _raw_checkpoint(t, _state(), "[1, 2]"), "mapping")),
    ("ckpt-truncated", _ckpt_case(_truncated, "not a safetensors checkpoint")),
    ("ckpt-nan", _ckpt_case(lambda t: _raw_checkpoint(t, _nan_state(), None), "NaN")),
    ("ckpt-inf", _ckpt_case(lambda t: _raw_checkpoint(t, _inf_state(), None), "NaN")),
    (
        "ckpt-other-arch",
        _ckpt_case(lambda t: _checkpoint(t, spec={**SPEC, "hidden": [16]}), "holds model"),
    ),
    (
        "ckpt-dtype",
        _ckpt_case(
            lambda t: _raw_checkpoint(t, {k: v.double() for k, v in _state().items()}, None),
            "dtype",
        ),
    ),
    (
        "ckpt-missing-tensor",
        _ckpt_case(
            lambda t: _raw_checkpoint(
                t, {k: v for k, v in _state().items() if k != "net.3.bias"}, None
            ),
            "missing tensors",
        ),
    ),
    # command-line arguments
    ("cli-seeds-negative", lambda t: (_bench(_write(t, BASE), t, "--seeds", "-1"), "--seeds")),
    ("cli-seeds-letters", lambda t: (_bench(_write(t, BASE), t, "--seeds", "a,b"), "--seeds")),
    ("cli-seeds-duplicate", lambda t: (_bench(_write(t, BASE), t, "--seeds", "1,1"), "distinct")),
    (
        "cli-seeds-collide-noise",
        lambda t: (_bench(_write(t, BASE), t, "--seeds", "0,1000"), "noise_seed_offset"),
    ),
    ("llm-and-scenario", lambda t: (_bench(_write(t, BASE), t, "--llm"), "not both")),
    ("unknown-flag", lambda t: (_bench(_write(t, BASE), t, "--fast"), "unrecognized")),
    ("no-command", lambda t: ([], "required")),
    ("unknown-command", lambda t: (["forget"], "invalid choice")),
    # --out of bench
    ("bench-out-empty", _bench_out("", "--out must not be empty")),
    ("bench-out-blank", _bench_out("  ", "--out must not be empty")),
    ("bench-out-is-scenario", _bench_out("{tmp}/s.yaml", "is not a folder")),
    ("bench-out-holds-scenario", _bench_out("{tmp}", "would replace the input")),
    ("bench-out-foreign", _bench_out("{tmp}/mine", "not a run's results", _foreign_folder)),
    ("bench-out-under-file", _bench_out("{tmp}/s.yaml/out", "is not a folder")),
    ("bench-out-nul", _bench_out("{tmp}/o\x00ut", "NUL")),
    ("bench-out-too-long", _bench_out("{tmp}/" + "x" * 5000, "cannot use --out")),
    # train
    ("train-no-out", _train([], "--out")),
    ("train-out-empty", _train(["--out", ""], "--out must not be empty")),
    ("train-out-is-scenario", _train(["--out", "{tmp}/s.yaml"], "refusing to overwrite")),
    (
        "train-out-is-scenario-force",
        _train(["--out", "{tmp}/s.yaml", "--force"], "refusing to overwrite"),
    ),
    (
        "train-out-exists",
        _train(
            ["--out", "{tmp}/old.safetensors"],
            "pass --force",
            lambda t: _checkpoint(t, "old.safetensors"),
        ),
    ),
    ("train-out-folder", _train(["--out", "{tmp}"], "is a folder")),
    ("train-out-slash", _train(["--out", "{tmp}/new/"], "not a folder")),
    ("train-out-under-file", _train(["--out", "{tmp}/s.yaml/m.safetensors"], "is not a folder")),
    ("train-seed-negative", _train(["--out", "{tmp}/m.safetensors", "--seed", "-1"], "--seed")),
    ("train-seed-text", _train(["--out", "{tmp}/m.safetensors", "--seed", "x"], "invalid int")),
]


def _train_checkpoint_input(tmp: Path):
    ckpt = _checkpoint(tmp)
    scenario = _write(tmp, {**BASE, "checkpoint": ckpt.name})
    return ["train", str(scenario), "--out", str(ckpt), "--force"], "refusing to overwrite"


def _mia_nn_neighbours(tmp: Path):
    raw = {
        **BASE,
        "forget": {"kind": "class", "classes": [3]},
        "attacks": {"mia_nn": True, "mia_nn_neighbours": 10},
    }
    return _bench(_write(tmp, raw), tmp), "mia_nn_neighbours must lie in [1, 9]"


def _unwritable_sys(tmp: Path):
    return ["bench", str(_write(tmp, BASE)), "--out", "/sys/unlearn-out", "--quiet"], "writable"


CUSTOM += [
    ("train-out-is-checkpoint-force", _train_checkpoint_input),
    ("attacks-mia-nn-neighbours", _mia_nn_neighbours),
]
if Path("/sys").is_dir() and not os.access("/sys", os.W_OK):
    CUSTOM.append(("bench-out-unwritable", _unwritable_sys))


CASES = [(cid, _mutation_case(p, v, m, cid)) for cid, p, v, m in MUTATIONS] + CUSTOM

#: Bad values the recipe and method configs refuse with range checks (they once failed
#: only after training had started).
RANGE_CHECKS = [
    (
        "range-train-momentum",
        "train",
        {**BASE["train"], "optimizer": "sgd", "momentum": -3.0},
        "momentum",
    ),
    ("range-train-weight-decay", "train.weight_decay", -5.0, "weight_decay"),
    (
        "range-scrub-temperature",
        "methods",
        [{"name": "scrub", "config": {"temperature": 0}}],
        "temperature",
    ),
    (
        "range-influence-damping",
        "methods",
        [{"name": "influence", "config": {"damping": 0, "max_norm": None}}],
        "damping",
    ),
]
PARAMS = [pytest.param(b, id=cid) for cid, b in CASES] + [
    pytest.param(_mutation_case(p, v, m, cid), id=cid) for cid, p, v, m in RANGE_CHECKS
]


def _snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with the hash of its content."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def no_training(monkeypatch):
    """Any attempt to train or run a method fails the test."""
    from unlearn.methods.base import Method
    from unlearn.tasks.classifier import ClassifierTask

    def refuse(*args, **kwargs):
        raise AssertionError("training started before the input was validated")

    monkeypatch.setattr(ClassifierTask, "fit", refuse)
    monkeypatch.setattr(Method, "run", refuse)


def test_the_training_guard_catches_a_run(tmp_path, capsys, no_training):
    # what the table relies on: a call that reaches training fails the test
    with pytest.raises(AssertionError, match="training started"):
        main(_bench(_write(tmp_path, BASE), tmp_path))


def test_there_are_enough_cases():
    assert len(CASES) >= 60
    assert len({cid for cid, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("build", PARAMS)
def test_bad_input_is_one_error_line(build, tmp_path, capsys, monkeypatch, no_training):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # anything written to the current folder shows up too
    argv, match = build(work)
    capsys.readouterr()
    before = _snapshot(work)
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("unlearn: error:"), err
    assert "Traceback" not in err and out == ""
    if match is not None:
        assert match in lines[0], lines[0]
    assert _snapshot(work) == before, "a failed call must leave every file as it was"


# -- a valid call still works, and --check / --force do what they say ------------------------


def test_check_flag_validates_without_training(tmp_path, capsys, no_training):
    out = tmp_path / "out"
    assert main(_bench(_write(tmp_path, BASE), tmp_path, "--check")) == 0
    assert "nothing trained or written" in capsys.readouterr().out
    assert not out.exists()


def test_train_force_overwrites_only_outputs(tmp_path, capsys):
    scenario = _write(tmp_path, BASE)
    ckpt = tmp_path / "m.safetensors"
    assert main(["train", str(scenario), "--out", str(ckpt)]) == 0
    first = ckpt.read_bytes()
    assert main(["train", str(scenario), "--out", str(ckpt)]) == 2
    assert ckpt.read_bytes() == first
    assert main(["train", str(scenario), "--out", str(ckpt), "--force", "--seed", "1"]) == 0
    assert ckpt.read_bytes() != first
    nested = tmp_path / "new" / "folder" / "m.safetensors"
    assert main(["train", str(scenario), "--out", str(nested)]) == 0 and nested.is_file()
    capsys.readouterr()


def test_bench_reuses_its_own_results_folder(tmp_path, capsys):
    scenario = _write(tmp_path, BASE)
    out = tmp_path / "out"
    assert main(["bench", str(scenario), "--out", str(out), "--quiet"]) == 0
    assert main(["bench", str(scenario), "--out", str(out), "--quiet", "--seeds", "1"]) == 0
    assert json.loads((out / "results.json").read_text())["seeds"] == [1]
    capsys.readouterr()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_unwritable_out_folder(tmp_path, capsys, no_training):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code = main(["bench", str(_write(tmp_path, BASE)), "--out", str(locked / "o"), "--quiet"])
    finally:
        locked.chmod(0o700)
    assert code == 2 and "not writable" in capsys.readouterr().err
    assert list(locked.iterdir()) == []


# -- (c) the library checks behind the command line -----------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_array_data_refuses_non_finite_inputs(bad):
    x = torch.zeros(4, 3)
    x[1, 2] = bad
    with pytest.raises(UnlearnError, match="NaN or infinite"):
        ArrayData(x, torch.tensor([0, 1, 0, 1]), ("a", "b"))
    with pytest.raises(UnlearnError, match="NaN or infinite"):
        as_array_data((x.numpy(), [0, 1, 0, 1]))


@pytest.mark.parametrize(
    "data, match",
    [
        (([[1.0, 2.0], [3.0]], [0, 1]), "cannot be read as an array"),
        ((np.array([["a", "b"]]), [0]), "real numbers"),
        ((np.ones((2, 2)) + 1j, [0, 1]), "real numbers"),
        ((np.ones(3), [0, 1, 0]), "at least one feature dimension"),
        ((np.ones((3, 2)), [0, 1]), "3 inputs but 2 labels"),
        ((np.ones((2, 2)), [0.5, 1.0]), "must be integers"),
        ((np.ones((2, 2)), [0.0, math.nan]), "NaN"),
        ((np.ones((2, 2)), [[0], [1]]), "one integer per sample"),
        ((np.ones((2, 2)), [-1, 0]), "non-negative"),
        ((np.ones((0, 2)), []), "empty"),
        ("not data", "cannot use str"),
    ],
)
def test_as_array_data_refuses_bad_shapes_and_types(data, match):
    with pytest.raises(UnlearnError, match=match):
        as_array_data(data)


def test_as_array_data_refuses_a_ragged_dataset():
    items = [(torch.zeros(3), 0), (torch.zeros(4), 1)]

    class Ragged(torch.utils.data.Dataset):
        def __len__(self):
            return len(items)

        def __getitem__(self, i):
            return items[i]

    with pytest.raises(UnlearnError, match="different shapes"):
        as_array_data(Ragged())


@pytest.mark.parametrize(
    "state, spec_text, match",
    [
        (_state, "{bad", "not valid JSON"),
        (_state, '"text"', "must be a mapping"),
        (_nan_state, None, "NaN"),
        (_inf_state, None, "NaN"),
    ],
)
def test_load_model_refuses_and_leaves_the_model_alone(tmp_path, state, spec_text, match):
    path = _raw_checkpoint(tmp_path, state(), spec_text)
    model = build_model(SPEC, seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UnlearnError, match=match) as err:
        load_model(model, path, SPEC)
    assert str(path) in str(err.value)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    if spec_text is not None:
        with pytest.raises(UnlearnError, match=match):
            read_checkpoint_spec(path)


def test_truncated_checkpoint_names_the_file(tmp_path):
    path = _truncated(tmp_path)
    with pytest.raises(UnlearnError, match="ckpt.safetensors"):
        load_model(build_model(SPEC), path, SPEC)


def test_model_spec_check_draws_no_random_numbers():
    # the check builds the model on the meta device first: the weights a seed gives must not
    # move, and building draws exactly what the layers themselves draw
    torch.manual_seed(3)
    build_model(SPEC)
    after_build = torch.random.get_rng_state()
    torch.manual_seed(3)
    torch.nn.Linear(64, 8)
    torch.nn.Linear(8, 10)
    assert torch.equal(torch.random.get_rng_state(), after_build)


# -- (b) mutated scenario files through `unlearn bench` --------------------------------------


#: Methods run fully by the property test; the others (AMUN's adversarial search, LUNE's
#: LoRA adapters) take seconds each, so examples that name them are only validated.
CHEAP_METHODS = {
    "gradient_ascent",
    "neggrad_plus",
    "finetune",
    "l1_sparse",
    "random_labels",
    "salun",
    "scrub",
    "fisher",
    "influence",
    "graddiff",
    "kl",
    "npo",
    "simnpo",
    "retrain",
    "trw",
}
METHOD_NAMES = sorted(CHEAP_METHODS | {"amun", "lune", "idkpo", "certified_newton", "llm_ga"})
#: Options whose large values make a valid run expensive (epochs, steps, model and data
#: sizes, reference models, seeds): the strategy draws only small or invalid values for
#: them, and huge ones only where a range check refuses them (``RANGE_CHECKED``).
COSTLY = {
    "epochs",
    "max_epochs",
    "retain_batches",
    "samples",
    "pgd_steps",
    "max_doublings",
    "search_batch",
    "spectral_iters",
    "references",
    "models",
    "mia_nn_references",
    "workers",
    "targets",
    "hidden",
    "width",
    "num_train",
    "num_test",
    "batch_size",
    "retain_batch",
}
RANGE_CHECKED = {"hidden", "width", "num_train", "num_test"}

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "nan", "inf", "-1", "1e3", "fast", "cpu", "cuda", "digits", "mlp"]),
    st.text(max_size=6),
)
_garbage = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
_small = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([0.5, 1.5, -0.5, math.nan, math.inf, -math.inf, True, False, None]),
    st.sampled_from(["1", "two", [], [1], {}, {"a": 1}]),
)
_costly = {
    **{k: _small for k in COSTLY},
    "batch_size": st.one_of(_small, st.integers(16, 10**9)),  # large batches are cheap
    "retain_batch": st.one_of(_small, st.integers(16, 10**9)),
    "hidden": st.one_of(
        _small,
        st.lists(st.one_of(st.integers(-2, 16), st.sampled_from([2**25, 10**30, "8"])), max_size=3),
    ),
    "width": st.one_of(_small, st.sampled_from([2, 4, 2**25, 10**30])),
    "num_train": st.one_of(_small, st.integers(5, 60), st.sampled_from([10**7, 10**30])),
    "num_test": st.one_of(_small, st.integers(5, 60), st.sampled_from([10**7, 10**30])),
}


def _value(key) -> st.SearchStrategy:
    return _costly.get(key, _garbage) if isinstance(key, str) else _garbage


def _options(keys: list[str]) -> st.SearchStrategy:
    """A mapping of up to three of ``keys``, each with a value drawn for that key."""
    pair = st.sampled_from(keys).flatmap(lambda k: st.tuples(st.just(k), _value(k)))
    return st.lists(pair, max_size=3).map(dict)


_fields = {
    "seeds": st.one_of(
        st.lists(st.integers(-3, 3), max_size=3),
        st.lists(st.sampled_from([2**31, 2**40, 1000, True, 1.0, "0"]), min_size=1, max_size=2),
        st.integers(-2, 2),
    ),
    "noise_seed_offset": st.one_of(st.integers(-5, 5), st.sampled_from([1000, -1000, 2**40])),
    "data": st.one_of(
        st.fixed_dictionaries({"name": st.sampled_from(["digits", "iris", "wine", "mnist", 7])}),
        # MNIST-1D only small: generating its default 5,000 sequences takes seconds
        st.fixed_dictionaries(
            {"name": st.just("mnist1d"), "num_train": _costly["num_train"]},
            optional={"num_test": _costly["num_test"], "data_seed": _small},
        ).map(lambda d: {"num_test": 20, **d}),
        st.fixed_dictionaries(
            {"name": st.just("digits")},
            optional={
                "test_fraction": st.one_of(_small, st.floats(0, 1)),
                "split_seed": _small,
                "bogus": _garbage,
            },
        ),
        st.fixed_dictionaries(
            {"format": st.sampled_from(["cifar10", "mnist-idx", "image-folder", "csv", 3])},
            optional={"path": st.sampled_from(["", "nope", ".", "s.yaml", "/dev/null"])},
        ),
    ),
    "model": st.one_of(
        # ResNet-18 stays out: one epoch of it on digits takes seconds
        st.fixed_dictionaries(
            {"name": st.sampled_from(["mlp", "cnn", "vit", 3, None])},
            optional={
                "hidden": _costly["hidden"],
                "width": _costly["width"],
                "input_shape": st.sampled_from([[1, 8, 8], [64], [1, 8], [], "x"]),
                "num_classes": st.sampled_from([10, 2, 0, -1, "10"]),
                "dropout": _garbage,
            },
        ),
    ),
    "forget": st.one_of(
        st.fixed_dictionaries(
            {"kind": st.sampled_from(["random", "samples"])},
            optional={
                "fraction": st.one_of(st.floats(-0.5, 1.5), _small),
                "indices": st.one_of(st.lists(st.integers(-2, 2000), max_size=4), _garbage),
                "seed": _small,
            },
        ),
        st.fixed_dictionaries(
            {"kind": st.sampled_from(["class", "feature", "group", "person", 1])},
            optional={
                "classes": st.one_of(st.lists(st.integers(-1, 11), max_size=3), _garbage),
                "features": st.lists(st.integers(-1, 70), max_size=3),
                "groups": _garbage,
            },
        ),
    ),
    "methods": st.lists(
        st.one_of(
            st.sampled_from(METHOD_NAMES + ["forgetify", ""]),
            st.fixed_dictionaries(
                {"name": st.sampled_from(METHOD_NAMES + [5])},
                optional={
                    "label": st.sampled_from(["a", "original", "retrain", "", 3]),
                    "config": st.one_of(
                        _options(
                            [
                                "epochs",
                                "lr",
                                "batch_size",
                                "alpha",
                                "optimizer",
                                "schedule",
                                "momentum",
                                "samples",
                                "mask_ratio",
                                "max_norm",
                                "retain_batch",
                                "temperature",
                                "speed",
                            ]
                        ),
                        _garbage,
                    ),
                    "extra": _garbage,
                },
            ),
        ),
        max_size=3,
    ),
    "device": st.sampled_from(["cpu", "cuda", "cuda:3", "tpu", "", "cpu:0", "meta", 0, None]),
    "checkpoint": st.sampled_from(["", "nope.safetensors", "s.yaml", ".", 5, None]),
    "attacks": st.one_of(
        _garbage,
        st.fixed_dictionaries(
            {},
            optional={
                "references": _costly["references"],
                "rmia": _garbage,
                "ulira": st.one_of(st.booleans(), st.lists(st.sampled_from(["original", "x"]))),
                "mia_nn": st.booleans(),
                "mia_nn_neighbours": _small,
                "challenge": st.one_of(
                    _garbage,
                    st.fixed_dictionaries(
                        {"models": _costly["models"]},
                        optional={"rows": st.lists(st.sampled_from(["retrain", "x"]))},
                    ),
                ),
                "workers": _costly["workers"],
                "cache_dir": _garbage,
            },
        ),
    ),
    "train": _options(
        ["epochs", "batch_size", "lr", "optimizer", "schedule", "weight_decay", "momentum"]
        + ["spectral_clip", "spectral_iters", "epoch"]
    ).map(lambda d: {**BASE["train"], **d}),
    "kind": st.sampled_from(["classifier", "llm", "certified", "quantum", None, 3]),
    "targets": _garbage,
    "description": _garbage,
    "name": _garbage,
}

#: Paths inside BASE a generic mutation may drop or overwrite.
_PATHS = [
    "data.name",
    "model.name",
    "model.hidden",
    "model.hidden[0]",
    "train.epochs",
    "train.batch_size",
    "train.lr",
    "train.optimizer",
    "forget.kind",
    "forget.fraction",
    "methods[0]",
    "methods[0].name",
    "methods[0].config",
    "methods[0].config.epochs",
    "methods[0].config.lr",
    "seeds[0]",
    *BASE,
]


def _last_key(path: str):
    return path.rsplit(".", 1)[-1].split("[")[0]


@st.composite
def _mutation(draw, raw: dict) -> dict:
    op = draw(st.sampled_from(["field", "field", "field", "drop", "set", "unknown", "wrap"]))
    if op == "field":
        key = draw(st.sampled_from(sorted(_fields)))
        return {**raw, key: draw(_fields[key])}
    path = draw(st.sampled_from(_PATHS))
    try:
        node = _get(raw, path)
    except (KeyError, IndexError, TypeError):
        return raw  # an earlier mutation removed or replaced what this path points into
    if op == "drop":
        return _set(raw, path, DROP)
    if op == "set":
        return _set(raw, path, draw(_value(_last_key(path))))
    if op == "wrap":  # nested garbage around the value that is there
        return _set(raw, path, draw(st.sampled_from([[node], {"value": node}, [[node, node]]])))
    name = draw(st.text(st.characters(codec="utf-8"), min_size=1, max_size=6))
    return {**raw, name: draw(_garbage)}


#: The property test's starting point: BASE on iris (150 samples), so that validating an
#: example (which loads its data) takes milliseconds.
TINY = {**BASE, "data": {"name": "iris"}}


@st.composite
def mutated_scenarios(draw) -> dict:
    raw = copy.deepcopy(TINY)
    for _ in range(draw(st.integers(1, 3))):
        raw = draw(_mutation(raw))
    return raw


def _full_run_is_cheap(raw: dict) -> bool:
    """Whether a valid ``raw`` runs in about a second: attacks train reference models and
    some methods take seconds, so those examples are validated (``--check``) only."""
    attacks = raw.get("attacks")
    if isinstance(attacks, dict) and any(
        attacks.get(k) for k in ("ulira", "rmia", "mia_nn", "challenge")
    ):
        return False
    methods = raw.get("methods")
    if not isinstance(methods, list):  # refused by --check (e.g. ``methods: true``)
        return False
    names = [m.get("name") if isinstance(m, dict) else m for m in methods]
    return all(isinstance(n, str) and n in CHEAP_METHODS for n in names)


#: Every example runs ``unlearn bench ... --check`` (the same validation as the real
#: command, stopping before training). Cheap examples then also run the real command: one in
#: FULL_RUN_EVERY of all, picked by a hash of the file, and one in FULL_RUN_VALID of those
#: --check found valid; the real command must then end as --check said. (A full run takes
#: about a second, most of it drawing the report's plots.)
FULL_RUN_EVERY = 12
FULL_RUN_VALID = 6
EXAMPLES = 1000
OUTPUTS = {"results.json", "report.md", "report.html", "forget_vs_test.png", "gap_and_time.png"}


def _call(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _strict_json(text: str):
    def refuse(token):
        raise ValueError(f"results.json holds {token}")

    return json.loads(text, parse_constant=refuse)


def _one_error_line(code: int, stderr: str) -> None:
    lines = stderr.strip().splitlines()
    assert code == 2, (code, stderr)
    assert len(lines) == 1 and lines[0].startswith("unlearn: error:"), stderr


def test_mutated_scenarios(tmp_path_factory):
    root = tmp_path_factory.mktemp("mutated")
    stats: Counter = Counter()
    started = time.perf_counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(raw=mutated_scenarios())
    def run(raw):
        stats["examples"] += 1
        work = root / f"e{stats['examples']}"
        work.mkdir()
        text = yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)
        path = _write(work, text)
        out = work / "out"
        argv = ["bench", str(path), "--out", str(out), "--quiet"]
        code, stdout, stderr = _call([*argv, "--check"])
        assert code in (0, 2), (code, stderr)
        if code == 2:
            stats["refused"] += 1
            _one_error_line(code, stderr)
        else:
            stats["valid"] += 1
            assert stderr == "" and "nothing trained or written" in stdout
        assert not out.exists()
        pick = zlib.crc32(text.encode())
        if _full_run_is_cheap(raw) and (
            pick % FULL_RUN_EVERY == 0 or (code == 0 and pick % FULL_RUN_VALID == 0)
        ):
            full, _, full_err = _call(argv)
            assert full == code, f"--check said {code}, the run ended in {full}: {full_err}"
            if full == 2:
                stats["refused by the real command"] += 1
                _one_error_line(full, full_err)
                assert not out.exists(), "a failed run wrote its output folder"
            else:
                stats["full runs"] += 1
                assert full_err == "", full_err
                assert {p.name for p in out.iterdir()} == OUTPUTS
                results = _strict_json((out / "results.json").read_text())
                assert results["rows"] and results["summary"]
        assert path.read_text(encoding="utf-8") == text, "the scenario file was changed"
        assert sorted(p.name for p in work.iterdir()) == sorted(
            ["s.yaml"] + (["out"] if out.exists() else [])
        ), "a run left files beside its output folder"

    run()
    seconds = time.perf_counter() - started
    print(f"\nmutated scenarios: {dict(stats)} in {seconds:.1f} s")
    assert stats["examples"] >= EXAMPLES
    # the test must see both outcomes, and real runs of both
    assert stats["refused"] >= 300 and stats["valid"] >= 50
    assert stats["full runs"] >= 10 and stats["refused by the real command"] >= 10
