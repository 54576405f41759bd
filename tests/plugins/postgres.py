"""A real, throwaway PostgreSQL server for the tests, and the real APDB loaded into it.

``postgres_url`` (session scope) is the SQLAlchemy URL of a superuser on a
server that this plugin starts itself: ``initdb`` into a temporary directory
(password authentication, scram-sha-256), ``pg_ctl start`` on a free loopback
port with the unix socket in that directory, and ``pg_ctl stop`` at the end of
the session.  The binaries are taken from ``/usr/lib/postgresql/<version>/bin``
(the newest) or ``PATH``.  PostgreSQL refuses to run as root, so when the tests
run as root the server runs as the ``postgres`` OS user (``runuser``).

Set ``ZOOPREP_TEST_POSTGRES_URL`` (e.g. ``postgresql://user:pw@host:5432/postgres``)
to use an already running server instead; the user must be able to create
databases.

``apdb_postgres`` (session scope) creates a fresh database with a schema
``apdb`` and copies every table of the real ci_dc2 APDB (SQLite) into it with
the same column types, so ids stay BIGINT, flags BOOLEAN and floats double.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SUPERUSER = "zooprep"
#: Password of the throwaway server's superuser (it listens on loopback only).
PASSWORD = "zooprep-test-secret"


def _bindir() -> Path:
    """Directory of initdb/pg_ctl: the newest /usr/lib/postgresql/*/bin, else PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name)
            if Path(p).parent.parent.name.isdigit()
            else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    if which:
        return Path(which).parent
    pytest.fail(
        "PostgreSQL server binaries not found (apt-get install postgresql, or set "
        "ZOOPREP_TEST_POSTGRES_URL)"
    )


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: For the other plugins' servers (DaCHS) on the same loopback.
free_port = _free_port


def _as_server_user(cmd: list[str]) -> list[str]:
    """Prefix a command so that it runs as 'postgres' when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _run(cmd: list[str], log: Path | None = None) -> None:
    """Run a server command; fail the session with its output when it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        extra = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
        pytest.fail(
            f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()} "
            f"{proc.stdout.strip()} {extra}"
        )


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of a superuser on a real PostgreSQL server (started here)."""
    given = os.environ.get("ZOOPREP_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    bindir = _bindir()
    base = Path(tempfile.mkdtemp(prefix="zooprep-pg-"))
    data, sock, log = base / "data", base / "socket", base / "server.log"
    sock.mkdir()
    pwfile = base / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        for p in (sock, pwfile):
            shutil.chown(p, "postgres", "postgres")
        log.touch()
        shutil.chown(log, "postgres", "postgres")
    os.chmod(base, 0o700)
    _run(
        _as_server_user(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                "--pwfile",
                str(pwfile),
                "--auth",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            ]
        )
    )
    port = _free_port()
    options = (
        f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c full_page_writes=off -c synchronous_commit=off"
    )
    _run(
        _as_server_user(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "start",
            ]
        ),
        log,
    )
    try:
        yield f"postgresql+psycopg://{SUPERUSER}:{PASSWORD}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_server_user(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ]
            ),
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(base, ignore_errors=True)


@dataclass(frozen=True)
class PostgresApdb:
    """The real APDB, copied into PostgreSQL."""

    url: str  # SQLAlchemy URL of the database (with the test password)
    schema: str  # the namespace holding the APDB tables
    database: str


def create_database(postgres_url: str) -> str:
    """Create a new, uniquely named database; return its URL."""
    import sqlalchemy as sa

    name = f"zp_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return str(
        sa.engine.make_url(postgres_url).set(database=name).render_as_string(False)
    )


def _generic(type_: Any) -> Any:
    """The dialect-neutral form of a reflected SQLite type (DOUBLE -> Double)."""
    try:
        return type_.as_generic()
    except NotImplementedError:
        return type_


def copy_sqlite_tables(sqlite_path: Path, url: str, schema: str) -> dict[str, int]:
    """Copy every table of an SQLite file into ``schema`` of a PostgreSQL database.

    Column types are the reflected SQLite ones (BIGINT, BOOLEAN, DOUBLE ...),
    and values pass as Python ints, bools and floats, so they stay exact.
    Returns the row count per table.
    """
    import sqlalchemy as sa

    src = sa.create_engine(f"sqlite:///file:{sqlite_path}?mode=ro&uri=true")
    dst = sa.create_engine(url)
    counts: dict[str, int] = {}
    try:
        source_meta = sa.MetaData()
        source_meta.reflect(src)
        with dst.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        target_meta = sa.MetaData(schema=schema)
        for table in source_meta.sorted_tables:
            columns: list[Any] = [
                sa.Column(
                    c.name,
                    _generic(c.type),
                    primary_key=c.primary_key,
                    nullable=c.nullable,
                )
                for c in table.columns
            ]
            sa.Table(table.name, target_meta, *columns)
        target_meta.create_all(dst)
        with src.connect() as sconn, dst.begin() as dconn:
            for table in source_meta.sorted_tables:
                rows = [dict(r) for r in sconn.execute(sa.select(table)).mappings()]
                if rows:
                    dconn.execute(
                        target_meta.tables[f"{schema}.{table.name}"].insert(), rows
                    )
                counts[table.name] = len(rows)
    finally:
        src.dispose()
        dst.dispose()
    return counts


@pytest.fixture(scope="session")
def apdb_postgres(postgres_url: str, apdb_sqlite: Path) -> PostgresApdb:
    """The real ci_dc2 APDB loaded into a new PostgreSQL database, schema ``apdb``."""
    import sqlalchemy as sa

    url = create_database(postgres_url)
    copy_sqlite_tables(apdb_sqlite, url, "apdb")
    return PostgresApdb(
        url=url, schema="apdb", database=sa.engine.make_url(url).database or ""
    )
