"""Shared by the backup tests: a vault with something in every kind of table, a table-by-
table comparison of two databases, and a throwaway S3 endpoint (moto's server over HTTP)."""

from __future__ import annotations

import datetime as dt
import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select

from node.audit import AuditEvent
from node.services import Services
from node.store.db import Store
from node.store.models import (
    Account,
    AppSetting,
    Base,
    BrandingLogo,
    CustomField,
    PasswordHistory,
    Resource,
    ResourceGroup,
    ResourceGroupMember,
    Share,
    User,
    UserGroup,
    UserGroupMember,
)
from tests.helpers import free_port

SECRETS = {f"acct{i}": f"S3cret-{i}-Ünïcödé-{'x' * i}" for i in range(12)}
T0 = dt.datetime(2026, 3, 1, 12, 30, 15, 123456)


def populate(services: Services) -> dict[int, str]:
    """Fill ``services``' vault: users (one granted super admin by a later user), groups,
    resources, accounts with encrypted passwords, history, shares, settings, a logo and
    audit rows. Returns account id -> password."""
    store, keyring = services.store, services.keyring
    passwords: dict[int, str] = {}
    with store.transaction() as s:
        alice = User(username="alice", role="administrator", full_name="Alice Ä", email="a@x")
        bob = User(username="bob", role="password_user", custom_attributes={"team": ["db", 1]})
        s.add_all([alice, bob])
        s.flush()
        alice.super_admin = True
        alice.super_admin_granted_by = bob.id  # a reference to a later row of the same table
        group = UserGroup(name="dba", description="DBAs")
        s.add(group)
        s.flush()
        s.add(UserGroupMember(group_id=group.id, user_id=bob.id))
        s.add(CustomField(applies_to="resource", name="rack"))
        res = Resource(
            name="db1",
            dns_name="db1.example",
            owner_id=alice.id,
            created_at=T0,
            custom_attributes={"rack": "r7"},
            description="line1\nline2 'quoted' \"x\"",
        )
        gone = Resource(name="old", owner_id=alice.id, deleted_at=T0, deleted_by=alice.id)
        s.add_all([res, gone])
        s.flush()
        rg = ResourceGroup(name="prod", owner_id=alice.id)
        s.add(rg)
        s.flush()
        s.add(ResourceGroupMember(group_id=rg.id, resource_id=res.id))
        for i, (name, secret) in enumerate(SECRETS.items()):
            acct = Account(resource_id=res.id, username=name, last_changed_at=T0)
            s.add(acct)
            s.flush()
            acct.password_ct = keyring.encrypt(secret, "accounts", "password_ct", acct.id)
            passwords[acct.id] = secret
            if i % 3 == 0:
                hist = PasswordHistory(account_id=acct.id, password_ct=b"", changed_by=alice.id)
                s.add(hist)
                s.flush()
                hist.password_ct = keyring.encrypt(
                    "old-" + secret, "password_history", "password_ct", hist.id
                )
        s.add(Share(resource_id=res.id, user_id=bob.id, access="view", granted_by=alice.id))
        s.add(Share(resource_group_id=rg.id, user_group_id=group.id, access="modify"))
        s.add(AppSetting(key="probe.setting", value={"nested": [1, 2.5, None, "ü"]}))
        s.add(BrandingLogo(content_type="image/png", data=bytes(range(256)) * 4))
        for i in range(25):
            services.audit.append(
                s,
                AuditEvent(
                    operation="view password",
                    username="alice",
                    source_ip="10.0.0.1",
                    target=f"db1/acct{i % 12}",
                    resource_id=res.id,
                ),
            )
    return passwords


def table_contents(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the schema, in primary-key order."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with store.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            order = list(table.primary_key.columns)
            rows = conn.execute(select(table).order_by(*order)).all()
            out[table.name] = [
                tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows
            ]
    return out


def account_passwords(services: Services) -> dict[int, str]:
    with services.store.sessions() as s:
        accounts = s.scalars(select(Account)).all()
        return {
            a.id: services.keyring.decrypt_text(a.password_ct, "accounts", "password_ct", a.id)
            for a in accounts
            if a.password_ct is not None
        }


AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def moto_s3() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (a real HTTP endpoint boto3 signs requests for).
    Yields its endpoint URL; credentials come from the environment, as in production."""
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def make_bucket(endpoint: str, name: str) -> Any:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return client


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its content (to prove a target was left untouched)."""
    if not path.exists():
        return {}
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def member_data_offsets(path: Path) -> dict[str, tuple[int, int]]:
    """Where each member's bytes sit in the zip file: name -> (offset, size)."""
    out = {}
    with zipfile.ZipFile(path) as zf, path.open("rb") as fh:
        for info in zf.infolist():
            fh.seek(info.header_offset + 26)
            name_len = int.from_bytes(fh.read(2), "little")
            extra_len = int.from_bytes(fh.read(2), "little")
            out[info.filename] = (info.header_offset + 30 + name_len + extra_len, info.file_size)
    return out
