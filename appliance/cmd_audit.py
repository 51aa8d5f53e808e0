"""``strongroom audit verify``: walk the audit trail's hash chain and name the first
broken row.

It only reads, so it opens the database of ``--config``/``--data-dir`` directly (a running
node may go on writing; the check reads one consistent snapshot through a read-only
connection). Exit status: 0 the chain is intact, 1 it is broken, 2 it could not be checked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from appliance.context import settings_from_args
from appliance.logs import setup_logging
from node.errors import StrongroomError

EXIT_INTACT = 0
EXIT_BROKEN = 1
EXIT_UNCHECKED = 2


def _verify(args: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url

    from node.audit_query import AuditQueryService, ChainState
    from node.export import cell_text
    from node.keyring import KeyRing
    from node.store.db import open_store
    from node.store.dialect import ReadOnlyStore
    from node.store.models import KeyringMeta

    settings = settings_from_args(args)
    setup_logging("WARNING")
    no_vault = f"strongroom: no vault in {settings.data_dir} (nothing to verify)"
    if settings.uses_sqlite and not Path(str(make_url(settings.db_url).database)).is_file():
        print(no_vault, file=sys.stderr)  # and do not create an empty database file
        return EXIT_UNCHECKED
    store = open_store(settings.db_url, migrate=False)
    reader = ReadOnlyStore(store.engine)
    try:
        if not store.has_data():
            print(no_vault, file=sys.stderr)
            return EXIT_UNCHECKED
        with reader.session() as session:
            if session.get(KeyringMeta, 1) is None:
                print(no_vault, file=sys.stderr)
                return EXIT_UNCHECKED
        keyring = KeyRing.open(store, settings.key_path)
        state: ChainState = AuditQueryService(store, reader, keyring.audit_hmac_key).verify()
    finally:
        reader.dispose()
        store.dispose()
    print(state.report.sentence())
    if state.report.ok:
        return EXIT_INTACT
    row = state.broken_row
    if row is not None and row.damaged:
        print(f"first broken row: #{row.id} (its stored values cannot be read)")
    elif row is not None:
        print(
            f"first broken row: #{row.id} at {cell_text(row.ts)} by {row.username or '-'} "
            f"from {row.source_ip or '-'}: {row.operation} {row.target} ({row.result})"
        )
    elif state.report.first_broken_id is not None:
        print(f"first broken row: #{state.report.first_broken_id} (no longer in the database)")
    return EXIT_BROKEN


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return _verify(args)
    except StrongroomError as exc:
        print(f"strongroom: cannot verify the audit trail: {exc}", file=sys.stderr)
        return EXIT_UNCHECKED
    except SQLAlchemyError as exc:
        # the audit tables (or the database) cannot be read: a table dropped, say
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
        print(
            f"strongroom: cannot verify the audit trail: cannot read it ({reason})", file=sys.stderr
        )
        return EXIT_UNCHECKED


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("audit", help="the tamper-evident audit trail")
    audit = p.add_subparsers(dest="audit_verb", metavar="ACTION")
    audit.required = True
    v = audit.add_parser(
        "verify",
        parents=[common],
        help="check the audit chain; exit 0 intact, 1 broken (names the first broken row), "
        "2 could not check",
    )
    v.set_defaults(func=cmd_audit_verify)


__all__ = ["register"]
