"""The deletion ledger on a real PostgreSQL server, started here for the test."""

import glob
import multiprocessing as mp
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

from unlearn.cli import main
from unlearn.errors import LedgerError
from unlearn.ledger import Ledger

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (extra 'ledger')")

from .test_ledger import NG, SCENARIO  # noqa: E402


def _server_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if found:
        return Path(found[-1]).parent
    exe = shutil.which("postgres")
    return Path(exe).parent if exe else None


@pytest.fixture(scope="module")
def server():
    bindir = _server_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server here (Debian package postgresql: initdb, postgres)")
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            import pwd

            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        as_user = ["runuser", "-u", "postgres", "--"]
    d = Path(tempfile.mkdtemp(prefix="unlearn-pg-", dir="/tmp"))
    os.chmod(d, 0o755)
    if as_user:
        os.chown(d, pw.pw_uid, pw.pw_gid)
    data, sock = d / "data", d
    subprocess.run(
        as_user + [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = 54000 + os.getpid() % 1000
    proc = subprocess.Popen(
        as_user
        + [
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-k",
            str(sock),
            "-p",
            str(port),
            "-c",
            "listen_addresses=",
            "-c",
            "fsync=on",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"postgresql://postgres@/postgres?host={sock}&port={port}"
    for _ in range(200):
        try:
            psycopg.connect(url).close()
            break
        except psycopg.OperationalError:
            time.sleep(0.1)
    else:
        proc.terminate()
        pytest.fail("the PostgreSQL server did not start")
    yield f"postgresql://postgres@/%s?host={sock}&port={port}", url
    proc.terminate()
    proc.wait(30)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def db(server):
    template, admin = server
    name = "l" + uuid.uuid4().hex[:12]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return template % name


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("pgmodel")
    scen = d / "s.yaml"
    scen.write_text(yaml.safe_dump(SCENARIO))
    assert main(["train", str(scen), "--out", str(d / "m.safetensors")]) == 0
    return scen, d / "m.safetensors"


def _ledger(tmp_path, trained, db) -> Ledger:
    scen, model = trained
    mine = tmp_path / "m.safetensors"
    mine.write_bytes(model.read_bytes())
    led = Ledger.create(tmp_path / "L", db=db, sign=True)
    led.register_model("m", mine, scen)
    return led


def test_a_postgres_ledger_processes_verifies_and_detects_edits(tmp_path, trained, db):
    led = _ledger(tmp_path, trained, db)
    for i in range(3):
        led.add(f"s{i}", "m", {"samples": [i]}, "neggrad_plus", NG)
    assert led.process() == ["r000001", "r000002", "r000003"]
    again = Ledger.open(tmp_path / "L")  # database.txt names the URL
    assert again.db_url == db and again.verify().ok
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "UPDATE entries SET body = replace(body, '\"test_acc\":', '\"test_acc\":1') "
            "WHERE seq = 5"
        )
    problems = "\n".join(again.verify().problems)
    assert "entry 5 (request_processed, r000001)" in problems and "test_acc" in problems
    with pytest.raises(LedgerError, match="already holds a ledger"):
        Ledger.create(tmp_path / "L2", db=db)


def _adder(root: str, base: int, k: int):
    with Ledger.open(root) as led:
        for i in range(k):
            led.add(f"p{base}-{i}", "m", {"samples": [100 * base + i]}, "neggrad_plus", NG)
    os._exit(0)


def test_concurrent_submitters_on_postgres(tmp_path, trained, db):
    led = _ledger(tmp_path, trained, db)
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_adder, args=(str(tmp_path / "L"), b, 10)) for b in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert len(led.requests()) == 40
    report = led.verify()
    assert report.ok and report.checked["entries"] == 41
