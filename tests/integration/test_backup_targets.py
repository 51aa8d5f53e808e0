"""One contract for every backup target, run against the local directory and against S3
(moto's standalone server over HTTP, which boto3 signs real requests for)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from backup.errors import TargetError
from backup.targets import BackupTarget, LocalTarget, S3Location, S3Target
from tests.integration.backup_helpers import make_bucket, moto_s3


def _name(i: int) -> str:
    return f"strongroom-backup-202601{i:02d}T020000Z-{i:06x}.zip"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as endpoint:
        yield endpoint


class TargetContract:
    """Guarantees of :class:`backup.targets.BackupTarget`, for every implementation."""

    @pytest.fixture
    def target(self, tmp_path: Path) -> BackupTarget:
        raise AssertionError("each implementation provides its target fixture")

    def foreign(self, target: BackupTarget, name: str) -> None:
        """Put an object that is not a Strongroom archive beside the archives."""
        raise AssertionError("each implementation says how to add a foreign object")

    def test_put_list_fetch(self, target: BackupTarget, tmp_path: Path) -> None:
        src = tmp_path / "src.zip"
        src.write_bytes(os.urandom(3000))
        stored = target.put(src, _name(2))
        assert stored.name == _name(2) and stored.size == 3000
        target.put(src, _name(1))
        assert [a.name for a in target.archives()] == [_name(1), _name(2)]
        out = target.fetch(_name(2), tmp_path / "out.zip")
        assert out.read_bytes() == src.read_bytes()

    def test_prune_keeps_exactly_the_newest_and_nothing_foreign_is_touched(
        self, target: BackupTarget, tmp_path: Path
    ) -> None:
        src = tmp_path / "src.zip"
        src.write_bytes(b"archive")
        for i in (3, 1, 5, 2, 4):
            target.put(src, _name(i))
        self.foreign(target, "notes.txt")
        deleted = target.prune(2)
        assert sorted(deleted) == [_name(1), _name(2), _name(3)]
        assert [a.name for a in target.archives()] == [_name(4), _name(5)]
        assert target.prune(2) == []
        self.still_there(target, "notes.txt")

    def still_there(self, target: BackupTarget, name: str) -> None:
        raise AssertionError("each implementation checks its foreign object")

    def test_refuses_names_that_are_not_archives(
        self, target: BackupTarget, tmp_path: Path
    ) -> None:
        src = tmp_path / "src.zip"
        src.write_bytes(b"x")
        for bad in ("../evil.zip", "notes.txt", "/etc/passwd"):
            with pytest.raises(TargetError, match="not a Strongroom archive name"):
                target.put(src, bad)
            with pytest.raises(TargetError):
                target.delete(bad)

    def test_fetch_of_a_missing_archive_names_it(
        self, target: BackupTarget, tmp_path: Path
    ) -> None:
        with pytest.raises(TargetError, match=f"no archive {_name(9)}"):
            target.fetch(_name(9), tmp_path / "x.zip")

    def test_delete_of_a_missing_archive_is_not_an_error(self, target: BackupTarget) -> None:
        target.delete(_name(7))
        assert target.archives() == []


class TestLocalTarget(TargetContract):
    @pytest.fixture
    def target(self, tmp_path: Path) -> BackupTarget:
        return LocalTarget(tmp_path / "data" / "backUp")

    def foreign(self, target: BackupTarget, name: str) -> None:
        assert isinstance(target, LocalTarget)
        (target.directory / name).write_text("keep me")

    def still_there(self, target: BackupTarget, name: str) -> None:
        assert isinstance(target, LocalTarget)
        assert (target.directory / name).read_text() == "keep me"

    def test_archives_are_private(self, target: BackupTarget, tmp_path: Path) -> None:
        assert isinstance(target, LocalTarget)
        src = tmp_path / "src.zip"
        src.write_bytes(b"x")
        target.put(src, _name(1))
        assert (target.directory / _name(1)).stat().st_mode & 0o777 == 0o600
        assert target.directory.stat().st_mode & 0o777 == 0o700
        assert [p.name for p in target.directory.iterdir()] == [_name(1)]


class TestS3Target(TargetContract):
    @pytest.fixture
    def target(self, s3_endpoint: str, request: pytest.FixtureRequest) -> BackupTarget:
        bucket = f"sr-{request.node.name[:30].lower().replace('_', '-')}-{os.getpid()}"
        make_bucket(s3_endpoint, bucket)
        return S3Target(
            S3Location(bucket=bucket, prefix="vault/prod", endpoint_url=s3_endpoint),
            multipart_threshold=5 * 1024 * 1024,
            multipart_chunksize=5 * 1024 * 1024,
        )

    def foreign(self, target: BackupTarget, name: str) -> None:
        assert isinstance(target, S3Target)
        loc = target.location
        make_bucket_client(loc).put_object(Bucket=loc.bucket, Key=loc.key(name), Body=b"keep me")

    def still_there(self, target: BackupTarget, name: str) -> None:
        assert isinstance(target, S3Target)
        loc = target.location
        body = make_bucket_client(loc).get_object(Bucket=loc.bucket, Key=loc.key(name))["Body"]
        assert body.read() == b"keep me"

    def test_large_archive_goes_up_in_parts_with_checksum(
        self, target: BackupTarget, tmp_path: Path
    ) -> None:
        assert isinstance(target, S3Target)
        src = tmp_path / "big.zip"
        src.write_bytes(os.urandom(11 * 1024 * 1024))
        target.put(src, _name(1))
        loc = target.location
        head = make_bucket_client(loc).head_object(
            Bucket=loc.bucket, Key=loc.key(_name(1)), ChecksumMode="ENABLED"
        )
        assert head["ETag"].strip('"').endswith("-3")  # three parts: 5 + 5 + 1 MiB
        assert head["ContentLength"] == src.stat().st_size
        assert target.fetch(_name(1), tmp_path / "back.zip").read_bytes() == src.read_bytes()

    def test_server_side_encryption_is_requested(self, s3_endpoint: str, tmp_path: Path) -> None:
        make_bucket(s3_endpoint, "sr-sse-bucket")
        target = S3Target(
            S3Location(bucket="sr-sse-bucket", endpoint_url=s3_endpoint, sse="AES256")
        )
        src = tmp_path / "a.zip"
        src.write_bytes(b"sealed")
        target.put(src, _name(1))
        head = make_bucket_client(target.location).head_object(Bucket="sr-sse-bucket", Key=_name(1))
        assert head["ServerSideEncryption"] == "AES256"

    def test_missing_bucket_is_a_clear_error(self, s3_endpoint: str, tmp_path: Path) -> None:
        target = S3Target(S3Location(bucket="sr-no-such-bucket", endpoint_url=s3_endpoint))
        src = tmp_path / "a.zip"
        src.write_bytes(b"x")
        with pytest.raises(TargetError, match="sr-no-such-bucket.*NoSuchBucket"):
            target.put(src, _name(1))


def make_bucket_client(loc: S3Location):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client("s3", endpoint_url=loc.endpoint_url, region_name="us-east-1")
