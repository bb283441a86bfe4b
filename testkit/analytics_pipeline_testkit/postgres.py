"""A throwaway PostgreSQL server from the Debian binaries (`make postgres` installs them).

A fresh cluster in a temp folder, listening on 127.0.0.1 only (its Unix socket inside that
folder), trust authentication for the one local test user. As root the server runs as the
`postgres` user (PostgreSQL refuses root). A `ChildProcess` (its own session, dies with its
starter); stopped by the postmaster's PID (fast shutdown), then its process group, never by
name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from analytics_pipeline.local.processes import ChildProcess

USER = "dagster"
DATABASE = "dagster"
_STARTUP_TIMEOUT_SECONDS = 60.0


def server_bin_dir() -> Path:
    """Where pg_ctl, initdb and postgres live: PATH first, then Debian's versioned folders."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3])
    )
    if not versions:
        raise RuntimeError("PostgreSQL server binaries not found: run `make postgres`")
    return versions[-1].parent


def _as_server_user() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@dataclass
class PostgresServer:
    root: Path
    port: int
    process: ChildProcess

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    def dsn(self, database: str = DATABASE) -> dict[str, str | int]:
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "user": USER,
            "password": "unused-trust-auth",
            "dbname": database,
        }

    def env(self, database: str = DATABASE) -> dict[str, str]:
        """The variables deploy/dagster/dagster.yaml reads."""
        return {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USERNAME": USER,
            "DAGSTER_PG_PASSWORD": "unused-trust-auth",
            "DAGSTER_PG_DB": database,
        }

    def create_database(self, name: str) -> None:
        import psycopg2

        connection = psycopg2.connect(**self.dsn("postgres"))
        connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
        try:
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()

    def query(self, sql: str, database: str = DATABASE) -> list[tuple]:
        import psycopg2

        connection = psycopg2.connect(**self.dsn(database))
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql)
                return list(cursor.fetchall()) if cursor.description else []
        finally:
            connection.close()

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        pid = self.postmaster_pid()
        popen = self.process.popen
        if pid is not None and popen is not None and popen.poll() is None:
            os.kill(pid, signal.SIGINT)  # fast shutdown: roll back clients, checkpoint, exit
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=30)
        self.process.stop()  # whatever is left of its group
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(port: int) -> PostgresServer:
    """initdb into a fresh temp folder, start the server, create the `dagster` database."""
    bin_dir = server_bin_dir()
    # Not under pytest's temp folder: that one is private to root, the server user needs in.
    root = Path(tempfile.mkdtemp(prefix="analytics-pg-"))
    data_dir = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run(
        [
            *_as_server_user(),
            str(bin_dir / "initdb"),
            *("-D", str(data_dir), "-U", USER, "--auth=trust", "--no-instructions"),
            *("-E", "UTF8", "--locale=C"),
        ],
        check=True,
        capture_output=True,
    )
    process = ChildProcess(
        "postgres",
        [
            *_as_server_user(),
            str(bin_dir / "postgres"),
            *("-D", str(data_dir), "-p", str(port)),
            *("-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={root}"),
        ],
        root / "postgres.log",
        grace_seconds=5.0,
    ).start()
    server = PostgresServer(root=root, port=port, process=process)
    deadline = time.monotonic() + _STARTUP_TIMEOUT_SECONDS
    while True:
        try:
            server.query("SELECT 1", database="postgres")
            break
        except Exception:
            if not process.alive() or time.monotonic() > deadline:
                output = server.log_path.read_text(errors="replace")
                server.stop()
                raise RuntimeError(f"PostgreSQL did not start:\n{output}") from None
            time.sleep(0.2)
    server.create_database(DATABASE)
    return server
