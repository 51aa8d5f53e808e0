"""Master key files and certificate checks, without a database."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from node.errors import KeyFileError, ValidationError
from node.keyring import read_key_file, write_key_file
from node.tls import make_self_signed, validate_pair


def test_key_file_round_trip_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.key"
    write_key_file(path, b"k" * 32)
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_key_file(path) == b"k" * 32
    with pytest.raises(FileExistsError):
        write_key_file(path, b"x" * 32)  # never overwritten


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        (None, 0o600, "does not exist"),
        ("strongroom-master-key-v1:AAAA\n", 0o600, "damaged"),
        ("hello\n", 0o600, "not a Strongroom master key"),
        ("strongroom-master-key-v1:" + "A" * 43 + "=\n", 0o640, "readable by group or others"),
    ],
)
def test_bad_key_files(tmp_path: Path, content: str | None, mode: int, message: str) -> None:
    path = tmp_path / "master.key"
    if content is not None:
        path.write_text(content)
        os.chmod(path, mode)
    with pytest.raises(KeyFileError, match=message):
        read_key_file(path)


def test_certificate_checks() -> None:
    cert, key = make_self_signed(["vault.example.org"])
    assert validate_pair(cert, key).startswith(cert.rstrip(b"\n"))
    _, other_key = make_self_signed(["x"])
    with pytest.raises(ValidationError, match="does not match"):
        validate_pair(cert, other_key)
    old = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    expired, expired_key = make_self_signed(["old"], now=old, days=30)
    with pytest.raises(ValidationError, match="expired"):
        validate_pair(expired, expired_key)
    with pytest.raises(ValidationError, match="not a PEM"):
        validate_pair(b"junk", key)
    with pytest.raises(ValidationError, match="chain"):
        validate_pair(cert, key, b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
