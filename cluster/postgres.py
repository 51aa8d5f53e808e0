"""Running a PostgreSQL server that the node owns: initdb, start, stop, connection URLs.

PostgreSQL refuses to run as root, so when the node runs as root every server command runs
as the ``postgres`` OS user (``runuser``). Replication, promotion and rewind build on this
class (see the HA loop); the test fixtures use this same code.
"""

from __future__ import annotations

import logging
import os
import pwd
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from node.errors import StrongroomError

log = logging.getLogger("strongroom.postgres")

PG_BIN_DIRS = (Path("/usr/lib/postgresql/15/bin"), Path("/usr/local/bin"), Path("/usr/bin"))
SUPERUSER = "postgres"


class PostgresError(StrongroomError):
    """A PostgreSQL server command failed; the message names the step."""


def pg_bin(name: str) -> str:
    for d in PG_BIN_DIRS:
        if (d / name).is_file():
            return str(d / name)
    found = shutil.which(name)
    if found is None:
        raise PostgresError(f"PostgreSQL program '{name}' not found (install postgresql-15)")
    return found


@dataclass(frozen=True)
class OsUser:
    name: str
    uid: int
    gid: int


def server_os_user() -> OsUser | None:
    """The account to run PostgreSQL as: ``postgres`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam("postgres")
    return OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


class LocalPostgres:
    """One PostgreSQL cluster (data directory) on this host."""

    def __init__(self, base_dir: Path, port: int, host: str = "127.0.0.1") -> None:
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.socket_dir = base_dir / "socket"
        self.log_file = base_dir / "postgres.log"
        self.password_file = base_dir / "superuser.password"
        self.port = port
        self.host = host
        self.user = server_os_user()

    # plumbing ---------------------------------------------------------------------------

    def _run(
        self, args: list[str], step: str, timeout: float = 120, env: dict[str, str] | None = None
    ) -> str:
        cmd = args if self.user is None else ["runuser", "-u", self.user.name, "--", *args]
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, **(env or {})},
        )
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise PostgresError(f"{step} failed: {detail[-1] if detail else proc.returncode}")
        return proc.stdout

    def _own(self, path: Path) -> None:
        if self.user is not None:
            os.chown(path, self.user.uid, self.user.gid)

    @property
    def superuser_password(self) -> str:
        return self.password_file.read_text().strip()

    def url(
        self, database: str = "postgres", user: str = SUPERUSER, password: str | None = None
    ) -> str:
        pw = self.superuser_password if password is None else password
        return f"postgresql+psycopg2://{user}:{pw}@{self.host}:{self.port}/{database}"

    # lifecycle --------------------------------------------------------------------------

    def initdb(self) -> None:
        """Create a new cluster with data checksums and scram authentication."""
        self.base_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._own(self.base_dir)
        self.socket_dir.mkdir(exist_ok=True, mode=0o700)
        self._own(self.socket_dir)
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(24) + "\n")
        self._own(self.password_file)
        self._run(
            [
                pg_bin("initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "-A",
                "scram-sha-256",
                f"--pwfile={self.password_file}",
                "--data-checksums",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
            "initdb",
        )

    def is_initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def start(self, extra_options: str = "") -> None:
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses={self.host} {extra_options}"
        )
        self._run(
            [
                pg_bin("pg_ctl"),
                "-D",
                str(self.data_dir),
                "-o",
                options,
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                "60",
                "start",
            ],
            "starting PostgreSQL",
        )
        log.info("postgres started", extra={"port": self.port})

    def stop(self, mode: str = "fast") -> None:
        if not self.is_running():
            return
        self._run(
            [pg_bin("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"],
            "stopping PostgreSQL",
        )

    def is_running(self) -> bool:
        if not self.is_initialised():
            return False
        cmd = [pg_bin("pg_ctl"), "-D", str(self.data_dir), "status"]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user.name, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, check=False).returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL over the local socket as the superuser (for set-up steps only)."""
        env_pw = f"PGPASSWORD={self.superuser_password}"
        return self._run(
            [
                "env",
                env_pw,
                pg_bin("psql"),
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-c",
                sql,
            ],
            "psql",
        )

    def create_database(self, name: str) -> None:
        if not name.replace("_", "").isalnum():
            raise PostgresError(f"database name '{name}' is not a plain identifier")
        self.psql(f'CREATE DATABASE "{name}"')
