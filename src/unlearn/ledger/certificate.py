"""Certificates of processed deletion requests: a JSON file and a readable HTML page.

A certificate holds a verbatim copy of the request's ledger entry (so its hash can
be recomputed without the ledger), a summary derived from that entry, and,
when the ledger has a signing key, an Ed25519 signature over everything else with
the public key beside it. :func:`check_certificate` checks one offline: the entry
copy hashes to the hash it carries, the summary is the one the entry gives, the
signature is valid, the metrics are within the request's thresholds, and (given
the model file) the file is the one the request produced.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from .core import ENTRY_COLUMNS as ENTRY_KEYS
from .core import canonical, entry_hash, judge
from .handlers import file_sha256

__all__ = [
    "build_certificate",
    "write_certificate",
    "check_certificate",
    "new_signing_key",
    "summary_of",
    "CERT_FORMAT",
]

CERT_FORMAT = "unlearn-certificate 1"


def new_signing_key(path: Path) -> str:
    """Write a new Ed25519 private key (PEM, mode 0600) to ``path``; returns the
    public key as hex."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return _public_hex(key)


def _public_hex(key) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def _load_key(path: Path):
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def summary_of(entry: dict) -> dict:
    """What a reader wants first, taken from the entry's body."""
    body = json.loads(entry["body"])
    req = body["request"]
    out = {
        "request_id": entry["request_id"],
        "subject": req["subject"],
        "model": entry["model"],
        "selector": req["selector"],
        "method": req["method"],
        "outcome": {
            "request_processed": "processed",
            "retrain": "retrained",
            "request_failed": "refused",
        }[entry["kind"]],
        "processed_at": entry["at"],
    }
    if entry["kind"] == "request_failed":
        out["error"] = body["error"]
        return out
    out.update(
        samples_removed=len(body["samples"]),
        model_hash_before=body["hash_before"],
        model_hash_after=body["hash_after"],
        metrics=body["metrics"],
        thresholds=body["thresholds"],
        thresholds_met=body["passed"],
        misses=body["misses"],
        method_config=body["run"].get("config", {}),
        library=body["version"],
    )
    if "reason" in req:
        out["reason"] = req["reason"]
    return out


def _payload(cert: dict) -> str:
    return canonical({k: v for k, v in cert.items() if k != "signature"})


def build_certificate(entry: dict, database: str, key_path: Path | None) -> dict:
    entry = {k: entry[k] for k in ENTRY_KEYS}
    summary = summary_of(entry)
    cert = {
        "format": CERT_FORMAT,
        "ledger_database": database,
        "entry": entry,
        "summary": summary,
        "public_key": None,
    }
    if key_path is not None:
        key = _load_key(key_path)
        cert["public_key"] = _public_hex(key)
        cert["signature"] = key.sign(_payload(cert).encode("ascii")).hex()
    else:
        cert["signature"] = None
    return cert


def write_certificate(cert: dict, path: Path) -> Path:
    from ..io import atomic_write_text

    atomic_write_text(path, json.dumps(cert, indent=1, sort_keys=True) + "\n")
    atomic_write_text(path.with_suffix(".html"), render_html(cert))
    return path


def check_certificate(
    cert_path: str | Path, model: str | Path | None = None, public_key: str | None = None
) -> list[str]:
    """Problems found in the certificate at ``cert_path`` (empty: it checks out)."""
    path = Path(cert_path)
    name = path.name
    try:
        cert = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return [f"certificate {name}: cannot be read ({exc})"]
    except json.JSONDecodeError as exc:
        return [f"certificate {name}: not valid JSON ({exc})"]
    if not isinstance(cert, dict) or cert.get("format") != CERT_FORMAT:
        return [f"certificate {name}: not an unlearn certificate (format {CERT_FORMAT!r})"]
    problems = []
    entry = cert.get("entry")
    if not isinstance(entry, dict) or set(entry) != set(ENTRY_KEYS):
        return [f"certificate {name}: its entry copy lacks fields of a ledger entry"]
    try:
        recomputed = entry_hash(*(entry[k] for k in ENTRY_KEYS[:-1]))
    except (TypeError, ValueError) as exc:
        return [f"certificate {name}: its entry copy cannot be hashed ({exc})"]
    if recomputed != entry["hash"]:
        problems.append(
            f"certificate {name}: its copy of entry {entry['seq']} does not hash to the hash "
            "it carries (the entry copy was altered)"
        )
    try:
        summary = summary_of(entry)
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        return problems + [f"certificate {name}: its entry body is not a request's ({exc!r})"]
    if summary != cert.get("summary"):
        fields = _diff(summary, cert.get("summary") or {})
        problems.append(
            f"certificate {name}: its summary differs from its entry in {', '.join(fields)}"
        )
    sig, pub = cert.get("signature"), cert.get("public_key")
    if public_key and pub != public_key:
        problems.append(
            f"certificate {name}: signed with key {str(pub)[:16]}..., the ledger's key is "
            f"{public_key[:16]}..."
        )
    if public_key and not sig:
        problems.append(
            f"certificate {name}: the ledger signs its certificates; this one is unsigned"
        )
    if sig or pub:
        problems += _check_signature(cert, name)
    if "metrics" in summary:
        problems += [
            f"certificate {name}: {m}" for m in judge(summary["metrics"], summary["thresholds"])
        ]
    if model is not None:
        mp = Path(model)
        if not mp.is_file():
            problems.append(f"model file {mp} does not exist")
        elif "model_hash_after" not in summary:
            problems.append(f"certificate {name}: the request was refused; it made no model")
        elif file_sha256(mp) != summary["model_hash_after"]:
            problems.append(
                f"model file {mp}: sha256 {file_sha256(mp)[:16]}... is not the model request "
                f"{summary['request_id']} produced ({summary['model_hash_after'][:16]}...)"
            )
    return problems


def _check_signature(cert: dict, name: str) -> list[str]:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(cert["public_key"]))
        key.verify(bytes.fromhex(cert["signature"]), _payload(cert).encode("ascii"))
    except InvalidSignature:
        return [f"certificate {name}: the signature does not match its content"]
    except (TypeError, ValueError) as exc:
        return [f"certificate {name}: malformed signature or public key ({exc})"]
    return []


def _diff(a, b, prefix: str = "") -> list[str]:
    """The dotted paths at which two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    if a != b:
        return [prefix.rstrip(".") or "(whole value)"]
    return []


def render_html(cert: dict) -> str:
    s = cert["summary"]
    e = cert["entry"]

    def row(k, v) -> str:
        return f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"

    rows = [
        row(k, s[k])
        for k in ("request_id", "subject", "model", "selector", "method", "outcome", "processed_at")
        if k in s
    ]
    if "error" in s:
        rows.append(row("error", s["error"]))
    else:
        rows += [
            row("samples removed", s["samples_removed"]),
            row("model sha256 before", s["model_hash_before"]),
            row("model sha256 after", s["model_hash_after"]),
            row("method config", json.dumps(s["method_config"], sort_keys=True)),
            row("library", json.dumps(s["library"], sort_keys=True)),
        ]
    metric_rows = ""
    if "metrics" in s:
        for k, v in sorted(s["metrics"].items()):
            rule = s["thresholds"].get(k, {})
            limit = ", ".join(f"{op.replace('_', ' ')} {x:g}" for op, x in rule.items()) or "-"
            metric_rows += (
                f"<tr><td>{html.escape(k)}</td><td>{v:.4g}</td><td>{html.escape(limit)}</td></tr>"
            )
    verdict = (
        ("refused: " + s["error"])
        if "error" in s
        else (
            "all thresholds met"
            if s["thresholds_met"]
            else "thresholds missed: " + "; ".join(s["misses"])
        )
    )
    signed = (
        ("signed (Ed25519), public key " + cert["public_key"])
        if cert.get("signature")
        else "unsigned"
    )
    rid = html.escape(s["request_id"])
    entry_rows = "".join(
        [
            row("sequence number", e["seq"]),
            row("kind", e["kind"]),
            row("entry sha256", e["hash"]),
            row("previous entry sha256", e["prev_hash"]),
            row("ledger", cert["ledger_database"]),
            row("signature", signed),
        ]
    )
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>Deletion certificate {rid}</title>",
            f"<style>{_CSS}</style></head>",
            f"<body><h1>Deletion certificate {rid}</h1>",
            f"<p><b>{html.escape(verdict)}</b></p>",
            f"<table>{''.join(rows)}</table>",
            "<h2>Verification metrics</h2>",
            f"<table><tr><th>metric</th><th>value</th><th>threshold</th></tr>{metric_rows}</table>",
            "<h2>Ledger entry</h2>",
            f"<table>{entry_rows}</table>",
            "<p>Check it with <code>unlearn request verify LEDGER_DIR</code>, or offline with",
            f"<code>unlearn request verify --certificate {rid}.json --model MODEL_FILE</code>.</p>",
            "</body></html>",
            "",
        ]
    )


_CSS = (
    "body{font-family:sans-serif;max-width:60em;margin:2em auto}"
    "th{text-align:left;padding-right:1em}"
    "td,th{border-bottom:1px solid #ddd;padding:.2em .5em;font-size:90%}"
)
