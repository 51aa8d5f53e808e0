"""The store on both dialects: migrations, the key ring and the audit chain."""

from __future__ import annotations

import pytest
from sqlalchemy import text, update

from node.audit import AuditEvent, verify_chain
from node.errors import DecryptionError
from node.keyring import KeyRing
from node.services import Services
from node.store.db import Store, current_revision, head_revision
from node.store.models import AuditRow, User


def test_migrations_reach_head(store: Store) -> None:
    assert current_revision(store.engine) == head_revision()


def test_secret_is_not_stored_in_plaintext(store: Store, keyring: KeyRing) -> None:
    secret = "Pl@intext-Needle-93817"
    with store.transaction() as s:
        s.add(User(username="u1", role="password_user"))
        s.flush()
        blob = keyring.encrypt(secret, "users", "custom", 1)
        s.execute(
            text("INSERT INTO app_settings (key, value) VALUES ('probe', :v)"),
            {"v": f'"{blob.hex()}"'},
        )
    with store.engine.connect() as conn:
        dump = " ".join(str(r) for r in conn.execute(text("SELECT * FROM app_settings")))
    assert secret not in dump
    assert keyring.decrypt_text(blob, "users", "custom", 1) == secret


def test_ciphertext_is_bound_to_its_row(keyring: KeyRing) -> None:
    blob = keyring.encrypt("s3cret", "accounts", "password_ct", 7)
    with pytest.raises(DecryptionError):
        keyring.decrypt(blob, "accounts", "password_ct", 8)
    with pytest.raises(DecryptionError):
        keyring.decrypt(blob, "accounts", "notes", 7)
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(DecryptionError):
        keyring.decrypt(bytes(tampered), "accounts", "password_ct", 7)


def test_rotation_and_rekey_keep_secrets(store: Store, keyring: KeyRing, tmp_path) -> None:  # type: ignore[no-untyped-def]
    old = keyring.encrypt("before-rotate", "accounts", "password_ct", 1)
    new_id = keyring.rotate()
    newer = keyring.encrypt("after-rotate", "accounts", "password_ct", 2)
    assert KeyRing.key_id_of(newer) == new_id != KeyRing.key_id_of(old)
    backup = keyring.rekey()
    assert backup.exists()
    reopened = KeyRing.open(store, keyring._key_path)
    assert reopened.decrypt_text(old, "accounts", "password_ct", 1) == "before-rotate"
    assert reopened.decrypt_text(newer, "accounts", "password_ct", 2) == "after-rotate"


def test_audit_chain_detects_edit_delete_reorder(services: Services, store: Store) -> None:
    key = services.keyring.audit_hmac_key
    with store.transaction() as s:
        for i in range(5):
            services.audit.append(
                s,
                AuditEvent(
                    operation="view password",
                    username="alice",
                    source_ip="10.0.0.1",
                    target=f"acct{i}",
                ),
            )
    with store.sessions() as s:
        assert verify_chain(s, key).ok
    with store.transaction() as s:
        s.execute(update(AuditRow).where(AuditRow.id == 3).values(username="mallory"))
    with store.sessions() as s:
        report = verify_chain(s, key)
    assert not report.ok and report.first_broken_id == 3
