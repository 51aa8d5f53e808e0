"""Where archives are kept: a local directory or an S3-compatible bucket, behind one
interface. Only names that look like Strongroom archives are ever listed or deleted, so a
shared directory or bucket prefix keeps everything else."""

from __future__ import annotations

import abc
import datetime as dt
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backup.archive import ARCHIVE_NAME_RE
from backup.errors import TargetError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MiB = 1024 * 1024


@dataclass(frozen=True)
class StoredArchive:
    name: str
    size: int
    modified: dt.datetime  # naive UTC

    @property
    def created(self) -> str:
        """The creation time carried in the name (``YYYYMMDDTHHMMSSZ``)."""
        return self.name.split("-")[2]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


class BackupTarget(abc.ABC):
    """A place that keeps archives.

    Guarantees every implementation gives (checked by one shared contract test):

    - :meth:`put` stores a complete copy or raises :class:`TargetError`; a reader never sees
      a partial archive under its final name, and the stored bytes are checked against the
      local file's SHA-256;
    - :meth:`archives` returns only Strongroom archive names, oldest first (names sort by time);
    - :meth:`fetch` writes an exact copy to a local path, checking its integrity;
    - :meth:`prune` keeps exactly the newest ``keep`` archives and deletes the rest,
      leaving anything that is not a Strongroom archive alone.
    """

    kind: str = ""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where this target is, for messages (never a credential)."""

    @abc.abstractmethod
    def put(self, source: Path, name: str) -> StoredArchive:
        """Store the local file ``source`` as archive ``name``."""

    @abc.abstractmethod
    def archives(self) -> list[StoredArchive]:
        """Archives kept here, oldest first."""

    @abc.abstractmethod
    def fetch(self, name: str, dest: Path) -> Path:
        """Copy archive ``name`` to the local path ``dest`` and return it."""

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Delete archive ``name``; deleting one that is gone is not an error."""

    def prune(self, keep: int) -> list[str]:
        """Delete all but the newest ``keep`` archives; returns the names deleted."""
        if keep < 1:
            raise ValueError("keep must be at least 1")
        archives = self.archives()
        doomed = [a.name for a in archives[: max(0, len(archives) - keep)]]
        for name in doomed:
            self.delete(name)
        return doomed


def _check_name(name: str) -> None:
    if not ARCHIVE_NAME_RE.match(name):
        raise TargetError(f"{name!r} is not a Strongroom archive name")


class LocalTarget(BackupTarget):
    """A directory (by default DATA_DIR/backUp), mode 0700, archives 0600."""

    kind = "local"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def describe(self) -> str:
        return str(self.directory)

    def _ensure(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise TargetError(f"cannot create {self.directory}: {exc.strerror}") from None

    def put(self, source: Path, name: str) -> StoredArchive:
        _check_name(name)
        self._ensure()
        final = self.directory / name
        partial = self.directory / f".{name}.partial"
        try:
            partial.unlink(missing_ok=True)
            try:
                os.link(source, partial)
            except OSError:
                shutil.copyfile(source, partial)
            os.chmod(partial, 0o600)
            if file_sha256(partial) != file_sha256(source):
                raise TargetError(f"the copy in {self.directory} does not match the archive")
            fd = os.open(partial, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(partial, final)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise TargetError(f"cannot write to {self.directory}: {exc.strerror}") from None
        return self._stat(final)

    def _stat(self, path: Path) -> StoredArchive:
        st = path.stat()
        modified = dt.datetime.fromtimestamp(st.st_mtime, dt.UTC).replace(tzinfo=None)
        return StoredArchive(path.name, st.st_size, modified)

    def archives(self) -> list[StoredArchive]:
        if not self.directory.is_dir():
            return []
        try:
            found = [
                self._stat(p)
                for p in self.directory.iterdir()
                if ARCHIVE_NAME_RE.match(p.name) and p.is_file() and not p.is_symlink()
            ]
        except OSError as exc:
            raise TargetError(f"cannot list {self.directory}: {exc.strerror}") from None
        return sorted(found, key=lambda a: a.name)

    def fetch(self, name: str, dest: Path) -> Path:
        _check_name(name)
        try:
            shutil.copyfile(self.directory / name, dest)
        except FileNotFoundError:
            raise TargetError(f"no archive {name} in {self.directory}") from None
        except OSError as exc:
            raise TargetError(f"cannot read {name} from {self.directory}: {exc.strerror}") from None
        return dest

    def delete(self, name: str) -> None:
        _check_name(name)
        try:
            (self.directory / name).unlink(missing_ok=True)
        except OSError as exc:
            raise TargetError(f"cannot delete {name} in {self.directory}: {exc.strerror}") from None


@dataclass(frozen=True)
class S3Location:
    """A bucket and prefix, the endpoint (for MinIO or Ceph RGW), region and optional
    server-side encryption. Credentials always come from boto3's standard chain."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    sse: str = ""  # "" | "AES256" | "aws:kms"
    kms_key_id: str = ""

    @classmethod
    def parse_uri(cls, uri: str, **kwargs: Any) -> S3Location:
        """``s3://BUCKET/PREFIX`` into a location."""
        if not uri.startswith("s3://") or len(uri) <= 5:
            raise TargetError(f"{uri!r} is not an s3://BUCKET/PREFIX address")
        bucket, _, prefix = uri[5:].partition("/")
        return cls(bucket=bucket, prefix=prefix.strip("/"), **kwargs)

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{where} at {self.endpoint_url}" if self.endpoint_url else where


SHA_META = "strongroom-sha256"


class S3Target(BackupTarget):
    """An S3-compatible bucket through boto3. Large archives go up in parts (boto3's
    transfer manager); each upload carries a SHA-256 checksum that S3 verifies, and the
    archive's own SHA-256 as metadata, checked again after upload and on fetch."""

    kind = "s3"

    def __init__(
        self,
        location: S3Location,
        *,
        multipart_threshold: int = 64 * MiB,
        multipart_chunksize: int = 16 * MiB,
        client: S3Client | None = None,
    ) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.location = location
        self._client: S3Client = client or boto3.client(
            "s3",
            endpoint_url=location.endpoint_url or None,
            region_name=location.region or None,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}),
        )
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=4,
        )

    def describe(self) -> str:
        return self.location.describe()

    def _fail(self, doing: str, exc: Exception) -> TargetError:
        from botocore.exceptions import ClientError

        detail = type(exc).__name__
        text = str(exc)
        if "An error occurred (" in text:  # boto3's wrapper of a service error: keep its code
            detail = text[text.index("An error occurred (") :][:300]
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            detail = f"{err.get('Code', 'error')}: {err.get('Message', '')}".rstrip(": ")
        return TargetError(f"S3 {self.location.describe()}: {doing} failed ({detail})")

    def put(self, source: Path, name: str) -> StoredArchive:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        _check_name(name)
        digest = file_sha256(source)
        extra: dict[str, Any] = {"Metadata": {SHA_META: digest}, "ChecksumAlgorithm": "SHA256"}
        if self.location.sse:
            extra["ServerSideEncryption"] = self.location.sse
            if self.location.sse == "aws:kms" and self.location.kms_key_id:
                extra["SSEKMSKeyId"] = self.location.kms_key_id
        key = self.location.key(name)
        try:
            self._client.upload_file(
                str(source), self.location.bucket, key, ExtraArgs=extra, Config=self._transfer
            )
            head = self._client.head_object(Bucket=self.location.bucket, Key=key)
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            raise self._fail(f"uploading {name}", exc) from None
        size = source.stat().st_size
        if head["ContentLength"] != size or head.get("Metadata", {}).get(SHA_META) != digest:
            raise TargetError(f"S3 {self.location.describe()}: {name} was not stored intact")
        return StoredArchive(
            name, size, head["LastModified"].astimezone(dt.UTC).replace(tzinfo=None)
        )

    def archives(self) -> list[StoredArchive]:
        from botocore.exceptions import BotoCoreError, ClientError

        prefix = f"{self.location.prefix}/" if self.location.prefix else ""
        found: list[StoredArchive] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.location.bucket, Prefix=prefix
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(prefix) :]
                    if ARCHIVE_NAME_RE.match(name):
                        modified = obj["LastModified"].astimezone(dt.UTC).replace(tzinfo=None)
                        found.append(StoredArchive(name, obj["Size"], modified))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("listing", exc) from None
        return sorted(found, key=lambda a: a.name)

    def fetch(self, name: str, dest: Path) -> Path:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        _check_name(name)
        key = self.location.key(name)
        try:
            head = self._client.head_object(Bucket=self.location.bucket, Key=key)
            self._client.download_file(self.location.bucket, key, str(dest), Config=self._transfer)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise TargetError(f"no archive {name} in {self.location.describe()}") from None
            raise self._fail(f"downloading {name}", exc) from None
        except (BotoCoreError, Boto3Error) as exc:
            raise self._fail(f"downloading {name}", exc) from None
        expected = head.get("Metadata", {}).get(SHA_META)
        if expected is not None and file_sha256(dest) != expected:
            raise TargetError(f"{name} from {self.location.describe()} arrived damaged")
        return dest

    def delete(self, name: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        _check_name(name)
        try:
            self._client.delete_object(Bucket=self.location.bucket, Key=self.location.key(name))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(f"deleting {name}", exc) from None
