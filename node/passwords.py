"""Login password hashing with Argon2id (the ``cryptography`` package's KDF).

Encoded as ``$argon2id$v=19$m=<KiB>,t=<iterations>,p=<lanes>$<salt b64>$<hash b64>`` so the
parameters travel with the hash and can be raised later without breaking old hashes.
"""

from __future__ import annotations

import base64
import functools
import hmac
import os
import secrets
import string
from dataclasses import dataclass

from cryptography.hazmat.primitives.kdf.argon2 import Argon2id


@dataclass(frozen=True)
class Argon2Params:
    memory_kib: int = 65536
    iterations: int = 3
    lanes: int = 4
    length: int = 32


DEFAULT_PARAMS = Argon2Params()
# Tests and benchmarks may lower the cost through this variable; production never sets it.
if os.environ.get("SR_TEST_FAST_KDF") == "1":
    DEFAULT_PARAMS = Argon2Params(memory_kib=1024, iterations=1, lanes=1)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _derive(password: str, salt: bytes, p: Argon2Params) -> bytes:
    kdf = Argon2id(
        salt=salt,
        length=p.length,
        iterations=p.iterations,
        lanes=p.lanes,
        memory_cost=p.memory_kib,
    )
    return kdf.derive(password.encode())


def hash_password(password: str, params: Argon2Params | None = None) -> str:
    p = params or DEFAULT_PARAMS
    salt = secrets.token_bytes(16)
    digest = _derive(password, salt, p)
    return (
        f"$argon2id$v=19$m={p.memory_kib},t={p.iterations},p={p.lanes}${_b64(salt)}${_b64(digest)}"
    )


def verify_password(password: str, encoded: str) -> bool:
    try:
        _, algo, _version, params, salt_b64, hash_b64 = encoded.split("$")
        if algo != "argon2id":
            return False
        kv = dict(item.split("=") for item in params.split(","))
        expected = _unb64(hash_b64)
        p = Argon2Params(int(kv["m"]), int(kv["t"]), int(kv["p"]), len(expected))
        salt = _unb64(salt_b64)
    except (ValueError, KeyError):
        return False
    return hmac.compare_digest(_derive(password, salt, p), expected)


@functools.cache
def dummy_hash() -> str:
    """A hash of a random password, checked against when the user does not exist, so an
    unknown user costs the same time as a wrong password. Made on first use, not at import
    (it costs the full KDF: time and 64 MiB)."""
    return hash_password(secrets.token_urlsafe(16))


def one_time_password(length: int = 20) -> str:
    """A random password for a new or reset login, from an unambiguous alphabet."""
    alphabet = "".join(c for c in string.ascii_letters + string.digits if c not in "0O1lI")
    return "".join(secrets.choice(alphabet) for _ in range(length))
