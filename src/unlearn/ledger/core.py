"""The deletion ledger: requests, their processing, and a hash-chained record of both.

Every event is an *entry*: the model's registration, each request received, each
request processed (or refused), each retrain a policy asked for. An entry holds
its sequence number, time, kind, model, request id, a JSON body and the hash of
the entry before it; its own hash is the SHA-256 of all of these, so changing any
byte of any entry, or removing or reordering entries, breaks the chain from there
on. The ``requests`` and ``models`` tables hold the current state (status, the
model's current content hash, the samples removed so far); they are derived from
the entries and :meth:`Ledger.verify` checks that they agree.

Processing one request (crash safety):

1. *claim*: one transaction marks the oldest pending request of a model that has
   none in progress ``processing``, with this process's host, pid and start time;
2. the method runs on the model file; the result is written beside it as
   ``MODEL.staged-ID`` (itself written through a temporary file and a rename);
3. *commit*: one transaction appends the ``request_processed`` entry, marks the
   request done and sets the model's current hash to the staged file's;
4. the staged file replaces the model file (``os.replace``: atomic), then the
   certificate is written.

A process killed before 3 leaves the request ``processing`` under a dead claim;
the next :meth:`Ledger.process` (or :meth:`Ledger.recover`) puts it back to
pending and deletes the staged file. Killed between 3 and 4, the ledger already
records the new hash and the staged file holds it: recovery finishes the
replacement. The model file is at every moment either the old or the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import LedgerError, UnlearnError
from .handlers import file_sha256, handler_for, scenario_family, selector_request
from .store import SCHEMA_VERSION, Store, open_store

__all__ = ["Ledger", "VerifyReport", "canonical", "entry_hash", "GENESIS", "parse_threshold"]

GENESIS = "0" * 64
ENTRY_COLUMNS = ("seq", "at", "kind", "model", "request_id", "body", "prev_hash", "hash")
#: how long a claim by a process on another host is honoured (seconds; same-host claims
#: are checked against the claiming process itself)
DEFAULT_LEASE_S = 6 * 3600
#: fault injection for the crash tests: the stage at which ``process`` kills itself
CRASH_ENV = "UNLEARN_LEDGER_CRASH_AT"
CRASH_STAGES = ("claimed", "computed", "staged", "committed", "replaced")
#: the subject of the retrains a policy queues (reserved; they are processed first)
POLICY_SUBJECT = "policy"
#: what a retrain (which forgets no new samples) measures
RETRAIN_METRICS = ("test_acc", "removed_mia_auc", "removed_inverted_acc")
#: the metrics a threshold may name, and which way is better
THRESHOLD_METRICS = {
    "test_acc": "higher",
    "forget_acc": "lower",
    "mia_auc": "lower",
    "removed_mia_auc": "lower",
    "mia_efficacy": "higher",
    "epsilon": "lower",
    # generators (unlearn.ledger.generator)
    "forget_above_floor": "lower",
    "forget_inverted_acc": "lower",
    "removed_inverted_acc": "lower",
}


def canonical(obj: Any) -> str:
    """The one JSON text of ``obj`` that is hashed and signed (sorted keys, no spaces)."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def entry_hash(seq: int, at: str, kind: str, model: str, request_id, body: str, prev: str) -> str:
    text = canonical([int(seq), at, kind, model, request_id, body, prev])
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _version() -> dict:
    import platform

    import torch

    from .. import __version__

    return {"unlearn": __version__, "torch": torch.__version__, "python": platform.python_version()}


def _me() -> str:
    import psutil

    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{psutil.Process(pid).create_time():.3f}"


def _claim_alive(claim, claimed_at, lease_s: float) -> bool:
    """Whether the process that claimed a request may still be working on it. A claim
    that does not parse, or is dated in the future, is dead; a process we may not
    inspect is taken to be alive."""
    import psutil

    try:
        host, pid, started = str(claim).rsplit(":", 2)
        pid_i, started_f, at = int(pid), float(started), float(claimed_at)
    except (TypeError, ValueError):
        return False
    now = time.time()
    if at > now + 60:
        return False
    if host != socket.gethostname():
        return now - at < lease_s
    try:
        proc = psutil.Process(pid_i)
        return abs(proc.create_time() - started_f) < 1e-2 and proc.status() != "zombie"
    except psutil.AccessDenied:
        return True
    except psutil.NoSuchProcess:
        return False


def _crash_point(stage: str) -> None:
    if os.environ.get(CRASH_ENV) == stage:
        os._exit(137)


def parse_threshold(text: str) -> tuple[str, dict]:
    """``"mia_auc<=60"`` -> ``("mia_auc", {"at_most": 60.0})``."""
    for op, key in (("<=", "at_most"), (">=", "at_least")):
        if op in text:
            name, _, value = text.partition(op)
            name = name.strip()
            if name not in THRESHOLD_METRICS:
                raise LedgerError(
                    f"threshold {text!r}: unknown metric {name!r} "
                    f"(one of {', '.join(THRESHOLD_METRICS)})"
                )
            try:
                v = float(value)
            except ValueError:
                raise LedgerError(f"threshold {text!r}: {value!r} is not a number") from None
            return name, {key: v}
    raise LedgerError(f"threshold {text!r} must read METRIC<=VALUE or METRIC>=VALUE")


def check_thresholds(thresholds: dict) -> dict:
    if not isinstance(thresholds, dict):
        raise LedgerError(f"thresholds must be a mapping, got {thresholds!r}")
    out = {}
    for name, rule in thresholds.items():
        if name not in THRESHOLD_METRICS:
            raise LedgerError(f"threshold on unknown metric {name!r}")
        if not isinstance(rule, dict) or not rule or set(rule) - {"at_most", "at_least"}:
            raise LedgerError(f"threshold {name}: give at_most and/or at_least, got {rule!r}")
        out[name] = {k: float(v) for k, v in rule.items()}
    return out


def judge(metrics: dict, thresholds: dict) -> list[str]:
    """The thresholds ``metrics`` miss, each as a sentence (empty: all met)."""
    misses = []
    for name, rule in sorted(thresholds.items()):
        if name not in metrics:
            misses.append(f"{name} was not measured (threshold {rule})")
            continue
        v = float(metrics[name])
        if "at_most" in rule and v > rule["at_most"]:
            misses.append(f"{name} {v:.4g} above its threshold {rule['at_most']:.4g}")
        if "at_least" in rule and v < rule["at_least"]:
            misses.append(f"{name} {v:.4g} below its threshold {rule['at_least']:.4g}")
    return misses


def check_policy(policy: Any) -> dict:
    """``{retrain_if: {test_acc_drop: POINTS, epsilon_total: EPS, thresholds_missed: true}}``."""
    if policy is None:
        return {}
    if not isinstance(policy, dict) or set(policy) - {"retrain_if"}:
        raise LedgerError(f"a policy is {{retrain_if: {{...}}}}, got {policy!r}")
    rules = policy.get("retrain_if", {})
    known = {"test_acc_drop", "epsilon_total", "thresholds_missed"}
    if not isinstance(rules, dict) or set(rules) - known:
        raise LedgerError(f"retrain_if takes {', '.join(sorted(known))}; got {rules!r}")
    out = {}
    for k, v in rules.items():
        if k == "thresholds_missed":
            if not isinstance(v, bool):
                raise LedgerError("retrain_if.thresholds_missed must be true or false")
            out[k] = v
        else:
            if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
                raise LedgerError(f"retrain_if.{k} must be a positive number, got {v!r}")
            out[k] = float(v)
    return {"retrain_if": out}


def initial_state(registration: dict) -> dict:
    """A registered model's state before any request (the models table's row)."""
    return {
        **registration,
        "removed": [],
        "reference_test_acc": registration["metrics"]["test_acc"],
        "epsilon_since_retrain": 0.0,
        "retrains": 0,
    }


@dataclass
class VerifyReport:
    ok: bool
    problems: list[str] = field(default_factory=list)
    checked: dict = field(default_factory=dict)

    def text(self) -> str:
        head = (
            "ledger verified" if self.ok else f"ledger FAILED verification ({len(self.problems)})"
        )
        lines = [head] + [f"  - {p}" for p in self.problems]
        lines += [f"  {k}: {v}" for k, v in self.checked.items()]
        return "\n".join(lines)


class Ledger:
    """A deletion ledger in the folder ``root`` (certificates, signing key) with its
    database in ``root/ledger.sqlite`` or at a PostgreSQL URL (``db``)."""

    def __init__(self, root: str | Path, db: str | None = None, lease_s: float = DEFAULT_LEASE_S):
        self.root = Path(root)
        if not self.root.is_dir():
            raise LedgerError(f"ledger folder {self.root} does not exist (create it with init)")
        self.db_url = db or str(self.root / "ledger.sqlite")
        if db is None and not Path(self.db_url).is_file():
            raise LedgerError(f"{self.root} holds no ledger.sqlite: not a ledger folder")
        self.store: Store = open_store(self.db_url)
        with self.store.read() as tx:
            rows = tx.q("SELECT value FROM meta WHERE key = 'format'") if self._has_meta(tx) else []
        if not rows or rows[0][0] != f"unlearn-ledger {SCHEMA_VERSION}":
            self.store.close()
            raise LedgerError(f"{self.db_url} is not an unlearn ledger (no format record)")
        self.lease_s = lease_s
        self._handlers: dict[str, Any] = {}

    @staticmethod
    def _has_meta(tx) -> bool:
        try:
            tx.q("SELECT 1 FROM meta LIMIT 1")
            return True
        except LedgerError:
            return False

    # -- creation ----------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, db: str | None = None, sign: bool = False) -> Ledger:
        """A new, empty ledger in ``root`` (created; must be empty or absent). On any
        error the folder is left as it was (removed again if this call made it)."""
        import shutil

        root = Path(root)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise LedgerError(f"{root} exists and is not an empty folder")
        made = not root.exists()
        if db is not None:  # a shared database must not hold a ledger already
            store = open_store(db)
            try:
                store.create_tables()
                with store.read() as tx:
                    if tx.q("SELECT 1 FROM meta WHERE key = 'format'"):
                        raise LedgerError(f"the database {db} already holds a ledger")
            finally:
                store.close()
        try:
            root.mkdir(parents=True, exist_ok=True)
            (root / "certificates").mkdir()
            store = open_store(db or str(root / "ledger.sqlite"))
            try:
                store.create_tables()
                public = None
                if sign:
                    from .certificate import new_signing_key

                    public = new_signing_key(root / "signing_key.pem")
                with store.write() as tx:
                    if tx.q("SELECT 1 FROM meta WHERE key = 'format'"):
                        raise LedgerError(f"the database {db} already holds a ledger")
                    tx.q(
                        "INSERT INTO meta VALUES ('format', ?)",
                        (f"unlearn-ledger {SCHEMA_VERSION}",),
                    )
                    tx.q("INSERT INTO meta VALUES ('created', ?)", (_now(),))
                    tx.q("INSERT INTO meta VALUES ('public_key', ?)", (public or "",))
            finally:
                store.close()
            if db is not None:
                (root / "database.txt").write_text(db + "\n")
        except BaseException:
            if made:
                shutil.rmtree(root, ignore_errors=True)
            else:
                for child in root.iterdir():
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            raise
        return cls(root, db)

    @classmethod
    def open(cls, root: str | Path, db: str | None = None) -> Ledger:
        root = Path(root)
        if db is None and (root / "database.txt").is_file():
            db = (root / "database.txt").read_text().strip()
        return cls(root, db)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- entries -----------------------------------------------------------------------
    def _append(self, tx, kind: str, model: str, request_id: str | None, body: dict) -> tuple:
        head = tx.q("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1")
        seq, prev = (head[0][0] + 1, head[0][1]) if head else (1, GENESIS)
        at, text = _now(), canonical(body)
        h = entry_hash(seq, at, kind, model, request_id, text, prev)
        tx.q(
            "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, at, kind, model, request_id, text, prev, h),
        )
        return seq, h

    def entries(self) -> list[dict]:
        with self.store.read() as tx:
            rows = tx.q(f"SELECT {', '.join(ENTRY_COLUMNS)} FROM entries ORDER BY seq")
        return [dict(zip(ENTRY_COLUMNS, r, strict=True)) for r in rows]

    def public_key(self) -> str | None:
        with self.store.read() as tx:
            rows = tx.q("SELECT value FROM meta WHERE key = 'public_key'")
        return rows[0][0] or None if rows else None

    # -- models ------------------------------------------------------------------------
    def register_model(
        self,
        name: str,
        path: str | Path,
        scenario: str | Path,
        *,
        seed: int = 0,
        family: str | None = None,
        policy: dict | None = None,
        thresholds: dict | None = None,
    ) -> str:
        """Register the model file ``path`` (trained by ``scenario`` with ``seed``); the
        family is the scenario's (its ``kind``) unless given."""
        if not isinstance(name, str) or not name or len(name) > 100 or not name.isprintable():
            raise LedgerError(f"a model name must be a short printable string, got {name!r}")
        path, scenario = Path(path).resolve(), Path(scenario).resolve()
        if not path.is_file():
            raise LedgerError(f"model file {path} does not exist")
        if not scenario.is_file():
            raise LedgerError(f"scenario file {scenario} does not exist")
        if family is None:
            family = scenario_family(scenario)
        reg = {
            "name": name,
            "path": str(path),
            "family": family,
            "scenario": {"path": str(scenario), "sha256": file_sha256(scenario)},
            "seed": int(seed),
            "policy": check_policy(policy),
            "thresholds": check_thresholds(thresholds or {}),
            # the certificates' key, chained (the meta table is not)
            "ledger_public_key": self.public_key(),
        }
        handler = handler_for(reg)
        model = handler.load(path)  # refuses a checkpoint of another architecture
        reg["data_sha256"] = handler.data_sha256
        reg["hash"] = file_sha256(path)
        reg["metrics"] = handler.metrics(model, [], set())
        reg["version"] = _version()
        state = initial_state(reg)
        with self.store.write() as tx:
            if tx.q("SELECT 1 FROM models WHERE name = ?", (name,)):
                raise LedgerError(f"a model named {name!r} is already registered")
            if any(json.loads(b)["path"] == str(path) for (b,) in tx.q("SELECT body FROM models")):
                raise LedgerError(f"{path} is already registered under another name")
            self._append(tx, "model_registered", name, None, reg)
            tx.q("INSERT INTO models VALUES (?, ?, ?)", (name, canonical(state), reg["hash"]))
        return name

    def model_state(self, name: str) -> dict:
        with self.store.read() as tx:
            rows = tx.q("SELECT body, current_hash FROM models WHERE name = ?", (name,))
        if not rows:
            raise LedgerError(f"no model named {name!r} in the ledger")
        state = json.loads(rows[0][0])
        state["current_hash"] = rows[0][1]
        return state

    def _handler(self, state: dict):
        if state["name"] not in self._handlers:
            self._handlers[state["name"]] = handler_for(state)
        return self._handlers[state["name"]]

    # -- requests ----------------------------------------------------------------------
    def add(
        self,
        subject: str,
        model: str,
        selector: dict,
        method: str = "auto",
        config: dict | None = None,
        thresholds: dict | None = None,
    ) -> str:
        """Record a deletion request; returns its id (``r000001``...). Checks the subject,
        selector, method and config now; which samples it names is resolved when it is
        processed (earlier requests may remove some first)."""
        from ..methods.base import get_method

        if not isinstance(subject, str) or not subject.strip() or len(subject) > 200:
            raise LedgerError(f"a request needs a data subject (a short string), got {subject!r}")
        if subject == POLICY_SUBJECT:
            raise LedgerError(f"the subject {POLICY_SUBJECT!r} is reserved for the retrain policy")
        sel = selector_request(selector)
        state = self.model_state(model)
        if config is not None and not isinstance(config, dict):
            raise LedgerError(f"config must be a mapping, got {type(config).__name__}")
        handler = self._handler(state)
        handler.check_selector(sel)
        if method == "auto":
            method = handler.auto_methods[next(iter(sel))]
        if method == "retrain":
            raise LedgerError("retrain is what a policy asks for; request an unlearning method")
        try:
            built = get_method(method, config, family=state["family"])
        except UnlearnError as exc:
            raise LedgerError(f"method {method!r}: {exc}") from None
        serves = type(built).families()
        if state["family"] not in serves:
            raise LedgerError(
                f"method {method!r} does not serve {state['family']} models "
                f"(it serves: {', '.join(sorted(serves))})"
            )
        th = check_thresholds({**state["thresholds"], **(thresholds or {})})
        return self._enqueue(model, subject, sel, method, config or {}, th)

    def _enqueue(self, model, subject, sel, method, config, th, tx=None, reason=None) -> str:
        def go(tx) -> str:
            row = tx.q("SELECT MAX(num) FROM requests")
            num = (row[0][0] or 0) + 1
            rid = f"r{num:06d}"
            body = {
                "id": rid,
                "subject": subject,
                "model": model,
                "selector": sel,
                "method": method,
                "config": config,
                "thresholds": th,
                "seed": num,
            }
            if reason is not None:
                body["reason"] = reason
            self._append(tx, "request_added", model, rid, {"request": body, "by": _me()})
            tx.q(
                "INSERT INTO requests VALUES (?, ?, ?, ?, 'pending', ?, NULL, NULL, NULL)",
                (num, rid, model, subject, canonical(body)),
            )
            return rid

        if tx is not None:
            return go(tx)
        with self.store.write() as t:
            return go(t)

    def requests(self, model: str | None = None) -> list[dict]:
        sql = "SELECT id, status, body, claimed_by, entry_seq FROM requests"
        args: tuple = ()
        if model is not None:
            sql, args = sql + " WHERE model = ?", (model,)
        with self.store.read() as tx:
            rows = tx.q(sql + " ORDER BY num", args)
        return [
            {**json.loads(b), "status": s, "claimed_by": c, "entry_seq": e}
            for _, s, b, c, e in rows
        ]

    # -- processing --------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Put requests claimed by dead processes back to pending, delete their staged
        files, finish a model replacement a killed process committed but did not do,
        and write missing certificates. Returns what it did, one line each."""
        done: list[str] = []
        with self.store.write() as tx:
            for rid, claim, at, body in tx.q(
                "SELECT id, claimed_by, claimed_at, body FROM requests WHERE status='processing'"
            ):
                if _claim_alive(claim, at, self.lease_s):
                    continue
                tx.q(
                    "UPDATE requests SET status='pending', claimed_by=NULL, claimed_at=NULL "
                    "WHERE id = ?",
                    (rid,),
                )
                try:
                    model = json.loads(body)["model"]
                    (mbody,) = tx.q("SELECT body FROM models WHERE name = ?", (model,))[0]
                    _staged(Path(json.loads(mbody)["path"]), rid, claim).unlink(missing_ok=True)
                except (KeyError, IndexError, TypeError, ValueError):
                    pass  # a row verify reports; its claim is released all the same
                done.append(f"{rid}: its claim ({claim}) died; back to pending")
        for state in self._all_models():
            if self._complete_replacement(state):
                done.append(f"{state['name']}: finished replacing the model file")
        for req in self.requests():
            cert = self._cert_path(req["id"])
            if req["status"] in ("done", "failed") and not (
                cert.is_file() and cert.with_suffix(".html").is_file()
            ):
                self._write_certificate(req["id"])
                done.append(f"{req['id']}: certificate written")
        return done

    def _complete_replacement(self, state: dict) -> bool:
        """Finish a replacement the last commit recorded: the staged file it names holds
        the model the ledger records, the model file does not. True if it was done here."""
        path, want = Path(state["path"]), state["current_hash"]
        if path.is_file() and file_sha256(path) == want:
            return False
        with self.store.read() as tx:
            rows = tx.q(
                "SELECT body FROM entries WHERE model = ? AND kind IN "
                "('request_processed', 'retrain') ORDER BY seq DESC LIMIT 1",
                (state["name"],),
            )
        if not rows:
            return False
        staged = path.with_name(json.loads(rows[0][0]).get("staged", ""))
        if staged == path or not staged.is_file() or file_sha256(staged) != want:
            return False
        try:
            os.replace(staged, path)
        except FileNotFoundError:  # another process finished it first
            pass
        return path.is_file() and file_sha256(path) == want

    def _all_models(self) -> list[dict]:
        with self.store.read() as tx:
            rows = tx.q("SELECT body, current_hash FROM models ORDER BY name")
        return [{**json.loads(b), "current_hash": h} for b, h in rows]

    def _claim(self, model: str | None) -> dict | None:
        me = _me()
        checked: set[str] = set()
        with self.store.write() as tx:
            busy = {m for (m,) in tx.q("SELECT model FROM requests WHERE status='processing'")}
            sql = "SELECT id, model, body FROM requests WHERE status='pending'"
            args: list = []
            if model is not None:
                sql += " AND model = ?"
                args.append(model)
            # a retrain the policy queued comes before the requests that wait behind it
            sql += " ORDER BY subject = ? DESC, num"
            for rid, m, body in tx.q(sql, [*args, POLICY_SUBJECT]):
                if m in busy or m in checked:
                    continue
                checked.add(m)
                # a commit whose file replacement is still to do leaves the model busy
                # until it is done; a file nobody can account for stops processing
                (mb, cur) = tx.q("SELECT body, current_hash FROM models WHERE name = ?", (m,))[0]
                state = {**json.loads(mb), "current_hash": cur}
                mpath = Path(state["path"])
                if not (mpath.is_file() and file_sha256(mpath) == cur):
                    if not self._complete_replacement(state):
                        have = file_sha256(mpath)[:16] + "..." if mpath.is_file() else "missing"
                        raise LedgerError(
                            f"model file {mpath} is not the one the ledger records (sha256 "
                            f"{have}, recorded {cur[:16]}...): it was changed outside the "
                            "ledger; nothing was processed"
                        )
                # the oldest pending request of a model that has none in progress: a
                # model's requests are processed one at a time, in the order they came
                tx.q(
                    "UPDATE requests SET status='processing', claimed_by=?, claimed_at=? "
                    "WHERE id = ? AND status='pending'",
                    (me, time.time(), rid),
                )
                return {**json.loads(body), "claimed_by": me}
        return None

    def _release(self, req: dict) -> None:
        """Give back a claim whose processing stopped before its commit."""
        with self.store.write() as tx:
            rows = tx.q(
                "UPDATE requests SET status='pending', claimed_by=NULL, claimed_at=NULL "
                "WHERE id = ? AND status='processing' AND claimed_by = ? RETURNING id",
                (req["id"], req["claimed_by"]),
            )
        if rows:
            state = self.model_state(req["model"])
            _staged(Path(state["path"]), req["id"], req["claimed_by"]).unlink(missing_ok=True)

    def process(self, max_requests: int | None = None, model: str | None = None) -> list[str]:
        """Process pending requests one at a time, oldest first (after :meth:`recover`);
        returns the ids processed (done or failed)."""
        self.recover()
        out: list[str] = []
        while max_requests is None or len(out) < max_requests:
            req = self._claim(model)
            if req is None:
                break
            _crash_point("claimed")
            try:
                self._process_one(req)
            except BaseException:
                self._release(req)
                raise
            out.append(req["id"])
        return out

    def _process_one(self, req: dict) -> None:
        rid = req["id"]
        state = self.model_state(req["model"])
        path = Path(state["path"])
        before = file_sha256(path) if path.is_file() else None
        if before != state["current_hash"]:
            raise LedgerError(
                f"model file {path} is not the one the ledger records (sha256 "
                f"{(before or 'missing')[:16]}..., recorded {state['current_hash'][:16]}...): "
                "it was changed outside the ledger; nothing was processed"
            )
        removed = set(state["removed"])
        # a model or scenario that cannot be loaded is the ledger's problem, not the
        # request's: it raises (the claim is released), it does not refuse the request
        handler = self._handler(state)
        model = handler.load(path) if req["method"] != "retrain" else None
        try:
            start = time.perf_counter()
            if req["method"] == "retrain":
                ids: list[int] = []
                seed = state["seed"] + 1000 * (state["retrains"] + 1)
                new, info = handler.retrain(removed, seed)
                record = {"method": "retrain", "seed": seed, "config": {}, **info}
            else:
                ids = handler.resolve(req["selector"], removed)
                if len(ids) >= len(handler.train) - len(removed):
                    raise LedgerError("the request would remove every remaining training sample")
                new, rec = handler.unlearn(
                    model,
                    req["selector"],
                    ids,
                    removed,
                    req["method"],
                    req["config"] or None,
                    req["seed"],
                )
                record = {
                    "method": rec.method,
                    "seed": req["seed"],
                    "config": rec.config,
                    "seconds": rec.seconds,
                    "steps": rec.steps,
                    **({"extra": _plain(rec.extra)} if rec.extra else {}),
                }
            metrics = handler.metrics(new, ids, removed | set(ids))
            eps = _epsilon(record)
            if eps is not None:
                metrics["epsilon"] = eps
        except UnlearnError as exc:
            self._finish_failed(req, str(exc))
            return
        _crash_point("computed")
        staged = _staged(path, rid, req["claimed_by"])
        handler.save(new, staged)
        _fsync(staged)
        after = file_sha256(staged)
        _crash_point("staged")
        misses = judge(metrics, req["thresholds"])
        body = {
            "request": {k: v for k, v in req.items() if k != "claimed_by"},
            "samples": ids,
            "hash_before": before,
            "hash_after": after,
            "run": record,
            "metrics": metrics,
            "thresholds": req["thresholds"],
            "passed": not misses,
            "misses": misses,
            "wall_seconds": time.perf_counter() - start,
            "version": _version(),
            "by": req["claimed_by"],
            "staged": staged.name,
        }
        kind = "retrain" if req["method"] == "retrain" else "request_processed"
        with self.store.write() as tx:
            rows = tx.q("SELECT status, claimed_by FROM requests WHERE id = ?", (rid,))
            if rows != [("processing", req["claimed_by"])]:
                raise LedgerError(f"{rid}: the claim was lost while processing; nothing committed")
            (cur,) = tx.q("SELECT current_hash FROM models WHERE name = ?", (req["model"],))[0]
            if cur != before:
                raise LedgerError(f"{rid}: the model moved on while processing; nothing committed")
            seq, _ = self._append(tx, kind, req["model"], rid, body)
            tx.q(
                "UPDATE requests SET status='done', entry_seq=?, claimed_by=NULL WHERE id = ?",
                (seq, rid),
            )
            new_state = self._next_state(state, ids, metrics, kind)
            trigger = self._policy_trigger(state, new_state, metrics, misses, kind)
            queued = tx.q(
                "SELECT 1 FROM requests WHERE model = ? AND subject = ? AND status = 'pending'",
                (req["model"], POLICY_SUBJECT),
            )
            if trigger is not None and not queued:
                kept = {k: v for k, v in state["thresholds"].items() if k in RETRAIN_METRICS}
                self._enqueue(
                    req["model"], "policy", {}, "retrain", {}, kept, tx=tx, reason=trigger
                )
            st = {k: v for k, v in new_state.items() if k != "current_hash"}
            tx.q(
                "UPDATE models SET body = ?, current_hash = ? WHERE name = ?",
                (canonical(st), after, req["model"]),
            )
        _crash_point("committed")
        try:
            os.replace(staged, path)
        except FileNotFoundError:  # recovery in another process finished it first
            if file_sha256(path) != after:
                raise
        _crash_point("replaced")
        self._write_certificate(rid)

    @staticmethod
    def _next_state(state: dict, ids: list[int], metrics: dict, kind: str) -> dict:
        new = dict(state)
        new["removed"] = sorted(set(state["removed"]) | set(ids))
        if kind == "retrain":
            new["retrains"] = state["retrains"] + 1
            new["reference_test_acc"] = metrics["test_acc"]
            new["epsilon_since_retrain"] = 0.0
        else:
            new["epsilon_since_retrain"] = state["epsilon_since_retrain"] + metrics.get(
                "epsilon", 0.0
            )
        return new

    @staticmethod
    def _policy_trigger(state, new_state, metrics, misses, kind) -> dict | None:
        """The rule that asks for a full retrain after this step, if any (never right
        after a retrain: the retrained model is the reference)."""
        rules = state["policy"].get("retrain_if", {})
        if kind == "retrain" or not rules:
            return None
        drop = new_state["reference_test_acc"] - metrics["test_acc"]
        if "test_acc_drop" in rules and drop > rules["test_acc_drop"]:
            return {"rule": "test_acc_drop", "value": drop, "limit": rules["test_acc_drop"]}
        eps = new_state["epsilon_since_retrain"]
        if "epsilon_total" in rules and eps > rules["epsilon_total"]:
            return {"rule": "epsilon_total", "value": eps, "limit": rules["epsilon_total"]}
        if rules.get("thresholds_missed") and misses:
            return {"rule": "thresholds_missed", "value": misses}
        return None

    def _finish_failed(self, req: dict, error: str) -> None:
        with self.store.write() as tx:
            seq, _ = self._append(
                tx,
                "request_failed",
                req["model"],
                req["id"],
                {
                    "request": {k: v for k, v in req.items() if k != "claimed_by"},
                    "error": error,
                    "version": _version(),
                },
            )
            tx.q(
                "UPDATE requests SET status='failed', entry_seq=?, claimed_by=NULL WHERE id = ?",
                (seq, req["id"]),
            )
        self._write_certificate(req["id"])

    # -- certificates ------------------------------------------------------------------
    def _cert_path(self, rid: str) -> Path:
        return self.root / "certificates" / f"{rid}.json"

    def _write_certificate(self, rid: str) -> Path:
        from .certificate import build_certificate, write_certificate

        with self.store.read() as tx:
            rows = tx.q(
                f"SELECT {', '.join(ENTRY_COLUMNS)} FROM entries WHERE seq = "
                "(SELECT entry_seq FROM requests WHERE id = ?)",
                (rid,),
            )
        if not rows:
            raise LedgerError(f"{rid} has not been processed")
        entry = dict(zip(ENTRY_COLUMNS, rows[0], strict=True))
        key = self.root / "signing_key.pem"
        cert = build_certificate(entry, self.db_url, key if key.is_file() else None)
        return write_certificate(cert, self._cert_path(rid))

    # -- reading -----------------------------------------------------------------------
    def status(self) -> dict:
        models = {}
        for state in self._all_models():
            reqs = self.requests(state["name"])
            counts: dict[str, int] = {}
            for r in reqs:
                counts[r["status"]] = counts.get(r["status"], 0) + 1
            models[state["name"]] = {
                "path": state["path"],
                "hash": state["current_hash"],
                "removed": len(state["removed"]),
                "retrains": state["retrains"],
                "reference_test_acc": state["reference_test_acc"],
                "requests": counts,
            }
        trail = []
        for e in self.entries():
            if e["kind"] in ("request_processed", "retrain"):
                b = json.loads(e["body"])
                trail.append(
                    {
                        "request": e["request_id"],
                        "kind": e["kind"],
                        "model": e["model"],
                        "passed": b["passed"],
                        **b["metrics"],
                    }
                )
        return {
            "ledger": str(self.root),
            "database": self.db_url,
            "models": models,
            "processed": trail,
        }

    def export(self, out: str | Path) -> Path:
        from ..io import atomic_write_text

        data = {
            "format": f"unlearn-ledger-export {SCHEMA_VERSION}",
            "database": self.db_url,
            "public_key": self.public_key(),
            "entries": self.entries(),
            "requests": self.requests(),
            "models": self._all_models(),
        }
        out = Path(out)
        if not out.parent.is_dir():
            raise LedgerError(f"folder {out.parent} does not exist")
        atomic_write_text(out, json.dumps(data, indent=1, sort_keys=True) + "\n")
        return out

    def verify(self) -> VerifyReport:
        from .verify import verify_ledger

        return verify_ledger(self)


def _staged(path: Path, rid: str, claim: str) -> Path:
    """Where a claim writes its result: beside the model (so the rename is atomic), named
    by the request and the claim (two claims of one request never share a file)."""
    token = hashlib.sha256(str(claim).encode()).hexdigest()[:12]
    return path.with_name(f"{path.name}.staged-{rid}-{token}")


def _fsync(path: Path) -> None:
    """Flush ``path`` and its folder to disk before the commit that names it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _epsilon(record: dict) -> float | None:
    extra = record.get("extra") or {}
    for key in ("epsilon", "certified_epsilon"):
        if isinstance(extra.get(key), int | float):
            return float(extra[key])
    return None


def _plain(obj: Any) -> Any:
    """``obj`` as plain JSON values (numpy scalars and arrays converted; NaN refused)."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating | float):
        v = float(obj)
        return v if np.isfinite(v) else str(v)
    if obj is None or isinstance(obj, str | int | bool):
        return obj
    return str(obj)
