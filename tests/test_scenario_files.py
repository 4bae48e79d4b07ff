"""Every committed scenario file (benchmarks/ and benchmarks/tuning/) parses with its runner."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent / "benchmarks"
FILES = sorted(ROOT.rglob("*.yaml"))


def test_there_are_scenario_files():
    assert len(FILES) >= 10
    assert any(p.parent.name == "tuning" for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_scenario_file_parses(path):
    from unlearn.bench.certified import _check
    from unlearn.bench.llm import parse_llm
    from unlearn.bench.scenario import parse_scenario

    raw = yaml.safe_load(path.read_text())
    assert raw["name"] == path.stem, "a scenario's name is its file name"
    kind = raw.get("kind", "classifier")
    if kind == "llm":
        sc = parse_llm(raw, str(path))
        assert sc.model["name"] == "smollm2" and sc.methods
    elif kind == "certified":
        assert _check(raw)["fractions"]
    else:
        assert parse_scenario(raw, str(path), base_dir=path.parent).methods
