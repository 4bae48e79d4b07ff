"""The ``unlearn`` command: list methods, run benchmark scenarios, train checkpoints."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import UnlearnError

EXIT_BAD_INPUT = 2


def _cmd_methods(args: argparse.Namespace) -> int:
    from .methods import available_methods

    rows = [
        (name, ", ".join(cls.request_kinds), ", ".join(cls.families), cls.summary)
        for name, cls in available_methods().items()
    ]
    w = max(len(r[0]) for r in rows)
    k = max(len(r[1]) for r in rows)
    print(f"{'method'.ljust(w)}  {'requests'.ljust(k)}  models      summary")
    for name, kinds, fams, summary in rows:
        print(f"{name.ljust(w)}  {kinds.ljust(k)}  {fams.ljust(10)}  {summary}")
    return 0


def _parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UnlearnError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UnlearnError("--seeds must list distinct integers")
    return seeds


def _cmd_bench(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .bench import parse_scenario, run_scenario, write_outputs
    from .bench.scenario import LLM_SCENARIO, read_scenario_file

    if args.llm and args.scenario is not None:
        raise UnlearnError("give either a scenario file or --llm, not both")
    raw, path = read_scenario_file(LLM_SCENARIO if args.llm else args.scenario)
    seeds = _parse_seeds(args.seeds)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UnlearnError(f"output path {out} exists and is not a folder")
    if raw.get("kind") == "certified":
        from .bench.certified import run_certified

        if seeds is not None:
            raw = {**raw, "seeds": seeds}
        results = run_certified(raw, progress=None if args.quiet else _echo)
    elif raw.get("kind") == "llm":
        from .bench.llm import run_llm

        if seeds is not None:
            raw = {**raw, "seeds": seeds}
        results = run_llm(raw, progress=None if args.quiet else _echo, source=str(path))
    else:
        scenario = parse_scenario(raw, str(path), path.parent)
        if seeds is not None:
            scenario.seeds = seeds
        total = len(scenario.seeds) * (3 + len(scenario.methods))
        with tqdm(
            total=total, desc=scenario.name, unit="run", file=sys.stderr, disable=args.quiet
        ) as bar:

            def progress(msg: str) -> None:
                bar.set_postfix_str(msg.split("] ", 1)[-1][:60])
                if msg.startswith("["):
                    bar.update(1)

            results = run_scenario(scenario, progress=progress)
    write_outputs(results, out)
    print(f"wrote {out / 'results.json'}, {out / 'report.md'} and {out / 'report.html'}")
    return 0


def _echo(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _cmd_train(args: argparse.Namespace) -> int:
    from .bench.runner import _model_spec
    from .bench.scenario import load_scenario
    from .data import load_dataset
    from .io import save_model
    from .models import build_model
    from .tasks import ClassifierTask

    scenario = load_scenario(args.scenario)
    out = Path(args.out)
    if not out.parent.exists():
        raise UnlearnError(f"folder {out.parent} does not exist")
    train, test = load_dataset(scenario.data)
    spec = _model_spec(scenario, train)
    model = build_model(spec, seed=args.seed)
    task = ClassifierTask(train.num_classes, scenario.device)
    task.fit(model, train, scenario.train, args.seed)
    acc = float((task.logits(model, test).argmax(1) == test.y).float().mean()) * 100
    save_model(model, out, spec)
    print(f"wrote {out} (test accuracy {acc:.2f} %)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unlearn", description="Machine unlearning toolkit.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("methods", help="list the unlearning methods and the requests they serve")
    b = sub.add_parser("bench", help="run a benchmark scenario and write results and reports")
    b.add_argument(
        "scenario",
        nargs="?",
        default=None,
        help="scenario YAML file (default: the built-in MNIST-1D random 10 %% scenario)",
    )
    b.add_argument("--out", default="results/default", help="output folder (default: %(default)s)")
    b.add_argument("--seeds", default=None, help="override the scenario's seeds, e.g. 0,1,2")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.add_argument(
        "--llm",
        action="store_true",
        help="run the built-in LLM scenario (SmolLM2, real facts) instead of the default",
    )
    t = sub.add_parser("train", help="train a scenario's original model and save a checkpoint")
    t.add_argument("scenario", nargs="?", default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True, help="checkpoint path (.safetensors)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"methods": _cmd_methods, "bench": _cmd_bench, "train": _cmd_train}
    try:
        return handlers[args.command](args)
    except UnlearnError as exc:
        msg = " ".join(str(exc).split())
        print(f"unlearn: error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("unlearn: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
