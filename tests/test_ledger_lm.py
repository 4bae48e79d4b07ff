"""The deletion ledger on a causal LM: a person's facts, sample ids, retrains, refusals."""

import json

import pytest
import yaml

from unlearn.cli import main
from unlearn.errors import LedgerError
from unlearn.ledger import Ledger, check_certificate
from unlearn.ledger.handlers import file_sha256
from unlearn.ledger.lm import lm_setup

SCENARIO = {
    "name": "tiny-ledger",
    "kind": "llm",
    "model": {"name": "tiny", "hidden": 64, "layers": 2},
    "data": {"people": 6, "per_person": 3, "holdout_people": 3, "seed": 0},
    "forget": {"fraction": 0.4},
    "recipe": {"epochs": 60, "lr": 3e-3, "batch_size": 8, "lora_rank": 0},
    "eval": {"max_new_tokens": 48},
    "seeds": [0],
    "cache_dir": None,
    "methods": [{"name": "graddiff", "steps": 2}],
}
GD = {"steps": 8, "lr": 2e-3}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("lm")
    scen = d / "tiny-ledger.yaml"
    scen.write_text(yaml.safe_dump(SCENARIO))
    assert main(["train", str(scen), "--out", str(d / "lm.safetensors")]) == 0
    return scen, d / "lm.safetensors"


def fresh(tmp_path, trained, **kw) -> Ledger:
    scen, model = trained
    mine = tmp_path / "lm.safetensors"
    mine.write_bytes(model.read_bytes())
    led = Ledger.create(tmp_path / "L", sign=True)
    led.register_model("lm", mine, scen, **kw)
    return led


def test_a_persons_facts_are_forgotten_certified_and_verified(tmp_path, trained):
    led = fresh(tmp_path, trained)
    state = led.model_state("lm")
    assert state["family"] == "causal_lm"  # from the scenario's kind
    # the fine-tune knows its people: the utility figure starts high
    assert state["metrics"]["test_acc"] >= 60
    setup = lm_setup(trained[0])
    person = int(setup.train.groups["person"][0])
    theirs = [i for i, p in enumerate(setup.train.groups["person"]) if p == person]
    handler = led._handler(state)
    before = handler.metrics(handler.load(tmp_path / "lm.safetensors"), theirs, set(theirs))
    assert before["forget_acc"] >= 60 and before["mia_auc"] > 70  # they are members now
    rid = led.add("carol", "lm", {"group": {"by": "person", "ids": [person]}}, "graddiff", GD)
    rid2 = led.add("dave", "lm", {"samples": [17]})  # auto: graddiff with its defaults
    assert led.process() == [rid, rid2]
    bodies = [json.loads(e["body"]) for e in led.entries() if e["kind"] == "request_processed"]
    assert bodies[0]["samples"] == theirs and bodies[1]["samples"] == [17]
    assert bodies[1]["request"]["method"] == "graddiff"
    m = bodies[0]["metrics"]
    assert m["forget_acc"] < before["forget_acc"] and m["mia_auc"] < before["mia_auc"]
    assert set(m) >= {"test_acc", "forget_acc", "mia_auc", "removed_mia_auc"}
    assert sorted(led.model_state("lm")["removed"]) == sorted(theirs + [17])
    assert led.verify().ok
    certs = tmp_path / "L" / "certificates"
    assert check_certificate(certs / f"{rid}.json", public_key=led.public_key()) == []
    # the last certificate matches the model file as it is now, the first one does not
    assert check_certificate(certs / f"{rid2}.json", model=tmp_path / "lm.safetensors") == []
    assert check_certificate(certs / f"{rid}.json", model=tmp_path / "lm.safetensors")
    assert bodies[1]["hash_after"] == file_sha256(tmp_path / "lm.safetensors")
    handler.load(tmp_path / "lm.safetensors")  # the new file loads as this model


def test_a_retrain_fine_tunes_the_base_on_what_remains(tmp_path, trained):
    # a threshold no unlearned model meets asks for a retrain after the request
    led = fresh(tmp_path, trained, policy={"retrain_if": {"thresholds_missed": True}})
    too_high = {"test_acc": {"at_least": 101}}
    rid = led.add("erin", "lm", {"samples": [0, 1]}, "graddiff", GD, too_high)
    done = led.process()
    assert done[0] == rid and len(done) == 2
    entries = [e for e in led.entries() if e["kind"] == "retrain"]
    assert len(entries) == 1
    body = json.loads(entries[0]["body"])
    assert body["run"]["method"] == "retrain" and body["run"]["from_cache"] is False
    state = led.model_state("lm")
    assert state["retrains"] == 1 and state["removed"] == [0, 1]
    # retrained on the 16 pairs left: it answers them as the original did its 18
    assert body["metrics"]["test_acc"] >= 60
    # verify reports the request that missed its threshold, and nothing else
    problems = led.verify().problems
    assert problems and all("below its threshold 101" in p for p in problems)


def test_bad_requests_and_models_are_refused_and_nothing_written(tmp_path, trained):
    led = fresh(tmp_path, trained)
    n = len(led.entries())
    people = sorted(set(lm_setup(trained[0]).train.groups["person"].tolist()))
    cases = [
        ({"class": [1]}, "no classes"),
        ({"group": {"by": "client", "ids": [people[0]]}}, "grouped by person only"),
        ({"group": {"by": "person", "ids": [10_000]}}, "not one of the model's 6"),
        ({"samples": [18]}, "outside the training set"),
    ]
    for sel, msg in cases:
        with pytest.raises(LedgerError, match=msg):
            led.add("x", "lm", sel, "graddiff", GD)
    assert len(led.entries()) == n
    # another scenario's model (other width) is not this scenario's checkpoint
    other = dict(SCENARIO, model={"name": "tiny", "hidden": 32, "layers": 2})
    scen2 = tmp_path / "other.yaml"
    scen2.write_text(yaml.safe_dump(other))
    with pytest.raises(LedgerError, match="not a checkpoint of this scenario's model"):
        led.register_model("wrong", trained[1], scen2)
    # real facts fine-tune nothing: no training data to remove
    real = tmp_path / "real.yaml"
    real.write_text(yaml.safe_dump(dict(SCENARIO, benchmark="real_facts")))
    with pytest.raises(LedgerError, match="fictitious-facts"):
        led.register_model("real", trained[1], real)
    assert len(led.entries()) == n


def test_the_command_line_serves_a_language_model(tmp_path, trained, capsys):
    scen, model = trained
    mine = tmp_path / "lm.safetensors"
    mine.write_bytes(model.read_bytes())
    led = str(tmp_path / "L")
    assert main(["request", "init", led, "--model", str(mine), "--scenario", str(scen)]) == 0
    assert "answer accuracy on retained pairs" in capsys.readouterr().out
    person = int(lm_setup(scen).train.groups["person"][-1])
    cfg = json.dumps(GD)
    add = ["request", "add", led, "--subject", "f", "--model", "lm", "--group", f"person:{person}"]
    assert main(add + ["--method", "graddiff", "--config", cfg]) == 0
    assert main(["request", "add", led, "--subject", "g", "--model", "lm", "--class", "2"]) == 2
    assert "no classes" in capsys.readouterr().err
    assert main(["request", "process", led]) == 0
    assert main(["request", "verify", led]) == 0
    with Ledger.open(tmp_path / "L") as opened:
        assert len(opened.model_state("lm")["removed"]) == 3  # the person's 3 pairs
