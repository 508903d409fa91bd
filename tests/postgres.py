"""A private PostgreSQL cluster for the store tests (Debian's ``postgresql`` package).

``postgres_server`` (session fixture) runs ``initdb`` into a temporary directory as the
``postgres`` user, starts it on a free port with its socket in that directory, and stops it at
the end of the session. ``postgres_url`` gives each test a fresh, empty database on it.
Import both names into a test module to use them.
"""

from __future__ import annotations

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

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass(frozen=True, slots=True)
class PostgresServer:
    port: int
    datadir: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _ensure_installed() -> None:
    if (PG_BIN / "initdb").exists():
        return
    if os.geteuid() != 0:
        raise RuntimeError("PostgreSQL 15 is not installed (apt-get install postgresql)")
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "postgresql"],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def start_postgres(base: Path) -> PostgresServer:
    _ensure_installed()
    datadir = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    subprocess.run(
        _as_postgres(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(datadir),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ]
        ),
        check=True,
        capture_output=True,
    )
    port = _free_port()
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        _as_postgres(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(datadir),
                "-o",
                opts,
                "-w",
                "-t",
                "30",
                "-l",
                str(base / "log"),
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    return PostgresServer(port=port, datadir=datadir)


def stop_postgres(server: PostgresServer) -> None:
    subprocess.run(
        _as_postgres(
            [str(PG_BIN / "pg_ctl"), "-D", str(server.datadir), "-m", "immediate", "-w", "stop"]
        ),
        check=False,
        capture_output=True,
    )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    base = Path(tempfile.mkdtemp(prefix="assay-pg-"))
    os.chmod(base, 0o755)
    server = start_postgres(base)
    try:
        yield server
    finally:
        stop_postgres(server)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database()


@pytest.fixture(params=["sqlite", "postgres"])
def either_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """An upgraded ``Store`` on a fresh database of each kind: a SQLite file, then PostgreSQL
    (a test module imports ``postgres_server`` and ``postgres_url`` beside it)."""
    from verifier.store import Store, upgrade

    sqlite = request.param == "sqlite"
    store = Store(str(tmp_path / "v.db") if sqlite else request.getfixturevalue("postgres_url"))
    upgrade(store)
    yield store
    store.close()
