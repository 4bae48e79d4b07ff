"""The ``unlearn`` command: list methods, run benchmark scenarios, train checkpoints."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from .errors import UnlearnError

EXIT_BAD_INPUT = 2


def _cmd_methods(args: argparse.Namespace) -> int:
    from .methods import available_methods, method_aliases

    rows = [("method", "requests", "models", "summary")] + [
        (name, ", ".join(cls.request_kinds), ", ".join(cls.families()), cls.summary)
        for name, cls in available_methods().items()
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3])
    aliases = ", ".join(f"{old} -> {new}" for old, new in method_aliases().items())
    print(f"\ndeprecated names (aliases for one release): {aliases}")
    return 0


def _parse_seeds(text: str | None) -> list[int] | None:
    from .bench.scenario import MAX_SEED

    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UnlearnError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UnlearnError("--seeds must list distinct integers")
    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        raise UnlearnError(f"--seeds must lie in [0, {MAX_SEED}], got {bad[0]}")
    return seeds


# -- output paths: checked before any work ----------------------------------------------


def _out_path(text: str) -> Path:
    if not text or not text.strip():
        raise UnlearnError("--out must not be empty")
    if "\x00" in text:
        raise UnlearnError("--out must not hold a NUL character")
    return Path(text)


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _check_writable(out: Path) -> None:
    """The folder ``out`` is written in (its nearest existing ancestor when missing folders
    will be created) is a folder we can write: probed with a temporary file, removed."""
    folder = out.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise UnlearnError(f"cannot write {out}: {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".unlearn-probe-", dir=folder)
    except OSError as exc:
        raise UnlearnError(f"cannot write {out}: {folder} is not writable ({exc})") from None
    os.close(fd)
    os.unlink(probe)


def _check_out_folder(text: str, inputs: list[Path], marker: str, what: str) -> Path:
    """An output folder, refused (with an :class:`UnlearnError`) when it is empty, an
    existing file, an input or a folder holding one, a folder that holds anything but an
    earlier output of the same command (it has ``marker``), or not writable."""
    out = _out_path(text)
    try:
        if out.exists() and not out.is_dir():
            raise UnlearnError(f"output path {out} exists and is not a folder")
        for p in inputs:
            if _same_file(p, out) or _inside(p, out):
                raise UnlearnError(f"--out {out} would replace the input {p}")
        if out.is_dir() and any(out.iterdir()) and not (out / marker).is_file():
            raise UnlearnError(
                f"output folder {out} exists and holds files that are not {what} "
                f"(it has no {marker}): give a new folder"
            )
        _check_writable(out)
        if out.is_dir():
            _check_writable(out / marker)
    except OSError as exc:
        raise UnlearnError(f"cannot use --out {out}: {exc}") from None
    return out


def check_bench_out(text: str, inputs: list[Path]) -> Path:
    """The output folder of ``unlearn bench``: new, or an earlier run's (results.json)."""
    return _check_out_folder(text, inputs, "results.json", "a run's results")


def check_tune_out(text: str, inputs: list[Path]) -> Path:
    """The output folder of ``unlearn tune``: new, or an earlier search's (best.yaml)."""
    return _check_out_folder(text, inputs, "best.yaml", "a search's results")


def _cmd_tune(args: argparse.Namespace) -> int:
    from .bench.core import family_for
    from .bench.scenario import check_plain, read_scenario_file, scenario_inputs
    from .tune import run_tune, write_tune

    raw, path = read_scenario_file(args.scenario)
    check_plain(raw, "", str(path))
    if raw.get("kind", "classifier") != "classifier":
        raise UnlearnError(f"unlearn tune runs classifier scenarios; {path} is {raw['kind']!r}")
    fam = family_for(raw, str(path))
    sc = fam.parse(raw, str(path), path.parent)
    out = check_tune_out(args.out, scenario_inputs(path, sc.sc))
    fam.check(sc)
    if args.holdout_seeds == "none":
        holdout = None
    else:
        holdout = _parse_seeds(args.holdout_seeds) if args.holdout_seeds else sc.sc.seeds
    say = (lambda msg: None) if args.quiet else _echo
    result = run_tune(
        raw, str(path), path.parent, args.method, args.trials, holdout, _execution(args), say
    )
    write_tune(result, out)
    from .tune import holdout_comparison, verdict_text

    cmp = holdout_comparison(result)
    tail = "" if not cmp else f"; on held-out seeds: {verdict_text(cmp).replace('**', '')}"
    print(f"wrote {out / 'best.yaml'}, {out / 'trials.csv'} and {out / 'report.md'}{tail}")
    return 0


def check_train_out(text: str, inputs: list[Path], force: bool) -> Path:
    """The checkpoint path of ``unlearn train``: not empty, not a folder, not an input (even
    with ``force``), not an existing file without ``force``, in a writable folder."""
    out = _out_path(text)
    if text.endswith(("/", os.sep)):
        raise UnlearnError(f"--out {text} must be a checkpoint file path, not a folder")
    try:
        if out.is_dir():
            raise UnlearnError(f"--out {out} is a folder: give a checkpoint file path")
        for p in inputs:
            if _same_file(p, out):
                raise UnlearnError(f"--out {out} is the input {p}: refusing to overwrite it")
        if out.exists():
            if not force:
                raise UnlearnError(f"{out} exists: pass --force to overwrite it")
            if not out.is_file():
                raise UnlearnError(f"--out {out} exists and is not a regular file")
        _check_writable(out)
    except OSError as exc:
        raise UnlearnError(f"cannot use --out {out}: {exc}") from None
    return out


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench.scenario import LLM_SCENARIO, check_plain, read_scenario_file

    if args.llm and args.scenario is not None:
        raise UnlearnError("give either a scenario file or --llm, not both")
    raw, path = read_scenario_file(LLM_SCENARIO if args.llm else args.scenario)
    seeds = _parse_seeds(args.seeds)
    run_raw = raw if seeds is None else {**raw, "seeds": seeds}
    kind = raw.get("kind", "classifier")
    check_plain(raw, "", str(path))  # every kind: plain JSON values, no NaN, no YAML dates
    from .bench.core import family_for, parse

    fam = family_for(raw, str(path))  # the one runner: a plugin per kind (family)
    execution = _execution(args)
    sc = parse(fam, run_raw, str(path), path.parent)
    if kind == "classifier":
        sc.sc.raw = raw  # the file as written (seeds given on the command line are in "seeds")
        sc.raw = raw
    out = check_bench_out(args.out, fam.inputs(sc, path))
    fam.check(sc)
    if args.check:
        return _checked(path, out)
    resume = ROW_CACHE if args.resume else None
    if resume is not None and not fam.resumable:
        raise UnlearnError(
            f"--resume: {fam.kind} runs cannot be resumed (their attacks need every row's model)"
        )
    results = _run(fam, sc, args.quiet, execution, resume)
    from .bench import write_outputs

    write_outputs(results, out)
    print(f"wrote {out / 'results.json'}, {out / 'report.md'} and {out / 'report.html'}")
    return 0


def _checked(path: Path, out: Path) -> int:
    print(f"{path}: valid, and {out} can be written (--check: nothing trained or written)")
    return 0


def _execution(args: argparse.Namespace):
    """The executor settings of ``--engine``, ``--workers`` and ``--threads``."""
    from .executor import Execution

    return Execution(args.engine, args.workers, args.threads).check()


def _add_execution_args(p: argparse.ArgumentParser) -> None:
    from .executor import ENGINES

    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="where independent trainings (seeds, reference models, held-out runs) run: "
        "the local process pool or Ray (default: %(default)s)",
    )
    p.add_argument(
        "--workers",
        type=_positive_int("--workers"),
        default=None,
        help="worker processes (default: one per core, at most one per job)",
    )
    p.add_argument(
        "--threads",
        type=_positive_int("--threads"),
        default=1,
        help="BLAS / OpenMP threads per training process (default: %(default)s, the fastest "
        "for small models; the numbers depend on it)",
    )


def _positive_int(flag: str):
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be a positive integer, got {text!r}")
        return value

    return convert


#: where ``unlearn bench --resume`` saves finished rows (unlearn.bench.rowcache)
ROW_CACHE = ".cache/unlearn/rows"


def _run(fam, sc, quiet: bool, execution=None, resume=None) -> dict:
    from tqdm import tqdm

    from .bench.core import run_parsed

    with tqdm(total=fam.ticks(sc), desc=sc.name, unit="run", file=sys.stderr, disable=quiet) as bar:

        def progress(msg: str) -> None:
            bar.set_postfix_str(msg.split("] ", 1)[-1][:60])
            if msg.startswith("["):
                total = msg[1:].split("]", 1)[0].split("/")[-1]
                if total.isdigit() and int(total) != bar.total:
                    bar.total = int(total)
                bar.update(1)
            else:
                bar.write(msg, file=sys.stderr)

        return run_parsed(fam, sc, progress=progress, execution=execution, resume=resume)


def _echo(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _cmd_train(args: argparse.Namespace) -> int:
    from .bench.scenario import (
        MAX_SEED,
        check_scenario,
        load_scenario,
        model_spec,
        read_scenario_file,
        scenario_inputs,
    )
    from .data import load_dataset
    from .io import save_model
    from .models import build_model
    from .tasks import ClassifierTask

    if not 0 <= args.seed <= MAX_SEED:
        raise UnlearnError(f"--seed must lie in [0, {MAX_SEED}], got {args.seed}")
    kind = read_scenario_file(args.scenario)[0].get("kind") if args.scenario else None
    if kind in ("llm", "federated", "generator"):
        return _train_checkpoint(args, kind)
    scenario = load_scenario(args.scenario)
    path = Path(scenario.source)
    out = check_train_out(args.out, scenario_inputs(path, scenario), args.force)
    check_scenario(scenario)
    train, test = load_dataset(scenario.data)
    spec = model_spec(scenario, train)
    model = build_model(spec, seed=args.seed)
    task = ClassifierTask(train.num_classes, scenario.device)
    task.fit(model, train, scenario.train, args.seed)
    acc = float((task.logits(model, test).argmax(1) == test.y).float().mean()) * 100
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UnlearnError(f"cannot create the folder of {out}: {exc}") from None
    save_model(model, out, spec)
    print(f"wrote {out} (test accuracy {acc:.2f} %)")
    return 0


def _train_checkpoint(args: argparse.Namespace, kind: str) -> int:
    """``unlearn train`` for an LLM (fictitious facts) or federated scenario: the
    checkpoint the ledger registers, written atomically."""
    from .bench.scenario import MAX_SEED

    if kind == "llm":
        from .ledger.lm import train_lm_checkpoint as train

        what = "answer accuracy on the ledger's utility pairs"
    elif kind == "generator":
        from .ledger.generator import train_generator_checkpoint as train

        what = "the judge's rate on retained identities"
    else:
        from .ledger.federated import train_fed_checkpoint as train

        what = "test accuracy"
    if not 0 <= args.seed <= MAX_SEED:
        raise UnlearnError(f"--seed must lie in [0, {MAX_SEED}], got {args.seed}")
    path = Path(args.scenario).resolve()
    out = check_train_out(args.out, [path], args.force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UnlearnError(f"cannot create the folder of {out}: {exc}") from None
    tmp = out.with_name(out.name + ".tmp")
    try:
        acc = train(path, args.seed, tmp)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"wrote {out} ({what} {acc:.2f} %)")
    return 0


def _cmd_request(args: argparse.Namespace) -> int:
    from .ledger.cli import run_request

    return run_request(args)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one ``unlearn: error:`` line, exit 2."""

    def error(self, message: str):  # type: ignore[override]
        raise UnlearnError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="unlearn", description="Machine unlearning toolkit.")
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
        "--check",
        action="store_true",
        help="only validate the scenario and --out (loads the data; trains and writes nothing)",
    )
    b.add_argument(
        "--resume",
        action="store_true",
        help="save every row as it is scored (under .cache/unlearn/rows) and reuse the rows "
        "an earlier run of the same scenario and code saved (language-model runs)",
    )
    b.add_argument(
        "--llm",
        action="store_true",
        help="run the built-in LLM scenario (SmolLM2, real facts) instead of the default",
    )
    _add_execution_args(b)
    u = sub.add_parser(
        "tune", help="search a method's hyperparameters (Optuna) on a scenario's tuning seeds"
    )
    u.add_argument("scenario", help="scenario YAML file with a 'tune:' block")
    u.add_argument("--method", required=True, help="the method label to tune")
    u.add_argument("--trials", type=_positive_int("--trials"), default=20)
    u.add_argument("--out", required=True, help="output folder (trials.csv, best.yaml, ...)")
    u.add_argument(
        "--holdout-seeds",
        default=None,
        help="seeds to compare the committed and tuned configs on (default: the scenario's "
        "seeds; 'none': no comparison)",
    )
    u.add_argument("--quiet", action="store_true", help="no progress lines")
    _add_execution_args(u)
    from .ledger.cli import add_request_parser

    add_request_parser(sub)
    t = sub.add_parser("train", help="train a scenario's original model and save a checkpoint")
    t.add_argument("scenario", nargs="?", default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True, help="checkpoint path (.safetensors)")
    t.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    handlers = {
        "methods": _cmd_methods,
        "bench": _cmd_bench,
        "tune": _cmd_tune,
        "train": _cmd_train,
        "request": _cmd_request,
    }
    try:
        args = parser.parse_args(argv)
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
