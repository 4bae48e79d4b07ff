"""Every committed scenario file (benchmarks/ and benchmarks/tuning/) parses with its runner,
and every scenario's `targets:` block follows the schema of unlearn.bench.targets."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent / "benchmarks"
FILES = sorted(p for p in ROOT.rglob("*.yaml") if "out" not in p.relative_to(ROOT).parts)


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
    elif kind == "llm_ablation":
        from unlearn.bench.ablation import parse_ablation

        sc = parse_ablation(raw, str(path))
        assert sc.model["name"] == "smollm2" and sc.methods
    elif kind == "federated":
        from unlearn.bench.federated import FederatedFamily

        assert FederatedFamily().parse(raw, str(path), path.parent).methods
    elif kind == "diffusion":
        from unlearn.bench.diffusion import parse_diffusion

        sc = parse_diffusion(raw, str(path))
        assert sc.methods and sc.seeds
    elif kind == "generator":
        from unlearn.bench.generator import parse_generator

        sc = parse_generator(raw, str(path))
        assert sc.methods and sc.counts
    elif kind == "vlm":
        from unlearn.bench.vlm import parse_vlm

        sc = parse_vlm(raw, str(path))
        assert sc.methods and sc.n_forget
    else:
        assert parse_scenario(raw, str(path), base_dir=path.parent).methods


# ---------------------------------------------------------------- the targets: blocks

PACKAGED = sorted((ROOT.parent / "src" / "unlearn" / "bench" / "scenarios").glob("*.yaml"))
SCENARIOS = [p for p in FILES if p.parent.name != "tuning"] + PACKAGED
REFERENCES = ("original", "retrain", "oracle_noise")


def _labels(raw: dict) -> set[str]:
    """The row labels a run of the scenario ``raw`` produces (read from the file itself)."""
    if raw.get("kind") == "certified":
        return {
            f"{m}@{100 * f:g}%" for f in raw["fractions"] for m in (*REFERENCES, "newton_removal")
        }
    base = {*REFERENCES, *(m.get("label", m["name"]) for m in raw["methods"])}
    if raw.get("kind") == "llm_ablation":  # one row per method and mode, no oracle
        labels = ["original", *(m.get("label", m["name"]) for m in raw["methods"])]
        return {f"{b}@{mode}" for b in labels for mode in raw.get("modes", ["target", "minimal"])}
    if raw.get("kind") == "generator":  # one part per count of forgotten identities
        return {f"{b}@n{c}" for b in base for c in raw["forget"]["counts"]}
    if "grow" in raw:  # one part per size: LABEL@nNfF
        tags = [f"@n{g['n_train']}f{g['n_forget']}" for g in raw["grow"]]
        return {f"{b}{t}" for b in base for t in tags}
    return base


def _named_rows(target) -> set[str]:
    """Every row label a parsed target refers to."""
    rows = set(target.rows or ())
    quantities = [*target.show, *(c.quantity for c in (*target.where, *target.require))]
    rows |= {c.row for c in (*target.where, *target.require) if c.row is not None}
    rows |= {q.times_less_than for q in quantities if q.times_less_than is not None}
    rows |= {q.distance_to for q in quantities if isinstance(q.distance_to, str)}
    return rows


def test_every_scenario_declares_targets():
    assert len(SCENARIOS) >= 9 and PACKAGED
    for path in SCENARIOS:
        assert yaml.safe_load(path.read_text()).get("targets"), f"{path} has no targets: block"


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_targets_block_follows_the_schema_and_names_rows_of_the_run(path):
    from unlearn.bench.targets import parse_targets

    raw = yaml.safe_load(path.read_text())
    targets = parse_targets(raw["targets"], str(path))
    assert len(targets) == len(raw["targets"])
    known = _labels(raw)
    # a per_tag target names base rows, judged on each part (LABEL@part)
    bases = {k.split("@")[0] for k in known}
    for t in targets:
        unknown = _named_rows(t) - (known | bases if t.per_tag else known)
        assert not unknown, (
            f"{path}: target {t.name!r} names rows {sorted(unknown)} (known: {known})"
        )


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_unknown_keys_and_operators_in_a_targets_block_are_named(path):
    from unlearn.bench.targets import parse_targets
    from unlearn.errors import UnlearnError

    raw = yaml.safe_load(path.read_text())["targets"]
    first = raw[0]
    bad_key = [*raw, {**first, "threshold": 3}]
    with pytest.raises(UnlearnError, match=rf"targets\[{len(raw)}\].*unknown key 'threshold'"):
        parse_targets(bad_key, str(path))
    bad_op = [*raw, {"name": "x", "rows": "original", "require": [{"metric": "m", "approx": 1}]}]
    with pytest.raises(UnlearnError, match="unknown operator or key 'approx'"):
        parse_targets(bad_op, str(path))
