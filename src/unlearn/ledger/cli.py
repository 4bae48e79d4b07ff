"""``unlearn request init|add|process|status|verify|export``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import LedgerError

__all__ = ["add_request_parser", "run_request"]


def add_request_parser(sub) -> None:
    r = sub.add_parser(
        "request",
        help="deletion requests: a hash-chained ledger, processing, certificates",
    )
    rs = r.add_subparsers(dest="request_command", required=True)

    def ledger_arg(p, required=True):
        p.add_argument("ledger", nargs=None if required else "?", help="the ledger folder")
        p.add_argument(
            "--db", default=None, help="a postgresql:// URL in place of LEDGER/ledger.sqlite"
        )

    i = rs.add_parser("init", help="create a ledger (or open one) and register a model in it")
    ledger_arg(i)
    i.add_argument("--model", required=True, help="the model file (a checkpoint of unlearn train)")
    i.add_argument("--scenario", required=True, help="the scenario file that trained it")
    i.add_argument("--name", default=None, help="the model's name (default: the file's stem)")
    i.add_argument("--seed", type=int, default=0, help="the seed it was trained with")
    i.add_argument("--sign", action="store_true", help="sign certificates (Ed25519)")
    i.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="METRIC<=V|METRIC>=V",
        help="a verification threshold every request on this model must meet",
    )
    i.add_argument(
        "--retrain-if-drop",
        type=float,
        default=None,
        metavar="POINTS",
        help="retrain from scratch when test accuracy falls this far below the "
        "last retrained (or the registered) model's",
    )
    i.add_argument(
        "--epsilon-budget",
        type=float,
        default=None,
        help="retrain when the certified epsilons since the last retrain sum past this",
    )
    i.add_argument(
        "--retrain-if-missed",
        action="store_true",
        help="retrain when a request misses its thresholds",
    )

    a = rs.add_parser("add", help="record a deletion request")
    ledger_arg(a)
    a.add_argument("--subject", required=True, help="the data subject (who asked)")
    a.add_argument("--model", required=True, help="the registered model's name")
    sel = a.add_mutually_exclusive_group(required=True)
    sel.add_argument("--samples", help="sample ids, comma-separated")
    sel.add_argument("--class", dest="classes", help="classes, comma-separated")
    sel.add_argument("--group", help="BY:ID[,ID...] (a client, person, identity...)")
    a.add_argument(
        "--method",
        default="auto",
        help="the unlearning method (default: auto, picked by the selector)",
    )
    a.add_argument("--config", default=None, help="the method's config as JSON")
    a.add_argument("--threshold", action="append", default=[], metavar="METRIC<=V|METRIC>=V")

    p = rs.add_parser("process", help="process pending requests, oldest first")
    ledger_arg(p)
    p.add_argument("--max", type=int, default=None, help="at most this many requests")
    p.add_argument("--model", default=None, help="only this model's requests")

    s = rs.add_parser("status", help="requests per model and the metrics after each step")
    ledger_arg(s)
    s.add_argument("--json", action="store_true", help="print JSON")

    v = rs.add_parser("verify", help="check the chain, model files and certificates")
    ledger_arg(v, required=False)
    v.add_argument("--certificate", default=None, help="check one certificate file offline")
    v.add_argument("--model", default=None, help="with --certificate: the model file it is for")
    v.add_argument("--public-key", default=None, help="with --certificate: the expected key (hex)")

    e = rs.add_parser("export", help="write every entry, request and model as one JSON file")
    ledger_arg(e)
    e.add_argument("--out", required=True)


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise LedgerError(f"{flag} must be comma-separated integers, got {text!r}") from None


def _thresholds(items: list[str]) -> dict:
    from .core import parse_threshold

    out: dict = {}
    for text in items:
        name, rule = parse_threshold(text)
        out.setdefault(name, {}).update(rule)
    return out


def run_request(args: argparse.Namespace) -> int:
    from .core import Ledger

    cmd = args.request_command
    if cmd == "verify" and args.certificate is not None:
        from .certificate import check_certificate

        problems = check_certificate(args.certificate, args.model, args.public_key)
        if problems:
            print("certificate FAILED verification:\n" + "\n".join(f"  - {p}" for p in problems))
            return 1
        print(
            f"certificate {args.certificate} verified"
            + (f"; {args.model} is the model it produced" if args.model else "")
        )
        return 0
    if args.ledger is None:
        raise LedgerError("verify needs a ledger folder or --certificate")
    root = Path(args.ledger)
    if cmd == "init":
        fresh = not (root / "ledger.sqlite").is_file() and not (root / "database.txt").is_file()
        if fresh:
            led = Ledger.create(root, args.db, sign=args.sign)
        else:
            if args.sign:
                raise LedgerError(
                    f"{root} is a ledger already: --sign is chosen when it is created"
                )
            led = Ledger.open(root, args.db)
        try:
            return _register(led, args, root)
        except BaseException:
            led.close()
            if fresh:  # a ledger this command made holds nothing yet: do not leave it
                import shutil

                shutil.rmtree(root, ignore_errors=True)
            raise
    with Ledger.open(root, args.db) as led:
        return _dispatch(led, args, cmd)


def _register(led, args, root) -> int:
    rules = {}
    if args.retrain_if_drop is not None:
        rules["test_acc_drop"] = args.retrain_if_drop
    if args.epsilon_budget is not None:
        rules["epsilon_total"] = args.epsilon_budget
    if args.retrain_if_missed:
        rules["thresholds_missed"] = True
    with led:
        name = led.register_model(
            args.name or Path(args.model).stem,
            args.model,
            args.scenario,
            seed=args.seed,
            policy={"retrain_if": rules} if rules else None,
            thresholds=_thresholds(args.threshold),
        )
        state = led.model_state(name)
    lm = state["family"] == "causal_lm"
    what = "answer accuracy on retained pairs" if lm else "test accuracy"
    print(f"registered model {name!r} in {root} ({what} {state['metrics']['test_acc']:.2f} %)")
    return 0


def _dispatch(led, args, cmd) -> int:
    if cmd == "add":
        if args.samples is not None:
            selector: dict = {"samples": _ints(args.samples, "--samples")}
        elif args.classes is not None:
            selector = {"class": _ints(args.classes, "--class")}
        else:
            by, sep, ids = args.group.partition(":")
            if not sep or not ids:
                raise LedgerError(f"--group must read BY:ID[,ID...], got {args.group!r}")
            selector = {"group": {"by": by, "ids": [_id(t) for t in ids.split(",")]}}
        try:
            config = json.loads(args.config) if args.config else None
        except json.JSONDecodeError as exc:
            raise LedgerError(f"--config is not valid JSON: {exc}") from None
        rid = led.add(
            args.subject, args.model, selector, args.method, config, _thresholds(args.threshold)
        )
        print(rid)
        return 0
    if cmd == "process":
        done = led.process(args.max, args.model)
        print(f"processed {len(done)} request(s)" + (f": {', '.join(done)}" if done else ""))
        return 0
    if cmd == "status":
        st = led.status()
        if args.json:
            print(json.dumps(st, indent=1, sort_keys=True))
        else:
            print(_status_text(st))
        return 0
    if cmd == "verify":
        report = led.verify()
        print(report.text())
        return 0 if report.ok else 1
    if cmd == "export":
        out = led.export(args.out)
        print(f"wrote {out}")
        return 0
    raise LedgerError(f"unknown request command {cmd!r}")  # pragma: no cover


def _id(text: str):
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else text


def _status_text(st: dict) -> str:
    lines = [f"ledger {st['ledger']} ({st['database']})"]
    for name, m in st["models"].items():
        counts = ", ".join(f"{v} {k}" for k, v in sorted(m["requests"].items())) or "no requests"
        lines.append(
            f"model {name}: {counts}; {m['removed']} samples removed, "
            f"{m['retrains']} retrain(s); sha256 {m['hash'][:16]}..."
        )
    if st["processed"]:
        lines.append("request   kind               test_acc  forget_acc  mia_auc  thresholds")
        for p in st["processed"]:
            fa = f"{p['forget_acc']:10.1f}" if "forget_acc" in p else " " * 10
            ma = f"{p['mia_auc']:7.1f}" if "mia_auc" in p else " " * 7
            lines.append(
                f"{p['request']}   {p['kind']:<17}  {p['test_acc']:8.2f}  {fa}  {ma}  "
                f"{'met' if p['passed'] else 'MISSED'}"
            )
    return "\n".join(lines)
