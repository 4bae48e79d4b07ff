"""Targets declared in a scenario's ``targets:`` block, judged on a run's results.

A scenario file states what its run must show; the report (``report.md``) and
``benchmarks/make_results.py`` both judge it here, on the ``summary`` means of
a results dict (per-seed values come from its ``rows``). No target is chosen
by scenario name.

Schema (every key but ``name`` is optional; unknown keys and operators are an
:class:`~unlearn.errors.ScenarioError` naming them)::

    targets:
      - name: str              # the line's title
        rows: LABEL | [LABEL, ...] | methods
                               # the rows judged; `methods`: every row that is not a
                               # reference (original, retrain, oracle_noise, also with
                               # an `@...` suffix), in table order. Default: methods
        where: [CONDITION, ...]  # keep only the rows that meet all of these
        pick: {lowest: METRIC} | {highest: METRIC}
                               # judge only the best remaining row (ties: the first);
                               # without `require`, met when some row is left to pick
        require: [CONDITION, ...]  # what must hold; an entry without `require` and
                               # without `pick` is informative (values, no verdict)
        mode: each | any       # without `pick`: one verdict per row (each, default),
                               # or one verdict, met by at least one row (any)
        show: [QUANTITY, ...]  # values shown beside the verdict, not judged
        note: str              # free text appended to the line
        per_tag: N             # judge every part of the run (rows LABEL@TAG, e.g. one per
                               # forgotten class) on its own, references (`retrain`, ...)
                               # taken from the same part; a row is met when at least N
                               # parts meet `require` (with `mode: any`: some row is)

    QUANTITY:  METRIC | {metric: METRIC, distance_to: NUMBER | LABEL,
                         times_less_than: LABEL, per_seed: bool}
        the row's mean of METRIC; with `distance_to`, its absolute difference to a
        number or to row LABEL's mean; with `times_less_than`, LABEL's mean divided
        by the row's (how many times smaller it is); `per_seed` also lists the
        quantity seed by seed (rows of the same seed paired).
    CONDITION: a QUANTITY mapping plus exactly one operator:
        at_least (>=), at_most (<=), above (>), below (<), whose value is a NUMBER or
        {row: LABEL, times: NUMBER, plus: NUMBER}: times * (LABEL's same quantity) +
        plus (times 1 and plus 0 by default).

A verdict is ``met``, ``NOT met``, or ``missing`` where a value it needs was not
measured (a row or metric absent, null or not finite); informative entries
have the status ``info``. ``any`` and ``pick`` targets skip rows whose values
are missing, and are ``missing`` (not ``NOT met``) when nothing is left and a
row was skipped for that reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ScenarioError
from .core import REFERENCE_ROWS

__all__ = [
    "Condition",
    "Outcome",
    "Quantity",
    "Target",
    "evaluate",
    "is_reference",
    "parse_targets",
    "target_lines",
]

METHODS = "methods"
_TARGET_KEYS = ("name", "rows", "where", "pick", "require", "mode", "show", "note", "per_tag")
_QUANTITY_KEYS = ("metric", "distance_to", "times_less_than", "per_seed")
_OPERATORS = {"at_least": ">=", "at_most": "<=", "above": ">", "below": "<"}
_REF_KEYS = ("row", "times", "plus")
_PICKS = ("lowest", "highest")
_MODES = ("each", "any")


@dataclass(frozen=True)
class Quantity:
    """What is measured on a row: a metric's mean, maybe against another row."""

    metric: str
    distance_to: float | str | None = None
    times_less_than: str | None = None
    per_seed: bool = False

    def describe(self) -> str:
        if self.distance_to is not None:
            ref = self.distance_to
            ref = f"{ref}'s" if isinstance(ref, str) else _num(ref)
            return f"|{self.metric} - {ref}|"
        if self.times_less_than is not None:
            return f"{self.times_less_than}'s {self.metric} / this row's"
        return self.metric


@dataclass(frozen=True)
class Condition:
    """``quantity`` compared by ``op`` with a number or with ``times * row's + plus``."""

    quantity: Quantity
    op: str
    value: float | None = None
    row: str | None = None
    times: float = 1.0
    plus: float = 0.0


@dataclass(frozen=True)
class Target:
    """One entry of a ``targets:`` block, validated (see the module's schema)."""

    name: str
    rows: tuple[str, ...] | None  # None: every non-reference row
    where: tuple[Condition, ...] = ()
    pick: tuple[str, str] | None = None  # ("lowest" | "highest", metric)
    require: tuple[Condition, ...] = ()
    mode: str = "each"
    show: tuple[Quantity, ...] = ()
    note: str | None = None
    per_tag: int | None = None

    @property
    def informative(self) -> bool:
        return not self.require and self.pick is None


@dataclass(frozen=True)
class Outcome:
    """One judged line: ``status`` is ``met``, ``NOT met``, ``missing`` or ``info``."""

    name: str
    status: str
    text: str
    row: str | None = None

    def line(self) -> str:
        """A Markdown list line: ``- NAME: STATUS — TEXT`` (informative: ``- NAME: TEXT``)."""
        if self.status == "info":
            return f"- {self.name}: {self.text}"
        return f"- {self.name}: {self.status} — {self.text}"


# ---------------------------------------------------------------- parsing


def _fail(where: str, msg: str) -> ScenarioError:
    return ScenarioError(f"{where}: {msg}")


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise _fail(where, f"expected a finite number, got {v!r}")
    return float(v)


def _label(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _fail(where, f"expected a row label (a non-empty string), got {v!r}")
    return v


def _quantity(raw: Any, where: str, extra: Sequence[str] = ()) -> Quantity:
    if isinstance(raw, str):
        return Quantity(_label(raw, where))
    if not isinstance(raw, dict):
        raise _fail(where, f"expected a metric name or a mapping, got {raw!r}")
    unknown = [k for k in raw if k not in _QUANTITY_KEYS and k not in extra]
    if unknown:
        what = "operator or key" if extra else "key"
        known = ", ".join([*_QUANTITY_KEYS, *extra])
        raise _fail(where, f"unknown {what} {unknown[0]!r} (known: {known})")
    if "metric" not in raw:
        raise _fail(where, "`metric` is required")
    if "distance_to" in raw and "times_less_than" in raw:
        raise _fail(where, "`distance_to` and `times_less_than` exclude each other")
    dist = raw.get("distance_to")
    if dist is not None:
        dist = dist if isinstance(dist, str) else _number(dist, f"{where}.distance_to")
    ratio = raw.get("times_less_than")
    if ratio is not None:
        ratio = _label(ratio, f"{where}.times_less_than")
    per_seed = raw.get("per_seed", False)
    if not isinstance(per_seed, bool):
        raise _fail(f"{where}.per_seed", f"expected true or false, got {per_seed!r}")
    return Quantity(_label(raw["metric"], f"{where}.metric"), dist, ratio, per_seed)


def _condition(raw: Any, where: str) -> Condition:
    if not isinstance(raw, dict):
        raise _fail(where, f"a condition is a mapping with `metric` and an operator, got {raw!r}")
    q = _quantity(raw, where, extra=tuple(_OPERATORS))
    ops = [k for k in raw if k in _OPERATORS]
    if len(ops) != 1:
        raise _fail(where, f"needs exactly one operator of {', '.join(_OPERATORS)}, got {ops}")
    op, val = ops[0], raw[ops[0]]
    at = f"{where}.{op}"
    if not isinstance(val, dict):
        return Condition(q, op, value=_number(val, at))
    unknown = [k for k in val if k not in _REF_KEYS]
    if unknown:
        raise _fail(at, f"unknown key {unknown[0]!r} (known: {', '.join(_REF_KEYS)})")
    if "row" not in val:
        raise _fail(at, "`row` is required in a reference to another row")
    return Condition(
        q,
        op,
        row=_label(val["row"], f"{at}.row"),
        times=_number(val.get("times", 1.0), f"{at}.times"),
        plus=_number(val.get("plus", 0.0), f"{at}.plus"),
    )


def _conditions(raw: Any, where: str) -> tuple[Condition, ...]:
    if not isinstance(raw, list) or not raw:
        raise _fail(where, f"expected a non-empty list of conditions, got {raw!r}")
    return tuple(_condition(c, f"{where}[{i}]") for i, c in enumerate(raw))


def _target(raw: Any, loc: str) -> Target:
    if not isinstance(raw, dict):
        raise _fail(loc, f"a target is a mapping, got {raw!r}")
    unknown = [k for k in raw if k not in _TARGET_KEYS]
    if unknown:
        raise _fail(loc, f"unknown key {unknown[0]!r} (known: {', '.join(_TARGET_KEYS)})")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _fail(loc, f"`name` must be a non-empty string, got {name!r}")
    loc = f"{loc} ({name})"
    rows = raw.get("rows", METHODS)
    if rows == METHODS:
        labels = None
    elif isinstance(rows, str):
        labels = (_label(rows, f"{loc}.rows"),)
    elif isinstance(rows, list) and rows:
        labels = tuple(_label(r, f"{loc}.rows[{i}]") for i, r in enumerate(rows))
    else:
        raise _fail(f"{loc}.rows", f"expected a label, a list of labels or `methods`: {rows!r}")
    pick = raw.get("pick")
    if pick is not None:
        if not isinstance(pick, dict) or len(pick) != 1:
            raise _fail(
                f"{loc}.pick", f"expected {{lowest: METRIC}} or {{highest: METRIC}}: {pick!r}"
            )
        ((how, metric),) = pick.items()
        if how not in _PICKS:
            raise _fail(f"{loc}.pick", f"unknown key {how!r} (known: {', '.join(_PICKS)})")
        pick = (how, _label(metric, f"{loc}.pick.{how}"))
    mode = raw.get("mode", "each")
    if mode not in _MODES:
        raise _fail(f"{loc}.mode", f"unknown mode {mode!r} (known: {', '.join(_MODES)})")
    if pick is not None and "mode" in raw:
        raise _fail(loc, "`mode` does not apply to a `pick` target (it judges one row)")
    show = raw.get("show", [])
    if not isinstance(show, list):
        raise _fail(f"{loc}.show", f"expected a list of quantities, got {show!r}")
    note = raw.get("note")
    if note is not None and not isinstance(note, str):
        raise _fail(f"{loc}.note", f"expected a string, got {note!r}")
    per_tag = raw.get("per_tag")
    if per_tag is not None:
        if isinstance(per_tag, bool) or not isinstance(per_tag, int) or per_tag < 1:
            raise _fail(f"{loc}.per_tag", f"expected a positive integer, got {per_tag!r}")
        if pick is not None or "require" not in raw:
            raise _fail(loc, "`per_tag` needs `require` and no `pick`")
    t = Target(
        name=name.strip(),
        per_tag=per_tag,
        rows=labels,
        where=_conditions(raw["where"], f"{loc}.where") if "where" in raw else (),
        pick=pick,
        require=_conditions(raw["require"], f"{loc}.require") if "require" in raw else (),
        mode=mode,
        show=tuple(_quantity(s, f"{loc}.show[{i}]") for i, s in enumerate(show)),
        note=note,
    )
    if t.informative and not t.show:
        raise _fail(loc, "needs `require`, `pick` or `show` (it would say nothing)")
    if t.informative and (t.where or "mode" in raw):
        raise _fail(loc, "`where` and `mode` need `require` or `pick`")
    if mode == "any" and not t.require:
        raise _fail(loc, "`mode: any` needs `require`")
    if mode == "any" and t.show:
        raise _fail(
            loc, "`show` is not used with `mode: any` (list the values in an `each` target)"
        )
    return t


def parse_targets(raw: Any, source: str = "scenario") -> tuple[Target, ...]:
    """Validate a ``targets:`` block (None: no targets) into :class:`Target` entries."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _fail(f"{source}: targets", f"expected a list of targets, got {raw!r}")
    return tuple(_target(t, f"{source}: targets[{i}]") for i, t in enumerate(raw))


# ---------------------------------------------------------------- evaluation


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.4g}"


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def is_reference(label: str) -> bool:
    """Reference rows, also when a label carries a suffix (``retrain@5%``)."""
    return label.split("@", 1)[0] in REFERENCE_ROWS


class _Results:
    """Lookups of means, spreads and per-seed values in a results dict."""

    def __init__(self, results: dict):
        self.summary = {s["method"]: s for s in results.get("summary", [])}
        self.rows = results.get("rows", [])

    def methods(self) -> list[str]:
        return [label for label in self.summary if not is_reference(label)]

    def tags(self) -> list[str]:
        """The parts of the run (``@...`` label suffixes), in table order."""
        out: list[str] = []
        for label in self.summary:
            if "@" in label and (tag := "@" + label.split("@", 1)[1]) not in out:
                out.append(tag)
        return out

    def part(self, tag: str) -> _Results:
        """The rows of one part, their labels without the suffix."""
        sub = _Results({})
        sub.summary = {
            k.removesuffix(tag): {**s, "method": k.removesuffix(tag)}
            for k, s in self.summary.items()
            if k.endswith(tag)
        }
        sub.rows = [
            {**r, "method": r["method"].removesuffix(tag)}
            for r in self.rows
            if r["method"].endswith(tag)
        ]
        return sub

    def mean(self, label: str, metric: str) -> float | None:
        s = self.summary.get(label)
        return None if s is None else _finite(s["mean"].get(metric))

    def std(self, label: str, metric: str) -> float | None:
        s = self.summary.get(label)
        if s is None or s.get("n_seeds", 1) < 2:
            return None
        return _finite((s.get("std") or {}).get(metric))

    def seeds(self, label: str) -> dict[Any, dict]:
        return {r["seed"]: r["metrics"] for r in self.rows if r["method"] == label}

    def value(self, q: Quantity, label: str, get=None) -> float | None:
        """The quantity on row ``label``; ``get(label, metric)`` reads a value (means)."""
        get = get or self.mean
        v = get(label, q.metric)
        if v is None:
            return None
        if q.distance_to is not None:
            ref = q.distance_to
            ref = get(ref, q.metric) if isinstance(ref, str) else ref
            return None if ref is None else abs(v - ref)
        if q.times_less_than is not None:
            ref = get(q.times_less_than, q.metric)
            return None if ref is None or v == 0 else ref / v
        return v

    def per_seed(self, q: Quantity, label: str) -> list[float | None]:
        """The quantity seed by seed, each seed's rows paired with the same seed's."""
        out = []
        for seed in self.seeds(label):

            def get(lab: str, metric: str, seed=seed) -> float | None:
                return _finite(self.seeds(lab).get(seed, {}).get(metric))

            out.append(self.value(q, label, get))
        return out

    def show(self, q: Quantity, label: str) -> str:
        v = self.value(q, label)
        plain = q.distance_to is None and q.times_less_than is None
        text = f"{q.describe()}{'' if plain else ' ='} {_num(v)}"
        sd = self.std(label, q.metric)
        if v is not None and sd is not None and plain:
            text += f" ± {_num(sd)}"
        if q.per_seed:
            seeds = ", ".join(_num(x) for x in self.per_seed(q, label)) or _num(None)
            text += f" (per seed: {seeds})"
        return text


def _rhs(c: Condition, ref: float | None = None, with_value: bool = True) -> str:
    """The right-hand side of a condition: a number, or ``times x ROW's [value] + plus``."""
    if c.row is None:
        return _num(c.value)
    text = f"{c.row}'s" + (f" {_num(ref)}" if with_value else "")
    if c.times != 1.0:
        text = f"{c.times:g} x {text}"
    if c.plus:
        text += f" {'+' if c.plus > 0 else '-'} {abs(c.plus):g}"
    return text


def _judge(res: _Results, c: Condition, label: str) -> tuple[bool | None, str]:
    """(True / False, or None when a value is missing; the check's text)."""
    left = res.value(c.quantity, label)
    ref = None if c.row is None else res.value(c.quantity, c.row)
    if c.row is None:
        right = c.value
    else:
        right = None if ref is None else c.times * ref + c.plus
    rtext = _rhs(c, ref)
    if c.row is not None and (c.times != 1.0 or c.plus):
        rtext += f" = {_num(right)}"
    text = f"{res.show(c.quantity, label)} (target {_OPERATORS[c.op]} {rtext})"
    if left is None or right is None:
        return None, text
    ok = {
        "at_least": left >= right,
        "at_most": left <= right,
        "above": left > right,
        "below": left < right,
    }[c.op]
    return ok, text


def _all(res: _Results, conds: Sequence[Condition], label: str) -> tuple[bool | None, list[str]]:
    """All of ``conds`` on one row: False if one fails, else None if one is missing, else True."""
    verdicts, texts = [], []
    for c in conds:
        ok, text = _judge(res, c, label)
        verdicts.append(ok)
        texts.append(text)
    if False in verdicts:
        return False, texts
    return (None if None in verdicts else True), texts


def _status(ok: bool | None) -> str:
    return "missing" if ok is None else ("met" if ok else "NOT met")


def _row_text(res: _Results, t: Target, label: str, texts: list[str], why: str = "") -> str:
    parts = [*texts, *(res.show(q, label) for q in t.show)]
    return f"`{label}`{why}: " + "; ".join(parts)


def _with_note(t: Target, text: str) -> str:
    return f"{text} ({t.note})" if t.note else text


def _per_tag(res: _Results, t: Target) -> list[Outcome]:
    """Each base row judged on every part; met on at least ``t.per_tag`` parts."""
    tags = res.tags()
    if t.rows is not None:
        bases = list(t.rows)
    else:
        bases = []
        for label in res.methods():
            if (b := label.split("@", 1)[0]) not in bases:
                bases.append(b)
    if not tags or not bases:
        return [Outcome(t.name, "missing", _with_note(t, "no parts (`@` rows) to judge"))]
    out = []
    for base in bases:
        met, failed, missing = [], [], []
        for tag in tags:
            sub = res.part(tag)
            ok_where, _ = _all(sub, t.where, base)
            ok, texts = _all(sub, t.require, base) if ok_where else (ok_where, [])
            if ok:
                met.append(tag)
            elif ok is None:
                missing.append(tag)
            else:
                failed.append(f"{tag} ({'; '.join(texts) or 'outside `where`'})")
        if len(met) >= t.per_tag:
            status = "met"
        elif len(met) + len(missing) >= t.per_tag:
            status = "missing"
        else:
            status = "NOT met"
        text = f"`{base}`: {len(met)} of {len(tags)} parts meet it (needs {t.per_tag})"
        if failed:
            text += "; not on " + ", ".join(failed)
        if missing:
            text += "; missing on " + ", ".join(missing)
        out.append(Outcome(t.name, status, _with_note(t, text), base))
    if t.mode == "any":
        good = [o for o in out if o.status == "met"]
        if good:
            return [Outcome(t.name, "met", "by " + "; ".join(o.text for o in good))]
        status = "missing" if any(o.status == "missing" for o in out) else "NOT met"
        return [Outcome(t.name, status, "; ".join(o.text for o in out))]
    return out


def _evaluate_one(res: _Results, t: Target) -> list[Outcome]:
    if t.per_tag is not None:
        return _per_tag(res, t)
    labels = list(t.rows) if t.rows is not None else res.methods()
    if t.informative:
        text = "; ".join(_row_text(res, t, label, []) for label in labels) or "no rows"
        return [Outcome(t.name, "info", _with_note(t, text))]
    if not labels:
        return [Outcome(t.name, "missing", _with_note(t, "no rows to judge"))]

    skipped_missing = False
    candidates = []
    for label in labels:
        ok, _ = _all(res, t.where, label)
        if ok is None:
            skipped_missing = True
        elif ok:
            candidates.append(label)

    if t.pick is not None:
        how, metric = t.pick
        scored = [(res.mean(label, metric), label) for label in candidates]
        skipped_missing |= any(v is None for v, _ in scored)
        scored = [(v, label) for v, label in scored if v is not None]
        if not scored:
            status = "missing" if skipped_missing else "NOT met"
            text = "no row meets " + "; ".join(_describe_conds(t.where)) if t.where else "no row"
            return [Outcome(t.name, status, _with_note(t, text))]
        pick_fn = min if how == "lowest" else max
        best = pick_fn(scored, key=lambda x: x[0])[1]  # the first of equal values
        ok, texts = _all(res, t.require, best)
        _, where_texts = _all(res, t.where, best)
        text = _row_text(res, t, best, [*where_texts, *texts], f" ({how} {metric})")
        others = [c for c in candidates if c != best]
        if t.where and others:
            text += "; also meeting the conditions: " + ", ".join(f"`{c}`" for c in others)
        return [Outcome(t.name, _status(ok), _with_note(t, text), best)]

    if t.mode == "any":
        verdicts = {label: _all(res, t.require, label)[0] for label in candidates}
        met = [label for label, ok in verdicts.items() if ok]
        skipped_missing |= None in verdicts.values()
        if met:
            text = "by " + ", ".join(f"`{m}`" for m in met)
            return [Outcome(t.name, "met", _with_note(t, text))]
        status = "missing" if skipped_missing else "NOT met"
        text = "no row of " + ", ".join(f"`{c}`" for c in labels) + " meets it"
        return [Outcome(t.name, status, _with_note(t, text))]

    out = []
    for label in labels:
        if label not in candidates:
            continue
        ok, texts = _all(res, t.require, label)
        out.append(
            Outcome(t.name, _status(ok), _with_note(t, _row_text(res, t, label, texts)), label)
        )
    if not out:
        status = "missing" if skipped_missing else "NOT met"
        out.append(Outcome(t.name, status, _with_note(t, "no row meets the `where` conditions")))
    return out


def _describe_conds(conds: Sequence[Condition]) -> list[str]:
    out = []
    for c in conds:
        out.append(f"{c.quantity.describe()} {_OPERATORS[c.op]} {_rhs(c, with_value=False)}")
    return out


def evaluate(targets: Sequence[Target], results: dict) -> list[Outcome]:
    """Judge every target on ``results`` (a results dict: ``summary`` and ``rows``)."""
    res = _Results(results)
    return [o for t in targets for o in _evaluate_one(res, t)]


def target_lines(results: dict, raw: Any = None, source: str | None = None) -> list[str]:
    """Markdown list lines of the targets ``raw`` (default: the scenario's own block)."""
    if raw is None:
        raw = (results.get("scenario") or {}).get("targets")
    name = source or str(results.get("scenario_name", "scenario"))
    return [o.line() for o in evaluate(parse_targets(raw, name), results)]
