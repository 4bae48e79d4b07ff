"""Where a deletion ledger keeps its rows: SQLite (standard library) or PostgreSQL.

Both stores speak the same small SQL with ``?`` placeholders and run every write
in one transaction that holds the whole ledger's write lock (SQLite's ``BEGIN
IMMEDIATE``; in PostgreSQL a lock on the ``meta`` table), so entries are
numbered and chained one at a time even when several processes write at once.
SQLite runs in WAL mode with ``synchronous=FULL``: a process killed at any point
leaves the last committed transaction and nothing of the one it was in.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import LedgerError

__all__ = ["Store", "SQLiteStore", "PostgresStore", "open_store", "SCHEMA_VERSION"]

SCHEMA_VERSION = "1"
#: the advisory lock every PostgreSQL write transaction takes (one ledger per database)
_PG_LOCK = 725_866_301

_TABLES = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # append-only: one row per event, chained by hash (see unlearn.ledger.core)
    "CREATE TABLE IF NOT EXISTS entries (seq BIGINT PRIMARY KEY, at TEXT NOT NULL, "
    "kind TEXT NOT NULL, model TEXT NOT NULL, request_id TEXT, body TEXT NOT NULL, "
    "prev_hash TEXT NOT NULL, hash TEXT NOT NULL)",
    # the current state of each request (derived from the entries; verify checks that)
    "CREATE TABLE IF NOT EXISTS requests (num BIGINT PRIMARY KEY, id TEXT UNIQUE NOT NULL, "
    "model TEXT NOT NULL, subject TEXT NOT NULL, status TEXT NOT NULL, body TEXT NOT NULL, "
    "claimed_by TEXT, claimed_at DOUBLE PRECISION, entry_seq BIGINT)",
    # the registered models and their current content hash (derived from the entries)
    "CREATE TABLE IF NOT EXISTS models (name TEXT PRIMARY KEY, body TEXT NOT NULL, "
    "current_hash TEXT NOT NULL)",
)


class Store:
    """A connection to the ledger's database; :meth:`write` and :meth:`read` give a
    transaction whose ``q(sql, params)`` returns the rows as tuples."""

    url: str

    def q(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:  # pragma: no cover
        raise NotImplementedError

    @contextmanager
    def write(self) -> Iterator[Store]:  # pragma: no cover
        raise NotImplementedError
        yield self

    @contextmanager
    def read(self) -> Iterator[Store]:  # pragma: no cover
        raise NotImplementedError
        yield self

    def close(self) -> None:  # pragma: no cover
        raise NotImplementedError

    def create_tables(self) -> None:
        with self.write() as tx:
            for sql in _TABLES:
                tx.q(sql)


class SQLiteStore(Store):
    def __init__(self, path: Path, timeout: float = 120.0):
        self.url = str(path)
        try:
            self.conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"cannot open the ledger database {path}: {exc}") from None

    def q(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        try:
            return self.conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"ledger database {self.url}: {exc}") from None

    @contextmanager
    def write(self) -> Iterator[Store]:
        self._begin("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[Store]:
        self._begin("BEGIN")
        try:
            yield self
        finally:
            self.conn.execute("ROLLBACK")

    def _begin(self, sql: str) -> None:
        # busy_timeout covers most waits; a lock held past it is retried here
        deadline = time.monotonic() + 600
        while True:
            try:
                self.conn.execute(sql)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise LedgerError(f"ledger database {self.url}: {exc}") from None
                time.sleep(0.05)

    def close(self) -> None:
        self.conn.close()


class PostgresStore(Store):
    """A ledger shared by a team: the same tables in a PostgreSQL database (psycopg 3)."""

    def __init__(self, url: str):
        try:
            import psycopg
        except ImportError:
            from ..errors import MissingDependencyError

            raise MissingDependencyError(
                "a PostgreSQL ledger needs psycopg: pip install 'unlearn-toolkit[ledger]'"
            ) from None
        self.url = url
        self._psycopg = psycopg
        try:
            self.conn = psycopg.connect(url, autocommit=True)
        except psycopg.Error as exc:
            raise LedgerError(f"cannot connect to the ledger database {url}: {exc}") from None
        self._in_tx = False

    def q(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        try:
            cur = self.conn.execute(sql.replace("?", "%s"), tuple(params))
            return cur.fetchall() if cur.description is not None else []
        except self._psycopg.Error as exc:
            raise LedgerError(f"ledger database {self.url}: {exc}") from None

    @contextmanager
    def write(self) -> Iterator[Store]:
        with self.conn.transaction():
            self.q("SELECT pg_advisory_xact_lock(?)", (_PG_LOCK,))
            yield self

    @contextmanager
    def read(self) -> Iterator[Store]:
        with self.conn.transaction():
            self.q("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield self

    def close(self) -> None:
        self.conn.close()


def open_store(db: str) -> Store:
    """A store for ``db``: a ``postgresql://`` URL, or the path of a SQLite file."""
    if db.startswith(("postgresql://", "postgres://")):
        return PostgresStore(db)
    path = Path(db)
    if path.is_dir():
        raise LedgerError(f"the ledger database {path} is a folder")
    if not path.parent.is_dir():
        raise LedgerError(f"the folder of the ledger database {path} does not exist")
    return SQLiteStore(path)
