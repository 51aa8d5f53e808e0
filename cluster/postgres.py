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
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2

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
        # Set by :meth:`configure_cluster` for a cluster member; None for a plain server.
        self.member: ClusterMember | None = None
        self._local = threading.local()

    @property
    def listen(self) -> str:
        if self.member is None or self.member.advertise in ("", self.host):
            return self.host
        return f"{self.host},{self.member.advertise}"

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
            password = self.member.superuser_password if self.member else secrets.token_urlsafe(24)
            fh.write(password + "\n")
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
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses={self.listen} "
            f"{self.cluster_options()} {extra_options}"
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
        """Whether the postmaster named in postmaster.pid is alive (what pg_ctl status
        checks, without starting a process twice a second)."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

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

    # --- a cluster member: TLS, replication, promotion, rewind ---------------------------
    #
    # Node-specific settings (addresses, TLS files, pg_hba, whom to follow) live OUTSIDE
    # the data directory and are passed on the command line, because pg_basebackup and
    # pg_rewind copy the data directory, configuration files included, from another node.
    # Only synchronous_standby_names is set with ALTER SYSTEM (it changes at run time).

    @property
    def hba_file(self) -> Path:
        return self.base_dir / "pg_hba.conf"

    @property
    def passfile(self) -> Path:
        return self.base_dir / "pgpass"

    @property
    def tls_dir(self) -> Path:
        return self.base_dir / "tls"

    def configure_cluster(self, member: ClusterMember) -> None:
        """Make this server a cluster member: TLS files, password file and pg_hba."""
        self.member = member
        self.base_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._own(self.base_dir)
        if self.user is not None:
            # The node's data dir holds this server's dir: let the server's account pass
            # through it (search only; nothing in it becomes readable).
            parent = self.base_dir.parent
            os.chmod(parent, os.stat(parent).st_mode & 0o7777 | 0o011)  # noqa: S103
        for d in (self.tls_dir, self.socket_dir):
            d.mkdir(exist_ok=True, mode=0o700)
            self._own(d)
        for name, data in (("server.crt", member.cert_pem), ("server.key", member.key_pem)):
            self._write_private(self.tls_dir / name, data)
        self._write_private(self.password_file, (member.superuser_password + "\n").encode())
        lines = [
            f"*:*:*:{REPLICATION_USER}:{member.replication_password}",
            f"*:*:*:{SUPERUSER}:{member.superuser_password}",
        ]
        self._write_private(self.passfile, ("\n".join(lines) + "\n").encode())
        self.write_hba(member.peers)

    def _write_private(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        self._own(tmp)
        os.replace(tmp, path)

    def write_hba(self, peers: tuple[str, ...]) -> bool:
        """pg_hba limited to the local socket, loopback and the member addresses (TLS and
        scram). Returns whether the file changed (then reload)."""
        lines = [
            "# Written by Strongroom: local socket, loopback and cluster members only.",
            "local all all scram-sha-256",
            "host all all 127.0.0.1/32 scram-sha-256",
        ]
        for peer in sorted(set(peers)):
            cidr = _host_cidr(peer)
            lines.append(f"hostssl replication {REPLICATION_USER} {cidr} scram-sha-256")
            lines.append(f"hostssl postgres {SUPERUSER} {cidr} scram-sha-256")
        text = "\n".join(lines) + "\n"
        if self.hba_file.exists() and self.hba_file.read_text() == text:
            return False
        self._write_private(self.hba_file, text.encode())
        return True

    def cluster_options(self) -> str:
        if self.member is None:
            return ""
        m = self.member
        opts = [
            f"-c hba_file={self.hba_file}",
            "-c ssl=on",
            f"-c ssl_cert_file={self.tls_dir / 'server.crt'}",
            f"-c ssl_key_file={self.tls_dir / 'server.key'}",
            "-c password_encryption=scram-sha-256",
            "-c wal_level=replica",
            "-c max_wal_senders=10",
            "-c wal_keep_size=512MB",
            "-c hot_standby=on",
            "-c hot_standby_feedback=on",
            "-c wal_log_hints=on",
            "-c synchronous_commit=on",
            "-c wal_sender_timeout=5s",
            "-c wal_receiver_timeout=5s",
            "-c wal_retrieve_retry_interval=500ms",
            f"-c cluster_name={m.name}",
        ]
        if m.upstream is not None:
            conninfo = (
                f"host={m.upstream} port={m.upstream_port} user={REPLICATION_USER} "
                f"passfile={self.passfile} application_name={m.name} sslmode=require "
                "connect_timeout=2 keepalives_idle=2 keepalives_interval=1 keepalives_count=2"
            )
            opts.append(f"-c primary_conninfo='{conninfo}'")
        return " ".join(opts)

    def setup_primary_roles(self, replication_password: str, app_password: str) -> None:
        """Create the replication role and the application's role and database."""
        self.psql(
            f"CREATE ROLE {REPLICATION_USER} WITH REPLICATION LOGIN "
            f"PASSWORD {_literal(replication_password)}"
        )
        self.psql(f"CREATE ROLE {APP_USER} WITH LOGIN PASSWORD {_literal(app_password)}")
        self.psql(f'CREATE DATABASE {APP_DATABASE} OWNER "{APP_USER}"')

    def reload(self) -> None:
        self.psql("SELECT pg_reload_conf()")

    def query(self, sql: str, database: str = "postgres") -> list[list[str]]:
        """Rows of a read-only query, as text, through the local socket (one connection
        per thread, kept open: the HA loop asks twice a second)."""
        conns: dict[str, Any] = self._local.__dict__.setdefault("conns", {})
        for attempt in (1, 2):
            conn = conns.get(database)
            try:
                if conn is None or conn.closed:
                    conn = psycopg2.connect(
                        host=str(self.socket_dir),
                        port=self.port,
                        user=SUPERUSER,
                        password=self.superuser_password,
                        dbname=database,
                        connect_timeout=3,
                    )
                    conn.autocommit = True
                    conns[database] = conn
                with conn.cursor() as cur:
                    cur.execute(sql)
                    rows = cur.fetchall() if cur.description else []
                return [["" if v is None else _text(v) for v in row] for row in rows]
            except psycopg2.Error as exc:
                conns.pop(database, None)
                if conn is not None:
                    conn.close()
                if attempt == 2:
                    detail = str(exc).strip().splitlines()
                    raise PostgresError(f"query failed: {detail[0] if detail else exc}") from None
        return []

    def in_recovery(self) -> bool:
        return self.query("SELECT pg_is_in_recovery()")[0][0] == "t"

    def set_sync_standbys(self, names: tuple[str, ...]) -> None:
        """Wait for exactly these standbys on commit ('' for none) and reload."""
        value = ",".join(f'"{n}"' for n in names if _plain(n))
        self.psql(f"ALTER SYSTEM SET synchronous_standby_names TO {_literal(value)}")
        self.reload()

    def sync_standbys(self) -> tuple[str, ...]:
        value = self.query("SHOW synchronous_standby_names")[0][0]
        return tuple(v.strip().strip('"') for v in value.split(",") if v.strip())

    def promote(self) -> None:
        """Promote this standby (pg_promote waits until it accepts writes)."""
        out = self.psql("SELECT pg_promote(true, 60)")
        if out.strip() != "t":
            raise PostgresError("promotion did not finish within 60 s")

    def checkpoint(self) -> None:
        """After a promotion: until a checkpoint, the control file still names the old
        timeline, and pg_rewind of the former primary would rewind to the wrong place."""
        self.psql("CHECKPOINT")

    def controldata_state(self) -> str:
        out = self._run([pg_bin("pg_controldata"), str(self.data_dir)], "pg_controldata")
        for line in out.splitlines():
            if line.startswith("Database cluster state:"):
                return line.split(":", 1)[1].strip()
        return "unknown"

    def ensure_clean_shutdown(self) -> None:
        """A crashed server must finish crash recovery before pg_rewind will touch it:
        run it once in single-user mode, which recovers and shuts down cleanly."""
        if self.controldata_state() in ("shut down", "shut down in recovery"):
            return
        (self.data_dir / "standby.signal").unlink(missing_ok=True)
        # Keep the WAL that pg_rewind will read (a checkpoint could recycle it).
        cmd = [
            pg_bin("postgres"),
            "--single",
            "-D",
            str(self.data_dir),
            "-c",
            "wal_keep_size=512MB",
            "-c",
            f"hba_file={self.hba_file}",
            "postgres",
        ]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user.name, "--", *cmd]
        subprocess.run(cmd, input="", capture_output=True, text=True, timeout=120, check=False)

    def rewind_from(self, host: str, port: int) -> None:
        """Make this stopped former primary a copy of the new primary's timeline."""
        self.ensure_clean_shutdown()
        source = (
            f"host={host} port={port} user={SUPERUSER} dbname=postgres passfile={self.passfile} "
            "sslmode=require connect_timeout=5"
        )
        self._run(
            [pg_bin("pg_rewind"), "-D", str(self.data_dir), f"--source-server={source}"],
            "pg_rewind",
            timeout=600,
        )

    def base_backup_from(self, host: str, port: int) -> None:
        """Replace the data directory with a fresh base backup of the primary."""
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self._run(
            [
                pg_bin("pg_basebackup"),
                "-D",
                str(self.data_dir),
                "-d",
                f"host={host} port={port} user={REPLICATION_USER} passfile={self.passfile} "
                "sslmode=require connect_timeout=5",
                "-X",
                "stream",
                "-c",
                "fast",
            ],
            "pg_basebackup",
            timeout=3600,
        )

    def follow(self, host: str, port: int) -> str:
        """(Re)start as a standby of ``host``: rewind when the data directory has one,
        else (or when rewinding fails) a fresh base backup. Returns what it did."""
        assert self.member is not None
        self.stop()
        self.member = self.member.following(host, port)
        how = "base backup"
        if self.is_initialised() and (self.data_dir / "standby.signal").exists():
            how = "restart"  # a standby (even a crashed one) just follows the new upstream
        elif self.is_initialised():
            try:
                self.rewind_from(host, port)
                how = "rewind"
            except PostgresError as exc:
                log.warning("%s; taking a fresh base backup instead", exc)
                self.base_backup_from(host, port)
        else:
            self.base_backup_from(host, port)
        # A rewound or copied directory carries the source's run-time settings.
        auto = self.data_dir / "postgresql.auto.conf"
        self._write_private(auto, b"# Do not edit: managed with ALTER SYSTEM by Strongroom.\n")
        for stale in ("postmaster.pid", "recovery.signal"):
            (self.data_dir / stale).unlink(missing_ok=True)
        self._write_private(self.data_dir / "standby.signal", b"")
        try:
            self.start()
        except PostgresError as exc:
            if how == "base backup":
                raise
            log.warning("standby did not start after %s (%s); taking a fresh base backup", how, exc)
            self.stop("immediate")
            self.base_backup_from(host, port)
            self._write_private(self.data_dir / "standby.signal", b"")
            self.start()
            how = "base backup"
        return how

    def replication(self) -> list[dict[str, str]]:
        """The primary's view of its standbys (pg_stat_replication)."""
        rows = self.query(
            "SELECT application_name, state, sync_state, "
            "COALESCE(replay_lsn - '0/0', 0), COALESCE(flush_lsn - '0/0', 0) "
            "FROM pg_stat_replication"
        )
        keys = ("name", "state", "sync_state", "replay_lsn", "flush_lsn")
        return [dict(zip(keys, r, strict=False)) for r in rows]

    def wal_position(self) -> int:
        """The current WAL position (primary) or the last replayed one (standby)."""
        row = self.query(
            "SELECT CASE WHEN pg_is_in_recovery() "
            "THEN COALESCE(pg_last_wal_replay_lsn() - '0/0', 0) "
            "ELSE pg_current_wal_lsn() - '0/0' END"
        )
        return int(float(row[0][0]))

    def write_epoch(self, epoch: int, node: str) -> None:
        """The new primary records its fencing token in the vault database (ClusterEpoch)."""
        self.psql(
            "INSERT INTO cluster_epoch (id, epoch, node_id, promoted_at) "
            f"VALUES (1, {int(epoch)}, {_literal(node)}, now() AT TIME ZONE 'utc') "
            "ON CONFLICT (id) DO UPDATE SET epoch = EXCLUDED.epoch, "
            "node_id = EXCLUDED.node_id, promoted_at = EXCLUDED.promoted_at",
            APP_DATABASE,
        )

    def upstream(self) -> str | None:
        """The host this standby streams from, if it streams."""
        rows = self.query("SELECT sender_host FROM pg_stat_wal_receiver WHERE status='streaming'")
        return rows[0][0] if rows and rows[0][0] else None


REPLICATION_USER = "replicator"
APP_USER = "strongroom"
APP_DATABASE = "strongroom"


@dataclass(frozen=True)
class ClusterMember:
    """How this node's PostgreSQL takes part in the cluster."""

    name: str
    advertise: str
    cert_pem: bytes
    key_pem: bytes
    superuser_password: str
    replication_password: str
    peers: tuple[str, ...] = ()
    upstream: str | None = None
    upstream_port: int = 2345

    def following(self, host: str | None, port: int = 2345) -> ClusterMember:
        return ClusterMember(
            self.name,
            self.advertise,
            self.cert_pem,
            self.key_pem,
            self.superuser_password,
            self.replication_password,
            self.peers,
            host,
            port,
        )

    def with_peers(self, peers: tuple[str, ...]) -> ClusterMember:
        return ClusterMember(
            self.name,
            self.advertise,
            self.cert_pem,
            self.key_pem,
            self.superuser_password,
            self.replication_password,
            peers,
            self.upstream,
            self.upstream_port,
        )


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _plain(name: str) -> bool:
    return bool(name) and name.replace("-", "").replace("_", "").replace(".", "").isalnum()


def _host_cidr(address: str) -> str:
    import ipaddress

    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"
