"""Backup and restore of a large vault on PostgreSQL, beside pg_dump -Fc and pg_restore.

What it does, in one run on one machine:

1. starts a throwaway PostgreSQL 15 server (the product's own cluster.postgres manager),
   creates a vault (schema, key ring) and fills it with bulk SQL: ``--accounts`` accounts
   (default 100,000, on 10,000 resources, each with a key-ring-sized password ciphertext)
   and ``--audit`` audit rows (default 1,000,000);
2. times ``pg_dump -Fc`` of that database and ``pg_restore`` of the dump into an empty
   database (the reference);
3. times a Strongroom backup of the same database (``backup.service.snapshot_archive``)
   and a verified restore of the archive into another empty database
   (``backup.restore.open_verified`` + ``restore``), each in its own child process;
4. prints seconds and peak resident memory (``ru_maxrss`` of each child process, from
   ``wait4``) for all four, and the ratios backup/pg_dump and restore/pg_restore.

    .venv/bin/python bench/backup.py                                   # the full size
    .venv/bin/python bench/backup.py --accounts 10000 --audit 100000   # a quick look

Timings are printed, never asserted. Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run ``cmd``; return wall seconds, its peak RSS in KiB, and its stdout."""
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, env={**os.environ, **(env or {})})
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    err.seek(0)
    text = out.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed:\n{err.read().decode()[-3000:]}")
    return seconds, int(usage.ru_maxrss), text


# --- the vault ---------------------------------------------------------------------------


FILL_SQL = [
    # 100 owners
    """INSERT INTO users (id, username, full_name, email, role, super_admin, kind, status,
           must_change_password, failed_logins, custom_attributes, created_at)
       SELECT i, 'user' || i, 'User ' || i, 'user' || i || '@example.org',
              CASE WHEN i % 10 = 0 THEN 'administrator' ELSE 'password_user' END,
              false, 'person', 'active', false, 0, '{}', now()
       FROM generate_series(1000, 1099) AS i""",
    """INSERT INTO resources (id, name, dns_name, resource_type, description, department,
           location, url, domain_name, owner_id, custom_attributes, created_at)
       SELECT i, 'server-' || i, 'srv' || i || '.corp.example', 'Linux',
              'database host number ' || i, 'ops', 'dc' || (i % 3), '', 'corp',
              1000 + (i % 100), '{"rack": "r1"}', now()
       FROM generate_series(1, :resources) AS i""",
    """INSERT INTO accounts (id, resource_id, username, password_ct, notes, custom_attributes,
           reason_required, ticket_required, last_changed_at, created_at)
       SELECT i, 1 + (i % :resources), 'acct' || i,
              decode('0100000001' || md5(i::text) || md5((i * 7)::text) || md5((i * 13)::text),
                     'hex'),
              '', '{}', false, false, now(), now()
       FROM generate_series(1, :accounts) AS i""",
    """INSERT INTO audit_log (id, ts, category, username, source_ip, operation, target,
           resource_id, account_id, reason, result, detail, prev_hmac, hmac)
       SELECT i, timestamp '2026-01-01' + i * interval '1 second', 'resource',
              'user' || (1000 + i % 100), '10.0.' || (i % 250) || '.' || (i % 200),
              'view password', 'server-' || (1 + i % :resources) || '/acct' || (i % :accounts),
              1 + i % :resources, 1 + i % :accounts, 'ticket ' || (i % 5000), 'success', '',
              md5((i - 1)::text) || md5((i - 1)::text), md5(i::text) || md5(i::text)
       FROM generate_series(1, :audit) AS i""",
    """UPDATE audit_head SET last_id = :audit""",
]


def build_vault(pg: Any, accounts: int, audit: int) -> tuple[str, Path]:
    from sqlalchemy import text

    from node.keyring import KeyRing
    from node.store.db import open_store

    pg.create_database("bench_src")
    url = pg.url("bench_src")
    key_path = pg.base_dir.parent / "keys" / "master.key"
    store = open_store(url)
    KeyRing.open(store, key_path)
    params = {"accounts": accounts, "audit": audit, "resources": max(1, accounts // 10)}
    started = time.monotonic()
    with store.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO audit_head (id, last_id, last_hmac, head_hmac) VALUES (1, 0, '', '')")
        )
        for sql in FILL_SQL:
            names = [n for n in params if f":{n}" in sql]
            conn.execute(text(sql), {n: params[n] for n in names})
    with store.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
    store.dispose()
    print(f"filled the vault in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return url, key_path


# --- the measured steps (each in its own child process) ---------------------------------


def step_backup(url: str, key_path: str, dest: str) -> None:
    from backup.service import snapshot_archive
    from node.store.db import open_store

    store = open_store(url, migrate=False)
    started = time.monotonic()
    info = snapshot_archive(store, Path(key_path), Path(dest), installation_id="bench")
    print(
        json.dumps(
            {"seconds": time.monotonic() - started, "rows": info.total_rows, "bytes": info.size}
        )
    )


def step_restore(url: str, key_path: str, archive: str, data_dir: str) -> None:
    from backup.restore import KeySource, open_verified, restore

    started = time.monotonic()
    verified = open_verified(Path(archive), KeySource.from_key_file(Path(key_path)))
    summary = restore(
        verified, data_dir=Path(data_dir), key_path=Path(data_dir) / "master.key", database_url=url
    )
    verified.reader.close()
    print(json.dumps({"seconds": time.monotonic() - started, "rows": summary.rows}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--audit", type=int, default=1_000_000)
    parser.add_argument("--step", choices=["backup", "restore"], help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step == "backup":
        step_backup(*args.args)
        return
    if args.step == "restore":
        step_restore(*args.args)
        return

    from cluster.postgres import LocalPostgres, pg_bin

    work = Path(tempfile.mkdtemp(prefix="sr-bench-backup-"))
    os.chmod(work, 0o755)  # noqa: S103 - the postgres OS user must reach its data directory
    pg = LocalPostgres(work / "pg", free_port())
    try:
        pg.initdb()
        pg.start()
        url, key_path = build_vault(pg, args.accounts, args.audit)
        env = {"PGPASSWORD": pg.superuser_password}
        conn = ["-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres"]
        dump = work / "vault.dump"
        d_s, d_rss, _ = measured(
            [pg_bin("pg_dump"), *conn, "-Fc", "-f", str(dump), "bench_src"], env
        )
        pg.create_database("bench_pgrestore")
        r_s, r_rss, _ = measured(
            [pg_bin("pg_restore"), *conn, "-d", "bench_pgrestore", str(dump)], env
        )
        me = [sys.executable, __file__]
        archive = work / "vault.zip"
        b_wall, b_rss, out = measured([*me, "--step", "backup", url, str(key_path), str(archive)])
        b = json.loads(out)
        pg.create_database("bench_restore")
        target = pg.url("bench_restore")
        s_wall, s_rss, out = measured(
            [*me, "--step", "restore", target, str(key_path), str(archive), str(work / "dr")]
        )
        s = json.loads(out)
        report(
            args, d_s, d_rss, dump.stat().st_size, r_s, r_rss, b, b_wall, b_rss, s, s_wall, s_rss
        )
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


def report(
    args: Any,
    d_s: float,
    d_rss: int,
    d_size: int,
    r_s: float,
    r_rss: int,
    b: dict[str, Any],
    b_wall: float,
    b_rss: int,
    s: dict[str, Any],
    s_wall: float,
    s_rss: int,
) -> None:
    mib = 1024.0
    lines = [
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}",
        f"vault: {args.accounts:,} accounts, {args.audit:,} audit rows, {b['rows']:,} rows in all",
        "",
        f"{'step':<34}{'seconds':>9}{'peak RSS':>12}{'size':>12}",
        f"{'pg_dump -Fc':<34}{d_s:>9.1f}{d_rss / mib:>9.0f} MB{d_size / 2**20:>9.1f} MB",
        f"{'strongroom backup (in process)':<34}{b['seconds']:>9.1f}{b_rss / mib:>9.0f} MB"
        f"{b['bytes'] / 2**20:>9.1f} MB",
        f"{'  (with interpreter start)':<34}{b_wall:>9.1f}",
        f"{'pg_restore':<34}{r_s:>9.1f}{r_rss / mib:>9.0f} MB",
        f"{'strongroom restore (in process)':<34}{s['seconds']:>9.1f}{s_rss / mib:>9.0f} MB",
        f"{'  (with interpreter start)':<34}{s_wall:>9.1f}",
        "",
        f"backup / pg_dump:      {b['seconds'] / d_s:.2f}x  (aim <= 1.5x)",
        f"restore / pg_restore:  {s['seconds'] / r_s:.2f}x  (aim <= 2x)",
        f"peak memory: backup {b_rss / mib:.0f} MB, restore {s_rss / mib:.0f} MB (aim < 150 MB)",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
