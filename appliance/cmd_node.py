"""Verbs of one node: serve, version, keys, admin, tls."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from appliance.context import data_dir_lock, on_node, settings_from_args
from appliance.control import NodeNotRunningError, call
from appliance.logs import setup_logging
from node import __version__


def cmd_serve(args: argparse.Namespace) -> int:
    from appliance.server import serve

    settings = settings_from_args(args, port=args.port, bind=args.bind)
    setup_logging(settings.log_level, settings.log_file)
    serve(settings, announce=lambda text: print(text, flush=True))
    return 0


def cmd_version(_args: argparse.Namespace) -> int:
    print(f"strongroom {__version__}")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    setup_logging("WARNING")
    from appliance.server import rekey, rotate_keys
    from node.audit import AuditLog

    if args.action == "rotate":
        result = on_node(
            settings,
            "keys.rotate",
            {},
            lambda _s, kr: {"key_id": rotate_keys(kr, AuditLog(kr.audit_hmac_key))},
        )
        print(f"new active data key: {result['key_id']} (older keys still decrypt)")
    else:
        result = on_node(
            settings,
            "keys.rekey",
            {},
            lambda _s, kr: {"backup": str(rekey(kr, AuditLog(kr.audit_hmac_key)))},
        )
        print(f"master key replaced; data keys re-wrapped; old key kept at {result['backup']}")
        print("Copy the new key file to your off-box key store now.")
    return 0


def cmd_admin_reset(args: argparse.Namespace) -> int:
    from node.auth import normalize_username

    settings = settings_from_args(args)
    setup_logging("WARNING")

    def offline(store: Any, keyring: Any) -> dict[str, Any]:
        from node.services import build_services

        services = build_services(settings, store, keyring)
        return {"password": services.auth.reset_password(args.user, "local admin", "local")}

    result = on_node(settings, "admin.reset_password", {"username": args.user}, offline)
    print(f"One-time password for {normalize_username(args.user)} (must be changed at next login):")
    print(f"    {result['password']}")
    return 0


def cmd_tls_install(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    setup_logging("WARNING")
    request = {
        "cert": str(args.cert.absolute()),
        "key": str(args.key.absolute()),
        "chain": str(args.chain.absolute()) if args.chain else None,
    }
    try:
        result = call(settings.control_socket, "tls.install", request)
    except NodeNotRunningError:
        from sqlalchemy.engine import make_url

        from appliance.server import install_tls, open_node
        from node.audit import AuditLog
        from node.store.db import open_store
        from node.store.dialect import sqlite_file
        from node.tls import TlsFiles, fingerprint

        with data_dir_lock(settings, "tls install"):
            files = TlsFiles.in_dir(settings.tls_dir)
            # Offline, only a single node's SQLite vault can be written: a cluster member's
            # PostgreSQL runs only while its node does.
            db_file = sqlite_file(make_url(settings.db_url))
            vault = db_file is not None and Path(db_file).is_file()
            if vault:
                probe = open_store(settings.db_url, migrate=False)
                try:
                    vault = probe.has_data()
                finally:
                    probe.dispose()
            if not vault:  # before the first start, or PostgreSQL: no trail to write to
                install_tls(files, args.cert, args.key, args.chain, None)
                if db_file is None:
                    print("note: the node is stopped; this install is not in the audit trail")
            else:
                store, keyring = open_node(settings)
                try:
                    audit = AuditLog(keyring.audit_hmac_key)
                    install_tls(files, args.cert, args.key, args.chain, (store, audit))
                finally:
                    store.dispose()
            result = {"fingerprint": fingerprint(files.cert.read_bytes())}
    print(f"certificate installed; SHA-256 fingerprint {result['fingerprint']}")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("serve", parents=[common], help="run a node")
    p.add_argument("--port", type=int, default=None, help="HTTPS port (default 7272)")
    p.add_argument("--bind", default=None, help="address to listen on (default all)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=cmd_version)

    p = sub.add_parser("keys", parents=[common], help="data key rotation and master rekey")
    p.add_argument("action", choices=["rotate", "rekey"])
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("admin", help="local administration of users")
    admin = p.add_subparsers(dest="admin_verb", metavar="ACTION")
    admin.required = True
    r = admin.add_parser(
        "reset-password", parents=[common], help="give a (locked-out) user a new one-time password"
    )
    r.add_argument("user")
    r.set_defaults(func=cmd_admin_reset)

    p = sub.add_parser("tls", help="TLS certificate of the web server")
    tls = p.add_subparsers(dest="tls_verb", metavar="ACTION")
    tls.required = True
    t = tls.add_parser("install", parents=[common], help="install an operator's certificate")
    t.add_argument("cert", type=Path)
    t.add_argument("key", type=Path)
    t.add_argument("--chain", type=Path, default=None)
    t.set_defaults(func=cmd_tls_install)


__all__ = ["register"]
