"""Licence verbs.

For an administrator of a node: ``strongroom licence show`` and ``strongroom licence install
FILE``, which talk to the running node over its control socket, or open the data directory
offline under the node's lock when no node runs. The licence lives in the replicated store,
so an install on one node holds on every node of the cluster at once.

For the vendor: ``strongroom licence keygen`` makes a signing key pair, and ``strongroom
licence issue`` signs a licence with its private key. Neither touches a node.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.context import on_node, settings_from_args
from appliance.logs import setup_logging
from appliance.server import Node, control_verb
from node import licence as licence_mod
from node.audit import AuditLog
from node.errors import ValidationError
from node.keyring import KeyRing
from node.licence import (
    MAX_FILE_BYTES,
    Licence,
    LicenceType,
    parse_edition,
    parse_licence_type,
    public_raw,
    sign_licence,
)
from node.licence_service import LicenceService, status_lines
from node.settings import Settings
from node.store.db import Store

ACTOR = "local admin"
SOURCE = "local"


# --- on a node -----------------------------------------------------------------------------


def _show(service: LicenceService, _args: dict[str, Any]) -> dict[str, Any]:
    return service.status().to_dict()


def _install(service: LicenceService, args: dict[str, Any]) -> dict[str, Any]:
    service.install(str(args.get("text", "")), ACTOR, SOURCE)
    return service.status().to_dict()


@control_verb("licence.show")
async def _show_verb(node: Node, args: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await node.in_thread(_show, node.services.licence, args)
    return result


@control_verb("licence.install")
async def _install_verb(node: Node, args: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await node.in_thread(_install, node.services.licence, args)
    return result


def _run(settings: Settings, verb: str, args: dict[str, Any]) -> dict[str, Any]:
    def offline(store: Store, keyring: KeyRing) -> dict[str, Any]:
        service = LicenceService(store, AuditLog(keyring.audit_hmac_key))
        return _install(service, args) if verb == "licence.install" else _show(service, args)

    return on_node(settings, verb, args, offline)


def _print_status(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print("\n".join(status_lines(data)))


def cmd_show(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    setup_logging("WARNING")
    _print_status(_run(settings, "licence.show", {}), args.json)
    return 0


def read_licence_text(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ValidationError(f"{path} is too large to be a licence file (at most 64 KiB)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError(f"{path} is not a Strongroom licence (not text)") from None


def cmd_install(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    setup_logging("WARNING")
    text = read_licence_text(args.file)
    data = _run(settings, "licence.install", {"text": text})
    print(f"licence {data['licence_id']} installed for {data['licensee']}")
    _print_status(data, False)
    return 0


# --- for the vendor ------------------------------------------------------------------------


def _create_private(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise ValidationError(f"{path} exists already; choose another file") from None
    except OSError as exc:
        raise ValidationError(f"cannot create {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)


def cmd_keygen(args: argparse.Namespace) -> int:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _create_private(args.output, pem, 0o600)
    public = public_raw(key.public_key()).hex()
    print(f"private key written to {args.output} (mode 0600; keep it secret and off the nodes)")
    print(f"public key: {public}")
    print("Nodes trust it once a release lists it in VENDOR_PUBLIC_KEYS (node/licence.py):")
    print(f'    "{public}",')
    return 0


def _load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValidationError(f"cannot read private key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ValidationError(
            f"{path} is not an unencrypted PEM private key (make one with "
            "'strongroom licence keygen')"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValidationError(f"{path} is not an Ed25519 key")
    return key


def _date(text: str | None, option: str) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise ValidationError(f"{option} must be a date YYYY-MM-DD, not {text!r}") from None


def cmd_issue(args: argparse.Namespace) -> int:
    key = _load_private_key(args.private_key)
    kind = parse_licence_type(args.type)
    expires = _date(args.expires, "--expires")
    issued = _date(args.issued, "--issued") or dt.datetime.now(dt.UTC).date()
    licence = Licence(
        id=args.id or f"SR-{uuid.uuid4().hex[:12].upper()}",
        licensee=args.licensee,
        edition=parse_edition(args.edition),
        type=kind,
        admins=args.admins,
        resources=args.resources,
        issued=issued,
        expires=None if kind is LicenceType.PERPETUAL else expires,
        support_until=expires if kind is LicenceType.PERPETUAL else None,
    )
    text = sign_licence(licence, key)
    if public_raw(key.public_key()).hex() not in licence_mod.VENDOR_PUBLIC_KEYS:
        print(
            "note: this key is not one of the vendor keys built into this release; nodes "
            "running it will reject the licence",
            file=sys.stderr,
        )
    if args.output is None:
        sys.stdout.write(text)
    else:
        _create_private(args.output, text.encode(), 0o644)
        print(f"licence {licence.id} written to {args.output}", file=sys.stderr)
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("licence", aliases=["license"], help="show, install and issue licences")
    verbs = p.add_subparsers(dest="licence_verb", metavar="ACTION")
    verbs.required = True

    s = verbs.add_parser("show", parents=[common], help="the licence in force and its limits")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_show)

    i = verbs.add_parser("install", parents=[common], help="install a licence file")
    i.add_argument("file", type=Path)
    i.set_defaults(func=cmd_install)

    k = verbs.add_parser("keygen", help="vendor: make a licence signing key pair")
    k.add_argument(
        "--output", type=Path, default=Path("licence-signing-key.pem"), help="private key file"
    )
    k.set_defaults(func=cmd_keygen)

    g = verbs.add_parser("issue", help="vendor: sign a licence")
    g.add_argument("--private-key", type=Path, required=True)
    g.add_argument("--licensee", required=True)
    g.add_argument("--edition", required=True, help="free, standard, premium or enterprise")
    g.add_argument("--admins", type=_positive, required=True, help="administrators allowed")
    g.add_argument("--resources", type=_positive, default=None, help="resource limit")
    g.add_argument(
        "--type", required=True, choices=[t.value for t in LicenceType], help="licence type"
    )
    g.add_argument(
        "--expires",
        default=None,
        help="last valid day YYYY-MM-DD (for a perpetual licence: the last day of support)",
    )
    g.add_argument("--id", default=None, help="licence id (default: a new random one)")
    g.add_argument("--issued", default=None, help="issue date (default: today)")
    g.add_argument("--output", type=Path, default=None, help="write here instead of stdout")
    g.set_defaults(func=cmd_issue)


__all__ = ["register", "read_licence_text"]
