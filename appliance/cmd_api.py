"""Verbs for REST API users: ``strongroom apiuser add NAME --role ROLE``, ``list`` and
``revoke``. They talk to the running node over its control socket; when no node runs, they
open the data directory offline under the node's lock. A new token is printed once."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from appliance.context import on_node, settings_from_args
from appliance.logs import setup_logging
from appliance.server import Node, control_verb
from node.api_tokens import ApiTokenService, ApiUserInfo
from node.audit import AuditLog
from node.keyring import KeyRing
from node.roles import Role, parse_role
from node.settings import Settings
from node.store.db import Store

ACTOR = "local admin"
SOURCE = "local"


def _add(service: ApiTokenService, args: dict[str, Any]) -> dict[str, Any]:
    issued = service.add_api_user(
        str(args.get("name", "")), parse_role(str(args.get("role", ""))), ACTOR, SOURCE
    )
    return {"username": issued.username, "role": issued.role.value, "token": issued.token}


def _revoke(service: ApiTokenService, args: dict[str, Any]) -> dict[str, Any]:
    return {"revoked": service.revoke(str(args.get("name", "")), ACTOR, SOURCE)}


def _list(service: ApiTokenService, _args: dict[str, Any]) -> dict[str, Any]:
    return {"users": [_info(u) for u in service.list_api_users()]}


def _info(u: ApiUserInfo) -> dict[str, Any]:
    return {
        "username": u.username,
        "role": u.role.value,
        "status": u.status,
        "token_prefix": u.token_prefix,
        "created_at": u.created_at.isoformat(timespec="seconds") + "Z",
    }


Operation = Callable[[ApiTokenService, dict[str, Any]], dict[str, Any]]
OPERATIONS: dict[str, Operation] = {
    "apiuser.add": _add,
    "apiuser.revoke": _revoke,
    "apiuser.list": _list,
}


def _verb(name: str) -> None:
    op = OPERATIONS[name]

    @control_verb(name)
    async def handler(node: Node, args: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await node.in_thread(op, node.services.api_tokens, args)
        return result


for _name in OPERATIONS:
    _verb(_name)


def _run(settings: Settings, verb: str, args: dict[str, Any]) -> dict[str, Any]:
    def offline(store: Store, keyring: KeyRing) -> dict[str, Any]:
        service = ApiTokenService(store, AuditLog(keyring.audit_hmac_key))
        return OPERATIONS[verb](service, args)

    return on_node(settings, verb, args, offline)


def cmd_add(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    setup_logging("WARNING")
    role = parse_role(args.role)  # a bad role fails here, before anything is contacted
    result = _run(settings, "apiuser.add", {"name": args.name, "role": role.value})
    print(f"API user {result['username']} added with role {Role(result['role']).label}.")
    print("Its AUTHTOKEN (shown only now; store it in your application's secret store):")
    print(f"    {result['token']}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    setup_logging("WARNING")
    result = _run(settings, "apiuser.revoke", {"name": args.name})
    print(f"revoked {result['revoked']} token(s) of {args.name}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    setup_logging("WARNING")
    users = _run(settings, "apiuser.list", {})["users"]
    if not users:
        print("no API users")
        return 0
    print(f"{'NAME':<24} {'ROLE':<24} {'STATUS':<10} {'TOKEN':<12} CREATED")
    for u in users:
        token = f"{u['token_prefix']}…" if u["token_prefix"] else "revoked"
        print(
            f"{u['username']:<24} {Role(u['role']).label:<24} {u['status']:<10} {token:<12} "
            f"{u['created_at']}"
        )
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("apiuser", help="REST API users and their AUTHTOKENs")
    verbs = p.add_subparsers(dest="apiuser_verb", metavar="ACTION")
    verbs.required = True
    roles = ", ".join(r.value for r in Role)
    a = verbs.add_parser("add", parents=[common], help="add an API user; prints its token once")
    a.add_argument("name")
    a.add_argument("--role", required=True, help=f"one of: {roles}")
    a.set_defaults(func=cmd_add)
    r = verbs.add_parser("revoke", parents=[common], help="revoke an API user's tokens")
    r.add_argument("name")
    r.set_defaults(func=cmd_revoke)
    ls = verbs.add_parser("list", parents=[common], help="list API users")
    ls.set_defaults(func=cmd_list)


__all__ = ["register"]
