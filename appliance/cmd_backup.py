"""Backup and disaster-recovery verbs.

- ``strongroom backup run [--target local|s3]``: one backup now (through the running node,
  or offline under the data directory's lock);
- ``strongroom backup configure ...``: schedule, targets, retention, recovery passphrase;
- ``strongroom backup status``: the configuration and the recent history;
- ``strongroom backup list DIR | --s3 s3://BUCKET/PREFIX``: archives kept there;
- ``strongroom backup verify ARCHIVE --key-file K | --recovery-passphrase-file F``;
- ``strongroom restore ARCHIVE|s3://BUCKET/KEY --key-file K | --recovery-passphrase-file F
  --data-dir DIR [--database-url URL] [--force]``.

Verify and restore need no node and no configuration: only the archive and a key. Progress
(rows and bytes) goes to stderr; the one-line summary to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from appliance.context import data_dir_lock, on_node, settings_from_args
from appliance.logs import setup_logging
from appliance.server import Node, control_verb
from backup.errors import BackupError
from backup.restore import KeySource, open_verified, restore
from backup.schedule import parse_time, parse_weekday
from backup.service import BackupConfig, BackupService
from backup.targets import BackupTarget, LocalTarget, S3Location, S3Target
from node.errors import StrongroomError, ValidationError
from node.keyring import KeyRing
from node.settings import Settings
from node.store.db import Store

ACTOR = "local admin"
SOURCE = "local"
RUN_TIMEOUT = 24 * 3600.0


# --- progress --------------------------------------------------------------------------------


class Progress:
    """Throttled progress lines on stderr: at most one a second."""

    def __init__(self, verb: str, every: float = 1.0) -> None:
        self.verb = verb
        self.every = every
        self._last = time.monotonic()

    def __call__(self, what: str, rows: int, nbytes: int) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            return
        self._last = now
        parts = [f"{rows:,} rows"] if rows else []
        if nbytes:
            parts.append(human_bytes(nbytes))
        print(f"{self.verb}: {', '.join(parts) or '...'} ({what})", file=sys.stderr, flush=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


# --- on the node or offline ------------------------------------------------------------------


def _on_node(
    settings: Settings,
    verb: str,
    args: dict[str, Any],
    offline: Callable[[BackupService], dict[str, Any]],
) -> dict[str, Any]:
    def with_service(store: Store, keyring: KeyRing) -> dict[str, Any]:
        from node.services import build_services

        services = build_services(settings, store, keyring)
        return offline(BackupService(settings, store, keyring, services.audit, services.state))

    try:
        return on_node(settings, verb, args, with_service, timeout=RUN_TIMEOUT)
    except StrongroomError as exc:
        if str(exc).startswith("no vault in "):
            raise BackupError(str(exc)) from None
        raise


def _run(service: BackupService, args: dict[str, Any], progress: Any = None) -> dict[str, Any]:
    targets = [str(args["target"])] if args.get("target") else None
    kwargs: dict[str, Any] = {"targets": targets, "actor": ACTOR, "source_ip": SOURCE}
    if progress is not None:
        kwargs["progress"] = progress
    outcome = service.run(**kwargs)
    return {"ok": outcome.record.result == "success", "summary": outcome.sentence()}


def _apply_changes(config: BackupConfig, changes: dict[str, Any]) -> BackupConfig:
    sched = config.schedule
    s: dict[str, Any] = {}
    if "schedule" in changes:
        s["kind"] = changes["schedule"]
    if "every" in changes:
        s["every_days"] = int(changes["every"])
    if "weekday" in changes:
        s["weekday"] = parse_weekday(str(changes["weekday"]))
    if "day" in changes:
        s["day"] = int(changes["day"])
    if "at" in changes:
        s["at"] = parse_time(str(changes["at"]))
    if s:
        sched = dataclasses.replace(sched, **s)
    s3 = config.s3
    s3_fields = {
        "s3_bucket": "bucket",
        "s3_prefix": "prefix",
        "s3_endpoint_url": "endpoint_url",
        "s3_region": "region",
        "s3_kms_key_id": "kms_key_id",
    }
    s3_changes: dict[str, Any] = {v: str(changes[k]) for k, v in s3_fields.items() if k in changes}
    if "s3_sse" in changes:
        s3_changes["sse"] = "" if changes["s3_sse"] == "none" else str(changes["s3_sse"])
    if "s3" in changes:
        s3_changes["enabled"] = changes["s3"] == "on"
    if s3_changes:
        s3 = dataclasses.replace(s3, **s3_changes)
    result = dataclasses.replace(config, schedule=sched, s3=s3)
    if "keep" in changes:
        result = dataclasses.replace(result, keep=int(changes["keep"]))
    if "local" in changes:
        result = dataclasses.replace(result, local_enabled=changes["local"] == "on")
    return result


def _configure(service: BackupService, args: dict[str, Any]) -> dict[str, Any]:
    changes = dict(args.get("changes") or {})
    if changes:
        service.save_config(_apply_changes(service.config(), changes), ACTOR, SOURCE)
    if "passphrase" in args:
        service.set_passphrase(args["passphrase"], ACTOR, SOURCE)
    if args.get("resume"):
        service.resume(ACTOR, SOURCE)
    return _status(service, {})


def _status(service: BackupService, _args: dict[str, Any]) -> dict[str, Any]:
    config = service.config()
    nxt = service.next_run()
    return {
        "config": config.as_dict(),
        "schedule": config.schedule.describe(),
        "next_run": nxt.isoformat(sep=" ", timespec="minutes") if nxt else None,
        "passphrase": service.has_passphrase(),
        "paused": service.paused,
        "history": [
            {
                "started": r.started_at.isoformat(sep=" ", timespec="seconds"),
                "seconds": r.seconds,
                "target": r.target,
                "archive": r.archive_name,
                "size": r.size_bytes,
                "result": r.result,
                "message": r.message,
            }
            for r in service.history(10)
        ],
    }


# --- control verbs (run inside the node) -----------------------------------------------------


def _service(node: Node) -> BackupService:
    if node.backup is None:
        raise BackupError("backups are not available on this node")
    return node.backup


@control_verb("backup.run")
async def _run_verb(node: Node, args: dict[str, Any]) -> dict[str, Any]:
    return dict(await node.in_thread(_run, _service(node), args))


@control_verb("backup.configure")
async def _configure_verb(node: Node, args: dict[str, Any]) -> dict[str, Any]:
    return dict(await node.in_thread(_configure, _service(node), args))


@control_verb("backup.status")
async def _status_verb(node: Node, args: dict[str, Any]) -> dict[str, Any]:
    return dict(await node.in_thread(_status, _service(node), args))


# --- commands --------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    setup_logging("WARNING")
    request = {"target": args.target}
    progress = Progress("backup")
    result = _on_node(settings, "backup.run", request, lambda svc: _run(svc, request, progress))
    print(result["summary"])
    return 0 if result["ok"] else 1


def _read_passphrase(path: Path) -> str:
    try:
        text = path.read_text().rstrip("\r\n")
    except OSError as exc:
        raise ValidationError(f"cannot read passphrase file {path}: {exc.strerror}") from None
    return text


def cmd_configure(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    setup_logging("WARNING")
    names = [
        "schedule",
        "every",
        "weekday",
        "day",
        "at",
        "keep",
        "local",
        "s3",
        "s3_bucket",
        "s3_prefix",
        "s3_endpoint_url",
        "s3_region",
        "s3_sse",
        "s3_kms_key_id",
    ]
    changes = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    request: dict[str, Any] = {"changes": changes}
    if args.passphrase_file is not None:
        request["passphrase"] = _read_passphrase(args.passphrase_file)
    elif args.no_passphrase:
        request["passphrase"] = None
    if args.resume:
        request["resume"] = True
    result = _on_node(settings, "backup.configure", request, lambda s: _configure(s, request))
    _print_status(result)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    setup_logging("WARNING")
    _print_status(_on_node(settings, "backup.status", {}, lambda s: _status(s, {})))
    return 0


def _print_status(result: dict[str, Any]) -> None:
    config = result["config"]
    targets = []
    if config["local_enabled"]:
        targets.append("local (DATA_DIR/backUp)")
    if config["s3"]["enabled"]:
        s3 = config["s3"]
        where = f"s3://{s3['bucket']}/{s3['prefix']}".rstrip("/")
        targets.append(where + (f" at {s3['endpoint_url']}" if s3["endpoint_url"] else ""))
    print(f"schedule:   {result['schedule']}")
    print(f"next run:   {result['next_run'] or '-'}")
    print(f"keep:       latest {config['keep']} on every target")
    print(f"targets:    {', '.join(targets) or 'none'}")
    print(f"passphrase: {'set' if result['passphrase'] else 'not set'}")
    if result.get("paused"):
        print("paused:     scheduled backups are paused since this data directory was restored;")
        print("            check the targets, then: strongroom backup configure --resume")
    for run in result["history"]:
        secs = f"{run['seconds']:.1f} s" if run["seconds"] is not None else "-"
        print(
            f"  {run['started']}  {run['result']:<8} {human_bytes(run['size']):>9}  {secs:>8}  "
            f"{run['target']:<9} {run['archive'] or run['message']}"
        )


def _s3_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"endpoint_url": args.endpoint_url, "region": args.region}


def cmd_list(args: argparse.Namespace) -> int:
    setup_logging("WARNING")
    target: BackupTarget
    if args.s3:
        target = S3Target(S3Location.parse_uri(args.s3, **_s3_kwargs(args)))
    elif args.directory is not None:
        if not args.directory.is_dir():
            raise BackupError(f"{args.directory} is not a directory")
        target = LocalTarget(args.directory)
    else:
        raise ValidationError("give a directory or --s3 s3://BUCKET/PREFIX")
    archives = target.archives()
    for a in archives:
        print(f"{a.name}  {human_bytes(a.size):>9}  {a.modified.isoformat(sep=' ')[:19]}")
    print(f"{len(archives)} archive(s) in {target.describe()}", file=sys.stderr)
    return 0


@contextmanager
def _local_archive(spec: str, args: argparse.Namespace) -> Iterator[Path]:
    """The archive as a local file: as given, or downloaded from s3://BUCKET/KEY."""
    if not spec.startswith("s3://"):
        yield Path(spec)
        return
    location = S3Location.parse_uri(spec, **_s3_kwargs(args))
    folder, _, name = location.prefix.rpartition("/")
    target = S3Target(dataclasses.replace(location, prefix=folder))
    with tempfile.TemporaryDirectory(prefix="strongroom-restore-") as tmp:
        print(f"downloading {spec} ...", file=sys.stderr, flush=True)
        yield target.fetch(name, Path(tmp) / name)


def _key_source(args: argparse.Namespace) -> KeySource:
    if args.key_file is not None:
        return KeySource.from_key_file(args.key_file)
    return KeySource.from_passphrase_file(args.recovery_passphrase_file)


def cmd_verify(args: argparse.Namespace) -> int:
    setup_logging("WARNING")
    source = _key_source(args)
    with _local_archive(args.archive, args) as path:
        verified = open_verified(path, source, Progress("verify"))
        try:
            m = verified.reader.manifest
            print(
                f"archive OK: {path.name}, made {m.created_at}, schema revision "
                f"{m.schema_revision}, {len(m.tables)} tables, {m.total_rows} rows, every "
                "checksum and authentication tag verified"
            )
        finally:
            verified.reader.close()
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    if args.data_dir is None:
        raise ValidationError("restore needs --data-dir DIR (the new node's data directory)")
    settings = settings_from_args(args)
    setup_logging("WARNING")
    source = _key_source(args)
    with _local_archive(args.archive, args) as path:
        verified = open_verified(path, source, Progress("verify"))
        try:
            settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            with data_dir_lock(settings, "restore"):
                summary = restore(
                    verified,
                    data_dir=settings.data_dir,
                    key_path=settings.key_path,
                    database_url=args.database_url or settings.database_url,
                    force=args.force,
                    progress=Progress("restore"),
                )
        finally:
            verified.reader.close()
    print(
        f"restored {summary.rows} rows in {summary.tables} tables into {summary.database} "
        f"(schema {summary.schema_revision} -> {summary.migrated_to}) in {summary.seconds:.1f} s; "
        f"master key written to {summary.key_path}"
    )
    return 0


def _key_options(p: argparse.ArgumentParser) -> None:
    keys = p.add_mutually_exclusive_group(required=True)
    keys.add_argument("--key-file", type=Path, default=None, help="the master key file")
    keys.add_argument(
        "--recovery-passphrase-file",
        type=Path,
        default=None,
        help="a file holding the recovery passphrase",
    )


def _s3_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint-url", default=None, help="S3 endpoint (MinIO, Ceph RGW)")
    p.add_argument("--region", default=None, help="S3 region")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("backup", help="encrypted backups: run, configure, list, verify")
    verbs = p.add_subparsers(dest="backup_verb", metavar="ACTION")
    verbs.required = True

    r = verbs.add_parser("run", parents=[common], help="run one backup now")
    r.add_argument(
        "--target",
        choices=["local", "s3"],
        default=None,
        help="only this target (default: every configured target)",
    )
    r.set_defaults(func=cmd_run)

    c = verbs.add_parser("configure", parents=[common], help="schedule, targets, retention")
    c.add_argument("--schedule", choices=["off", "days", "weekly", "monthly"], default=None)
    c.add_argument("--every", type=int, default=None, help="every N days (1-28)")
    c.add_argument("--weekday", default=None, help="weekly: Monday..Sunday")
    c.add_argument("--day", type=int, default=None, help="monthly: day of month (1-28)")
    c.add_argument("--at", default=None, help="time of day, HH:MM UTC")
    c.add_argument("--keep", type=int, default=None, help="keep the latest N archives")
    c.add_argument("--local", choices=["on", "off"], default=None, help="DATA_DIR/backUp")
    c.add_argument("--s3", choices=["on", "off"], default=None)
    c.add_argument("--s3-bucket", default=None)
    c.add_argument("--s3-prefix", default=None)
    c.add_argument("--s3-endpoint-url", default=None)
    c.add_argument("--s3-region", default=None)
    c.add_argument("--s3-sse", choices=["none", "AES256", "aws:kms"], default=None)
    c.add_argument("--s3-kms-key-id", default=None)
    pw = c.add_mutually_exclusive_group()
    pw.add_argument(
        "--passphrase-file",
        type=Path,
        default=None,
        help="set the recovery passphrase from this file",
    )
    pw.add_argument("--no-passphrase", action="store_true", help="remove the passphrase")
    c.add_argument("--resume", action="store_true", help="resume scheduled backups after a restore")
    c.set_defaults(func=cmd_configure)

    s = verbs.add_parser("status", parents=[common], help="configuration and history")
    s.set_defaults(func=cmd_status)

    ls = verbs.add_parser("list", help="archives in a directory or S3 bucket")
    ls.add_argument("directory", type=Path, nargs="?", default=None)
    ls.add_argument("--s3", default=None, metavar="s3://BUCKET/PREFIX")
    _s3_options(ls)
    ls.set_defaults(func=cmd_list)

    v = verbs.add_parser("verify", help="check an archive completely, writing nothing")
    v.add_argument("archive", metavar="ARCHIVE|s3://BUCKET/KEY")
    _key_options(v)
    _s3_options(v)
    v.set_defaults(func=cmd_verify)

    rs = sub.add_parser("restore", parents=[common], help="restore an archive into a data dir")
    rs.add_argument("archive", metavar="ARCHIVE|s3://BUCKET/KEY")
    _key_options(rs)
    rs.add_argument(
        "--database-url",
        default=None,
        help="restore into this PostgreSQL database (default: SQLite in the dir)",
    )
    rs.add_argument("--force", action="store_true", help="replace a target that holds data")
    _s3_options(rs)
    rs.set_defaults(func=cmd_restore)


__all__ = ["register"]
