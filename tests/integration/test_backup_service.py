"""The backup service of a node: runs with history, retention on every target (local and
S3), the scheduler firing at the configured time on an injected clock, primary only."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from backup.restore import KeySource, open_verified
from backup.schedule import Schedule
from backup.service import BackupConfig, BackupService, S3Config
from backup.targets import LocalTarget, S3Location, S3Target
from node.errors import NotPrimaryError
from node.keyring import KeyRing
from node.services import NodeState, Services, build_services
from node.settings import Settings
from node.store.db import open_store
from tests.integration.backup_helpers import make_bucket, moto_s3, populate


class FakeClock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[Services]:
    settings = Settings(data_dir=tmp_path / "node")
    store = open_store(settings.db_url)
    services = build_services(settings, store, KeyRing.open(store, settings.key_path))
    populate(services)
    yield services
    store.dispose()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as endpoint:
        yield endpoint


def _service(services: Services, clock: FakeClock, state: NodeState | None = None) -> BackupService:
    return BackupService(
        services.settings,
        services.store,
        services.keyring,
        services.audit,
        state or NodeState(),
        clock=clock,
    )


def test_retention_keeps_exactly_n_locally_and_in_the_bucket(
    vault: Services, s3_endpoint: str
) -> None:
    make_bucket(s3_endpoint, "sr-retention")
    clock = FakeClock(dt.datetime(2026, 6, 1, 10, 0))
    service = _service(vault, clock)
    s3 = S3Config(enabled=True, bucket="sr-retention", prefix="prod", endpoint_url=s3_endpoint)
    service.save_config(BackupConfig(keep=2, s3=s3), "alice", "10.0.0.1")
    names = []
    for _ in range(4):
        clock.now += dt.timedelta(minutes=1)
        outcome = service.run(actor="alice", source_ip="10.0.0.1")
        assert outcome.record.result == "success", outcome.record.message
        names.append(outcome.record.archive_name)
    local = LocalTarget(vault.settings.data_dir / "backUp")
    bucket = S3Target(S3Location(bucket="sr-retention", prefix="prod", endpoint_url=s3_endpoint))
    assert [a.name for a in local.archives()] == names[-2:]
    assert [a.name for a in bucket.archives()] == names[-2:]
    history = service.history()
    assert [h.archive_name for h in history] == names[::-1]
    assert all(h.size_bytes > 1000 and h.target == "local+s3" for h in history)
    assert all(h.seconds is not None and h.seconds >= 0 for h in history)
    # what went to the bucket is a complete archive that verifies with the master key
    fetched = bucket.fetch(names[-1], vault.settings.data_dir / "check.zip")
    verified = open_verified(fetched, KeySource.from_key_file(vault.settings.key_path))
    verified.reader.close()


def test_a_failing_target_is_recorded_and_the_other_still_gets_the_archive(
    vault: Services, s3_endpoint: str
) -> None:
    service = _service(vault, FakeClock(dt.datetime(2026, 6, 1, 10, 0)))
    s3 = S3Config(enabled=True, bucket="sr-missing-bucket", endpoint_url=s3_endpoint)
    service.save_config(BackupConfig(keep=3, s3=s3), "alice", "10.0.0.1")
    outcome = service.run()
    assert outcome.record.result == "partial"
    assert "sr-missing-bucket" in outcome.record.message
    assert "NoSuchBucket" in outcome.record.message
    assert len(LocalTarget(vault.settings.data_dir / "backUp").archives()) == 1


def test_scheduler_fires_at_the_configured_time(vault: Services) -> None:
    clock = FakeClock(dt.datetime(2026, 6, 1, 9, 0))
    service = _service(vault, clock)
    daily = Schedule(kind="days", every_days=1, at=dt.time(2, 0))
    service.save_config(BackupConfig(schedule=daily, keep=5), "alice", "10.0.0.1")
    # configured after today's 02:00: nothing runs until tomorrow 02:00
    assert service.tick().startswith("no action")
    clock.now = dt.datetime(2026, 6, 2, 1, 59, 59)
    assert service.tick().startswith("no action")
    assert service.history() == []
    clock.now = dt.datetime(2026, 6, 2, 2, 0)
    assert service.tick() == "ran the backup due 2026-06-02 02:00:00: success"
    assert len(service.history()) == 1
    clock.now = dt.datetime(2026, 6, 2, 2, 0, 30)
    assert service.tick().startswith("no action: next backup due 2026-06-03 02:00")
    # a node that was down at 02:00 catches up once when it comes back
    clock.now = dt.datetime(2026, 6, 4, 7, 0)
    assert service.tick() == "ran the backup due 2026-06-04 02:00:00: success"
    assert service.tick().startswith("no action")
    assert len(service.history()) == 2


def test_weekly_schedule_on_the_primary_only(vault: Services) -> None:
    clock = FakeClock(dt.datetime(2026, 6, 1, 12, 0))  # a Monday
    state = NodeState(role="standby", writable=False, primary_address="10.0.0.9")
    service = _service(vault, clock, state)
    weekly = Schedule(kind="weekly", weekday=2, at=dt.time(3, 30))
    service.save_config(BackupConfig(schedule=weekly), "alice", "10.0.0.1")
    clock.now = dt.datetime(2026, 6, 3, 3, 30)  # Wednesday 03:30
    assert "only the primary" in service.tick()
    with pytest.raises(NotPrimaryError, match="run backups on the primary"):
        service.run()
    assert service.history() == []
    state.role = "primary"
    assert service.tick().startswith("ran the backup due 2026-06-03 03:30")


def test_passphrase_is_never_stored_and_opens_new_archives(vault: Services, tmp_path: Path) -> None:
    service = _service(vault, FakeClock(dt.datetime(2026, 6, 1, 12, 0)))
    service.set_passphrase("a long recovery passphrase", "alice", "10.0.0.1")
    outcome = service.run()
    with vault.store.engine.connect() as conn:
        dump = str(conn.exec_driver_sql("SELECT * FROM app_settings").all())
    assert "a long recovery passphrase" not in dump
    archive = LocalTarget(vault.settings.data_dir / "backUp").fetch(
        outcome.record.archive_name, tmp_path / "a.zip"
    )
    verified = open_verified(archive, KeySource(passphrase="a long recovery passphrase"))
    verified.reader.close()
    with pytest.raises(Exception, match="at least 12 characters"):
        service.set_passphrase("short", "alice", "10.0.0.1")


def test_settings_changes_are_validated_and_audited(vault: Services) -> None:
    from sqlalchemy import select

    from node.store.models import AuditRow

    service = _service(vault, FakeClock(dt.datetime(2026, 6, 1, 12, 0)))
    bad = [
        (BackupConfig(keep=0), "between 1 and 1000"),
        (BackupConfig(local_enabled=False), "at least one target"),
        (BackupConfig(s3=S3Config(enabled=True, bucket="x")), "bucket name"),
        (
            dataclasses.replace(
                BackupConfig(), s3=S3Config(enabled=True, bucket="okay", endpoint_url="ftp://x")
            ),
            "endpoint",
        ),
    ]
    for config, message in bad:
        with pytest.raises(Exception, match=message):
            service.save_config(config, "alice", "10.0.0.1")
    service.save_config(BackupConfig(keep=9), "alice", "10.0.0.1")
    assert service.config().keep == 9
    with vault.store.sessions() as s:
        ops = s.scalars(select(AuditRow.operation).where(AuditRow.username == "alice")).all()
    assert ops.count("backup settings changed") == 1


def test_a_restored_node_keeps_its_schedule_paused_until_resumed(
    vault: Services, tmp_path: Path
) -> None:
    from backup.restore import restore
    from backup.service import snapshot_archive

    clock = FakeClock(dt.datetime(2026, 6, 1, 12, 0))
    source = _service(vault, clock)
    daily = Schedule(kind="days", at=dt.time(2, 0))
    source.save_config(BackupConfig(schedule=daily), "alice", "10.0.0.1")
    archive = snapshot_archive(
        vault.store, vault.settings.key_path, tmp_path / "a.zip", installation_id="t"
    ).path
    verified = open_verified(archive, KeySource.from_key_file(vault.settings.key_path))
    dr_dir = tmp_path / "dr"
    restore(verified, data_dir=dr_dir, key_path=dr_dir / "keys" / "master.key", database_url=None)
    verified.reader.close()
    settings = Settings(data_dir=dr_dir)
    store = open_store(settings.db_url)
    try:
        restored = build_services(settings, store, KeyRing.open(store, settings.key_path))
        service = _service(restored, clock)
        assert service.config().schedule == source.config().schedule
        clock.now = dt.datetime(2026, 6, 2, 2, 0)
        assert "paused because this data directory was restored" in service.tick()
        assert service.history() == []
        service.resume("alice", "10.0.0.1")
        assert service.tick() == "ran the backup due 2026-06-02 02:00:00: success"
    finally:
        store.dispose()


def test_a_run_that_cannot_read_the_key_is_recorded_as_failed(vault: Services) -> None:
    service = _service(vault, FakeClock(dt.datetime(2026, 6, 1, 12, 0)))
    key = vault.settings.key_path
    moved = key.with_name("elsewhere.key")
    key.rename(moved)
    try:
        outcome = service.run(actor="alice", source_ip="10.0.0.1")
    finally:
        moved.rename(key)
    assert outcome.record.result == "failed"
    assert f"master key file {key} does not exist" in outcome.record.message
    assert service.history()[0].result == "failed"
    assert LocalTarget(vault.settings.data_dir / "backUp").archives() == []
    assert not list((vault.settings.data_dir / "run" / "backup-staging").iterdir())


def test_run_on_one_target_only(vault: Services, s3_endpoint: str) -> None:
    make_bucket(s3_endpoint, "sr-one-target")
    service = _service(vault, FakeClock(dt.datetime(2026, 6, 1, 12, 0)))
    s3 = S3Config(enabled=True, bucket="sr-one-target", endpoint_url=s3_endpoint)
    service.save_config(BackupConfig(s3=s3), "alice", "10.0.0.1")
    outcome = service.run(targets=["s3"])
    assert outcome.record.result == "success" and outcome.record.target == "s3"
    assert LocalTarget(vault.settings.data_dir / "backUp").archives() == []
    bucket = S3Target(
        S3Location(bucket="sr-one-target", prefix="strongroom", endpoint_url=s3_endpoint)
    )  # the default prefix
    assert [a.name for a in bucket.archives()] == [outcome.record.archive_name]
