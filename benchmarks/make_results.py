"""Regenerate docs/results.md: run every benchmark scenario and tabulate it.

    .venv/bin/python benchmarks/make_results.py            # all scenarios
    .venv/bin/python benchmarks/make_results.py --only mnist1d-class

Each scenario's full outputs (results.json, report.md/html, plots) go to
benchmarks/out/<scenario>/ (not committed); docs/results.md gets the tables,
the targets each scenario file declares in its `targets:` block (judged by
unlearn.bench.targets, as in each run's report.md), and the command that
reproduced them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCENARIOS = [
    "mnist1d-random10",
    "mnist1d-class",
    "mnist1d-random10-attacks",
    "mnist1d-random10-attacks-fastclip",
    "mnist1d-amun-batching",
    "mnist1d-class-trw",
    "mnist1d-class-all",
    "mnist1d-cost-growth",
    "digits-certified",
    "dfl-certified-ring",
    "dfl-certified-er",
    "fed-ferrari-backdoor",
    "fed-ferrari-sensitive",
    "fed-ferrari-biased",
    "fed-deployment-ring",
    "smollm2-fictitious-relearn",
    "smollm2-fictitious-forget10",
    "smollm2-lune-vs-full",
    "smollm2-real-facts",
    "diffusion-digits-class",
    "generator-sugar",
]


def run(name: str) -> dict:
    out = HERE / "out" / name
    cmd = [
        str(Path(sys.executable).parent / "unlearn"),
        "bench",
        str(HERE / f"{name}.yaml"),
        "--out",
        str(out),
        "--quiet",
    ]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return json.loads((out / "results.json").read_text())


def checks(name: str, res: dict) -> list[str]:
    """The lines of the scenario's targets, as its file declares them (its `targets:` block,
    read from benchmarks/NAME.yaml, so that --no-run judges old results by today's targets),
    and the run's wall time."""
    import yaml

    from unlearn.bench.targets import target_lines

    path = HERE / f"{name}.yaml"
    declared = yaml.safe_load(path.read_text()).get("targets")
    lines = target_lines(res, declared, str(path.relative_to(ROOT)))
    total = res.get("total_seconds")
    if isinstance(total, int | float):
        took = f"{total:.0f} s" if total < 600 else f"{total / 60:.1f} min"
        from unlearn.bench.report import execution_text

        lines.append(
            f"- whole run: {took} on this machine ({res['versions']['platform']})"
            + (f"; {execution_text(res)}" if execution_text(res) else "")
        )
    return lines


def _family_sections(res: dict) -> str:
    """The LM sections (relearning attack, weight change, KUnBR blocks) one heading level
    down, under the scenario's own heading; empty where the run has none."""
    from unlearn.bench.diffusion_report import diffusion_section
    from unlearn.bench.llm_sections import llm_sections

    text = llm_sections(res) + diffusion_section(res)
    if not text:
        return ""
    return "\n" + ("\n" + text).replace("\n## ", "\n### ").lstrip("\n")


def section(name: str, res: dict) -> str:
    from unlearn.bench.report import markdown_table, parts_section

    desc = " ".join(res["scenario"].get("description", "").split())
    hp = "\n".join(
        f"| `{k}` | {v['method']} | `{json.dumps(v['config'], sort_keys=True)}` |"
        for k, v in res["methods"].items()
    )
    return f"""## {name}

{desc}

Scenario: [`benchmarks/{name}.yaml`](../benchmarks/{name}.yaml). Request: {res["request"]}
(seed-dependent draws use each run's seed). Seeds {res["seeds"]}; mean ± sample
standard deviation over seeds.

{parts_section(res)}{markdown_table(res)}

Targets:

{chr(10).join(checks(name, res))}
{_family_sections(res)}
<details><summary>Hyperparameters of every row</summary>

Training recipe of the original model and the oracle:
`{json.dumps(res["train_recipe"], sort_keys=True)}`.
Model: `{json.dumps(res["model_spec"], sort_keys=True)}`.

| Row | Method | Config |
|---|---|---|
{hp}

</details>
"""


NOT_RERUN = (
    "> **Not rerun with the current code.** This section is from an earlier run "
    "(see its banner or the git history of this file); reproduce it with "
    "`.venv/bin/python benchmarks/make_results.py --only {name}`.\n"
)


def old_sections() -> dict[str, str]:
    """The sections of the current docs/results.md, by scenario name (kept when a scenario
    has no outputs here, with a banner that says it was not rerun)."""
    path = ROOT / "docs" / "results.md"
    if not path.exists():
        return {}
    text = path.read_text()
    out = {}
    parts = text.split("\n## ")
    for part in parts[1:]:
        name = part.split("\n", 1)[0].strip()
        if name not in SCENARIOS:
            continue
        body = "## " + part.rstrip() + "\n"
        if "Not rerun" not in body:
            head, rest = body.split("\n", 1)
            body = f"{head}\n\n{NOT_RERUN.format(name=name)}{rest}"
        out[name] = body
    return out


def _tune_chunks(text: str) -> list[tuple[str, str]]:
    """The tuning reports in a results.md's "unlearn tune runs" part, as (key, text): an
    `unlearn tune` report is keyed by its folder, a benchmark report by its scenario name."""
    marker = "\n## unlearn tune runs\n"
    if marker not in text:
        return []
    part = text.split(marker, 1)[1]
    chunks: list[tuple[str, str]] = []
    for line in part.splitlines(keepends=True):
        if line.startswith("### `"):
            chunks.append((line[5:].split("`", 1)[0], line))
        elif line.startswith("# "):
            chunks.append((line[2:].strip(), line))
        elif chunks:
            chunks[-1] = (chunks[-1][0], chunks[-1][1] + line)
    return chunks


def tune_sections(previous: str = "") -> str:
    """The report of every tuning run under benchmarks/out/tune-*/ (headings demoted), and
    the reports in ``previous`` (the old results.md) of runs whose folder is gone here."""
    folders = sorted(p for p in (HERE / "out").glob("tune-*") if (p / "report.md").is_file())
    made: list[tuple[str, str]] = []
    for f in folders:
        rep = (f / "report.md").read_text().replace("\n## ", "\n#### ")
        rep = rep.replace("# unlearn tune:", f"### `{f.name}`:", 1)
        first = rep.lstrip().split("\n", 1)[0]
        key = f.name if first.startswith("### `") else first.lstrip("# ").strip()
        made.append((key, rep))
    have = {k for k, _ in made}
    kept = [(k, t) for k, t in _tune_chunks(previous) if k not in have]
    if not made and not kept:
        return ""
    text = "\n## unlearn tune runs\n\nEach search's `report.md`, from `benchmarks/out/<folder>/`"
    text += " (reports whose folder is not on this machine are kept from the last run).\n"
    for _, rep in kept + made:
        text += "\n" + rep.rstrip("\n") + "\n"
    return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", default=None, help="rerun only these scenarios")
    ap.add_argument("--no-run", action="store_true", help="only rebuild docs/results.md")
    args = ap.parse_args()
    names = [] if args.no_run else (args.only or SCENARIOS)
    results = {}
    kept: dict[str, str] = {}
    previous = old_sections()
    for name in SCENARIOS:
        out = HERE / "out" / name / "results.json"
        if name in names:
            results[name] = run(name)
        elif out.exists():
            results[name] = json.loads(out.read_text())
        elif name in previous:
            kept[name] = previous[name]
            print(f"warning: {name} has no results ({out} is missing); its old section is kept")
        else:
            print(f"warning: {name} has no results ({out} is missing); its section is left out")
    if not results:
        raise SystemExit("no scenario has results under benchmarks/out/: run without --no-run")
    body = "\n".join(
        section(n, results[n]) if n in results else kept[n]
        for n in SCENARIOS
        if n in results or n in kept
    )
    path = ROOT / "docs" / "results.md"
    body += tune_sections(path.read_text() if path.exists() else "")
    versions = next(iter(results.values()))["versions"]
    text = f"""# Benchmark results

Generated by `benchmarks/make_results.py` (`make results`) on a 2-core CPU
machine without a GPU; do not edit by hand. Metrics are percentages except
the JS divergence (bits) and seconds. Avg.Gap is the mean absolute
difference to the oracle over UA (100 - forget accuracy), retain accuracy,
test accuracy and MIA-efficacy; every table carries the untouched model
(`original`), the oracle (`retrain`) and the oracle's own noise floor
(`oracle_noise`: the oracle retrained with another seed, scored against it).
A method is only interesting between `original` and `oracle_noise`.
Times are wall-clock seconds of the unlearning itself (no evaluation), and
"Time / oracle" divides them by the same seed's retraining time. "Peak MB" is
the run's own memory: the peak growth of the process's resident memory above
its baseline when the run started (`baseline_mem_mb` in `results.json`), not
the process's total. A value shown as – was not measured for that row.

Each section's "whole run" line says how it ran (engine, worker processes,
BLAS threads per process) where the run recorded it. Sections without that
were run before the executor existed: the ones rerun for issue 10 single-
threaded, two benchmarks at a time (their seconds are 3-7 times those of
quiet runs; the ratios to the oracle are comparable), the older ones with
torch's default two threads. The thread count changes the trained models in
their last digits, and training amplifies that. Sections marked "Not rerun"
are from earlier code, kept for reference.

Versions: `{json.dumps(versions, sort_keys=True)}`.

{body}"""
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "results.md").write_text(text)
    print("wrote docs/results.md")


if __name__ == "__main__":
    main()
