"""Checking a whole ledger: the hash chain, the state it implies, the model files and
the certificates, each problem named by the entry, request, file or field at fault."""

from __future__ import annotations

import json
from pathlib import Path

from .certificate import ENTRY_KEYS, _diff, check_certificate
from .core import GENESIS, Ledger, VerifyReport, entry_hash, initial_state, judge
from .handlers import file_sha256

__all__ = ["verify_ledger"]


def _label(e: dict) -> str:
    rid = f", {e['request_id']}" if e.get("request_id") else ""
    return f"entry {e['seq']} ({e['kind']}{rid})"


def _json_diff(a_text: str, b_text: str) -> list[str]:
    try:
        return _diff(json.loads(a_text), json.loads(b_text))
    except (TypeError, json.JSONDecodeError):
        return ["body (not valid JSON)"]


def _what_changed(e: dict, cert: dict | None, tables: dict) -> str:
    """The fields of an altered entry that differ from a copy held elsewhere."""
    if (
        cert is not None
        and isinstance(cert.get("entry"), dict)
        and cert["entry"].get("seq") == e["seq"]
    ):
        copy = cert["entry"]
        fields = []
        for k in ENTRY_KEYS:
            if k == "body" and isinstance(copy.get(k), str) and copy[k] != e[k]:
                fields += [f"body.{p}" for p in _json_diff(e[k], copy[k])]
            elif copy.get(k) != e[k]:
                fields.append(k)
        if fields:
            return f"; against its certificate's copy, changed: {', '.join(fields)}"
    if e["kind"] == "request_added" and e["request_id"] in tables["requests"]:
        try:
            here = json.loads(e["body"])["request"]
            there = json.loads(tables["requests"][e["request_id"]]["body"])
            fields = _diff(here, there)
            if fields:
                return f"; against the requests table, changed: request.{', request.'.join(fields)}"
        except (KeyError, TypeError, json.JSONDecodeError):
            return "; its body is no longer valid JSON"
    try:
        json.loads(e["body"])
    except (TypeError, json.JSONDecodeError):
        return "; its body is no longer valid JSON"
    return ""


def verify_ledger(led) -> VerifyReport:
    from .core import ENTRY_COLUMNS

    problems: list[str] = []
    with led.store.read() as tx:  # one snapshot: a concurrent commit is all in or all out
        entries = [
            dict(zip(ENTRY_COLUMNS, r, strict=True))
            for r in tx.q(f"SELECT {', '.join(ENTRY_COLUMNS)} FROM entries ORDER BY seq")
        ]
        reqs = {
            r[0]: {"status": r[1], "body": r[2], "entry_seq": r[3], "model": r[4], "subject": r[5]}
            for r in tx.q("SELECT id, status, body, entry_seq, model, subject FROM requests")
        }
        mods = {
            r[0]: {"body": r[1], "current_hash": r[2]}
            for r in tx.q("SELECT name, body, current_hash FROM models")
        }
        rows = tx.q("SELECT value FROM meta WHERE key = 'public_key'")
    public = (rows[0][0] or None) if rows else None
    tables = {"requests": reqs, "models": mods}
    certs = {}
    for p in sorted((led.root / "certificates").glob("*.json")):
        try:
            certs[p.stem] = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            certs[p.stem] = None

    by_cert_seq = {
        c["entry"].get("seq"): c
        for c in certs.values()
        if isinstance(c, dict) and isinstance(c.get("entry"), dict)
    }

    # 1. the chain
    prev = GENESIS
    for i, e in enumerate(entries, 1):
        if e["seq"] != i:
            problems.append(
                f"entry numbering: expected entry {i}, found {e['seq']} "
                "(entries were removed or renumbered)"
            )
        if e["prev_hash"] != prev:
            problems.append(
                f"{_label(e)}: its prev_hash does not match the hash of the entry "
                "before it (entries were removed, reordered or rewritten)"
            )
        try:
            h = entry_hash(*(e[k] for k in ENTRY_KEYS[:-1]))
        except (TypeError, ValueError):
            h = None
        if h != e["hash"]:
            problems.append(
                f"{_label(e)}: its content does not match its hash, it was altered "
                f"after it was written{_what_changed(e, by_cert_seq.get(e['seq']), tables)}"
            )
        prev = e["hash"]

    # 2. replay: the state the entries imply
    models: dict[str, dict] = {}
    state: dict[str, dict] = {}
    for e in entries:
        try:
            body = json.loads(e["body"])
        except (TypeError, json.JSONDecodeError):
            continue  # reported above
        m, rid = e["model"], e["request_id"]
        try:
            if e["kind"] == "model_registered":
                models[m] = {
                    "hash": body["hash"],
                    "removed": set(),
                    "path": body["path"],
                    "last": e["seq"],
                    "state": initial_state(body),
                }
                then = body.get("ledger_public_key")
                if then != public:
                    problems.append(
                        f"{_label(e)}: the ledger's signing key was {then!r} when the model "
                        f"was registered; the meta table now says {public!r}"
                    )
            elif e["kind"] == "request_added":
                state[rid] = {"status": "pending", "entry_seq": None, "body": body["request"]}
            elif e["kind"] in ("request_processed", "retrain", "request_failed"):
                if rid not in state or state[rid]["status"] != "pending":
                    problems.append(f"{_label(e)}: processes a request that was not pending")
                    continue
                if e["kind"] == "request_failed":
                    state[rid].update(status="failed", entry_seq=e["seq"])
                    continue
                mod = models.get(m)
                if mod is None:
                    problems.append(f"{_label(e)}: model {m!r} was never registered")
                    continue
                if body["hash_before"] != mod["hash"]:
                    problems.append(
                        f"{_label(e)}: started from model {body['hash_before'][:16]}... "
                        f"but the model was then {mod['hash'][:16]}..."
                    )
                again = set(body["samples"]) & mod["removed"]
                if again:
                    problems.append(f"{_label(e)}: removes sample {min(again)} a second time")
                mod["removed"] |= set(body["samples"])
                mod["hash"], mod["last"] = body["hash_after"], e["seq"]
                mod["state"] = Ledger._next_state(
                    mod["state"], body["samples"], body["metrics"], e["kind"]
                )
                mod["staged"] = body.get("staged")
                state[rid].update(status="done", entry_seq=e["seq"])
                misses = judge(body["metrics"], body["thresholds"])
                problems += [f"request {rid}: {x}" for x in misses]
                if body["passed"] != (not misses):
                    problems.append(
                        f"{_label(e)}: says its thresholds were "
                        f"{'met' if body['passed'] else 'missed'}, its metrics say otherwise"
                    )
        except (KeyError, TypeError, AttributeError) as exc:
            problems.append(f"{_label(e)}: its body lacks {exc} (not written by this ledger)")

    # 3. the tables agree with the replay
    for rid, r in state.items():
        t = reqs.get(rid)
        if t is None:
            problems.append(f"request {rid}: in the entries but missing from the requests table")
            continue
        want = r["status"]
        if t["status"] != want and not (want == "pending" and t["status"] == "processing"):
            problems.append(
                f"request {rid}: the requests table says {t['status']}, the entries say {want}"
            )
        for col in ("model", "subject"):
            if t[col] != r["body"].get(col):
                problems.append(
                    f"request {rid}: the requests table's {col} column says {t[col]!r}, its "
                    f"request_added entry {r['body'].get(col)!r}"
                )
        if t["entry_seq"] != r["entry_seq"]:
            problems.append(
                f"request {rid}: the requests table points at entry "
                f"{t['entry_seq']}, the entries at {r['entry_seq']}"
            )
        try:
            if json.loads(t["body"]) != r["body"]:
                fields = _diff(r["body"], json.loads(t["body"]))
                problems.append(
                    f"request {rid}: the requests table and its request_added entry differ "
                    f"in {', '.join(fields)}"
                )
        except json.JSONDecodeError:
            problems.append(f"request {rid}: its row in the requests table is not valid JSON")
    for rid in set(reqs) - set(state):
        problems.append(f"request {rid}: in the requests table but no entry records it")
    for name, mod in models.items():
        t = mods.get(name)
        if t is None:
            problems.append(
                f"model {name!r}: registered in the entries, missing from the models table"
            )
            continue
        if t["current_hash"] != mod["hash"]:
            problems.append(
                f"model {name!r}: the models table says sha256 "
                f"{t['current_hash'][:16]}..., the entries say {mod['hash'][:16]}..."
            )
        try:
            fields = _diff(mod["state"], json.loads(t["body"]))
            if fields:
                problems.append(
                    f"model {name!r}: the models table differs from what the entries give in "
                    f"{', '.join(fields)}"
                )
        except (KeyError, TypeError, json.JSONDecodeError):
            problems.append(f"model {name!r}: its row in the models table is not valid JSON")
    for name in set(mods) - set(models):
        problems.append(f"model {name!r}: in the models table but no entry registers it")

    # 4. model files
    for name, mod in models.items():
        path = Path(mod["path"])
        if not path.is_file():
            problems.append(f"model file {path} (model {name!r}) is missing")
            continue
        have = file_sha256(path)
        staged = path.with_name(mod.get("staged") or path.name)
        if (
            have != mod["hash"]
            and staged != path
            and staged.is_file()
            and (file_sha256(staged) == mod["hash"])
        ):
            problems.append(
                f"model file {path} (model {name!r}): the replacement entry {mod['last']} "
                f"committed is still to do ({staged.name} holds it): run unlearn request process"
            )
        elif have != mod["hash"]:
            problems.append(
                f"model file {path} (model {name!r}): sha256 {have[:16]}... is not "
                f"the {mod['hash'][:16]}... entry {mod['last']} records: the file "
                "was changed outside the ledger"
            )

    # 5. certificates
    key_file = led.root / "signing_key.pem"
    if key_file.is_file():
        from .certificate import _load_key, _public_hex

        if _public_hex(_load_key(key_file)) != public:
            problems.append("signing_key.pem is not the key the ledger records")
    by_seq = {e["seq"]: e for e in entries}
    n_certs = 0
    for rid, r in state.items():
        if r["status"] not in ("done", "failed"):
            continue
        path = led.root / "certificates" / f"{rid}.json"
        if not path.is_file():
            problems.append(f"request {rid}: its certificate {path.name} is missing")
            continue
        n_certs += 1
        if not path.with_suffix(".html").is_file():
            problems.append(f"request {rid}: its certificate page {rid}.html is missing")
        problems += check_certificate(path, public_key=public)
        cert = certs.get(rid)
        entry = by_seq.get(r["entry_seq"])
        if isinstance(cert, dict) and isinstance(cert.get("entry"), dict) and entry is not None:
            diff = [k for k in ENTRY_KEYS if cert["entry"].get(k) != entry[k]]
            if diff:
                problems.append(
                    f"certificate {path.name}: its entry copy differs from the "
                    f"ledger's entry {entry['seq']} in {', '.join(diff)}"
                )
    for stem in certs:
        if stem not in state or state[stem]["status"] not in ("done", "failed"):
            problems.append(
                f"certificate {stem}.json: the ledger has no processed request {stem} (its "
                "entries were deleted, or the certificate does not belong here)"
            )
    checked = {
        "entries": len(entries),
        "requests": len(state),
        "models": len(models),
        "certificates": n_certs,
        "signed": bool(public),
    }
    return VerifyReport(ok=not problems, problems=problems, checked=checked)
