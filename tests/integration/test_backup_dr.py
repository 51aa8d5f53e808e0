"""The disaster-recovery runbook, end to end with real processes: an administrator sets up
backups to a bucket in Admin > Backup, backups run from the console and the CLI, then an
operator on a "fresh machine" with only the bucket and the recovery passphrase lists,
verifies and restores, and the restored node serves the vault over HTTPS."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.keyring import KeyRing, read_key_file
from node.settings import Settings
from node.store.db import open_store
from tests.helpers import Client, NodeProcess, free_port, run_cli
from tests.integration.backup_helpers import AWS_ENV, make_bucket, member_data_offsets, moto_s3

NEW_ADMIN_PASSWORD = "Admin-Password-4-DR!"
PASSPHRASE = "recovery passphrase for the DR binder"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as endpoint:
        yield endpoint


def _admin(node: NodeProcess) -> Client:
    c = node.client()
    otp = node.initial_password()
    assert c.login("admin", otp).status == 302
    resp = c.post_form(
        "/change-password",
        {"current": otp, "new": NEW_ADMIN_PASSWORD, "confirm": NEW_ADMIN_PASSWORD},
    )
    assert resp.status == 302
    return c


def _history_rows(client: Client) -> int:
    page = client.get("/admin/backup").text
    return page.count('<tr class="backup-success">')


def test_console_cli_bucket_and_restore_on_a_fresh_machine(
    tmp_path: Path, s3_endpoint: str
) -> None:
    make_bucket(s3_endpoint, "sr-dr-bucket")
    node = NodeProcess(tmp_path / "prod", free_port(), env=dict(AWS_ENV)).start()
    try:
        anonymous = node.client().get("/admin/backup")
        assert anonymous.status == 302
        assert anonymous.headers["location"] == "/login?next=%2Fadmin%2Fbackup"
        admin = _admin(node)
        page = admin.get("/admin/backup")
        assert (
            page.status == 200 and "Run now" in page.text and "No backup has run yet" in page.text
        )
        settings = {
            "kind": "weekly",
            "weekday": "6",
            "at": "02:30",
            "every_days": "1",
            "day": "1",
            "keep": "1",
            "local_enabled": "on",
            "s3_enabled": "on",
            "s3_bucket": "sr-dr-bucket",
            "s3_prefix": "prod",
            "s3_endpoint_url": s3_endpoint,
            "s3_region": "us-east-1",
            "s3_sse": "AES256",
            "s3_kms_key_id": "",
        }
        bad = admin.post_form("/admin/backup/settings", {**settings, "keep": "0"})
        assert bad.status == 400 and "between 1 and 1000" in bad.text
        assert admin.post_form("/admin/backup/settings", settings).status == 302
        page = admin.get("/admin/backup").text
        assert "every Sunday at 02:30 UTC" in page
        resp = admin.post_form(
            "/admin/backup/passphrase", {"passphrase": PASSPHRASE, "confirm": PASSPHRASE}
        )
        assert resp.status == 302
        assert 'id="backup-passphrase-state">set<' in admin.get("/admin/backup").text

        # run now from the console (in the background), then twice from the CLI
        resp = admin.post_form("/admin/backup/run", {})
        assert resp.status == 302 and resp.headers["location"].endswith("done=started")
        deadline = time.monotonic() + 30
        while _history_rows(admin) < 1:
            assert time.monotonic() < deadline, "the console's backup never finished"
            time.sleep(0.2)
        time.sleep(1.1)  # archive names carry the second they were made
        out = run_cli("backup", "run", "--data-dir", str(node.data_dir), env=AWS_ENV)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("backup strongroom-backup-") and "-> local+s3" in out.stdout
        assert _history_rows(admin) == 2
        local = sorted(p.name for p in (node.data_dir / "backUp").iterdir())
        assert len(local) == 1  # keep the latest 1
        master_key = node.data_dir / "keys" / "master.key"
        original_key = read_key_file(master_key)
    finally:
        node.stop()

    # --- a fresh machine: only the bucket and the passphrase ---------------------------
    listing = run_cli(
        "backup",
        "list",
        "--s3",
        "s3://sr-dr-bucket/prod",
        "--endpoint-url",
        s3_endpoint,
        env=AWS_ENV,
    )
    assert listing.returncode == 0, listing.stderr
    names = [line.split()[0] for line in listing.stdout.splitlines()]
    assert names == local
    pfile = tmp_path / "passphrase.txt"
    pfile.write_text(PASSPHRASE + "\n")
    os.chmod(pfile, 0o600)
    uri = f"s3://sr-dr-bucket/prod/{names[-1]}"
    verify = run_cli(
        "backup",
        "verify",
        uri,
        "--recovery-passphrase-file",
        str(pfile),
        "--endpoint-url",
        s3_endpoint,
        env=AWS_ENV,
    )
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout.startswith("archive OK:")

    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not the passphrase at all\n")
    refused = run_cli(
        "restore",
        uri,
        "--recovery-passphrase-file",
        str(wrong),
        "--data-dir",
        str(tmp_path / "dr"),
        "--endpoint-url",
        s3_endpoint,
        env=AWS_ENV,
    )
    assert refused.returncode == 1
    assert "wrong recovery passphrase" in refused.stderr
    assert not (tmp_path / "dr").exists()

    restored = run_cli(
        "restore",
        uri,
        "--recovery-passphrase-file",
        str(pfile),
        "--data-dir",
        str(tmp_path / "dr"),
        "--endpoint-url",
        s3_endpoint,
        env=AWS_ENV,
    )
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.startswith("restored ") and "master key written to" in restored.stdout
    assert read_key_file(tmp_path / "dr" / "keys" / "master.key") == original_key

    dr = NodeProcess(tmp_path / "dr", free_port()).start()
    try:
        c = dr.client()
        resp = c.login("admin", NEW_ADMIN_PASSWORD)
        assert resp.status == 302 and resp.headers["location"] == "/"
        assert c.get("/").status == 200
        history = c.get("/admin/backup")
        assert history.status == 200
        assert "every Sunday at 02:30 UTC" in history.text  # settings came back too
        # a restored node must not write to (and prune) production's bucket by itself
        assert 'id="backup-paused"' in history.text
        resumed = c.post_form("/admin/backup/resume", {})
        assert resumed.status == 302 and resumed.headers["location"].endswith("done=resumed")
        page = c.get(resumed.headers["location"]).text
        assert "running again" in page
        assert 'id="backup-paused"' not in page
    finally:
        dr.stop()


def test_cli_refuses_a_damaged_archive_naming_the_member(tmp_path: Path) -> None:
    data_dir = tmp_path / "n"
    nothing = run_cli("backup", "run", "--data-dir", str(data_dir))
    assert nothing.returncode == 1 and "no vault in" in nothing.stderr
    assert not data_dir.exists()
    settings = Settings(data_dir=data_dir)
    store = open_store(settings.db_url)
    KeyRing.open(store, settings.key_path)
    store.dispose()
    pfile = tmp_path / "pp.txt"
    pfile.write_text("a passphrase for the binder\n")
    bad = run_cli(
        "backup", "configure", "--data-dir", str(data_dir), "--schedule", "days", "--every", "40"
    )
    assert bad.returncode == 1 and "between 1 and 28" in bad.stderr
    conf = run_cli(
        "backup",
        "configure",
        "--data-dir",
        str(data_dir),
        "--schedule",
        "monthly",
        "--day",
        "15",
        "--at",
        "03:00",
        "--keep",
        "3",
        "--passphrase-file",
        str(pfile),
    )
    assert conf.returncode == 0, conf.stderr
    assert "schedule:   on day 15 of every month at 03:00 UTC" in conf.stdout
    assert "keep:       latest 3 on every target" in conf.stdout
    assert "passphrase: set" in conf.stdout
    out = run_cli("backup", "run", "--data-dir", str(data_dir))
    assert out.returncode == 0, out.stderr
    archive = next((data_dir / "backUp").iterdir())
    data = bytearray(archive.read_bytes())
    offsets = member_data_offsets(archive)
    users = next(name for name in offsets if name.endswith("-users.bin"))
    offset, size = offsets[users]
    data[offset + size // 2] ^= 0xFF
    bad = tmp_path / archive.name
    bad.write_bytes(bytes(data))
    key = data_dir / "keys" / "master.key"
    restore = run_cli(
        "restore", str(bad), "--key-file", str(key), "--data-dir", str(tmp_path / "r")
    )
    assert restore.returncode == 1
    assert restore.stderr.startswith(f"strongroom: archive member {users}")
    assert not (tmp_path / "r").exists()
