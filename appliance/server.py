"""The composition root: assemble and run one node (``strongroom serve``)."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.netutil
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from appliance.context import data_dir_lock
from appliance.control import ControlServer
from backup.service import BackupService, Scheduler
from cluster.config import is_member as cluster_member
from node import __version__
from node.audit import AuditEvent, AuditLog
from node.errors import FatalError, StrongroomError, ValidationError
from node.keyring import KeyRing
from node.reveal_writer import WriterProcess
from node.services import NodeState, Services, build_services
from node.settings import Settings
from node.store.db import Store, describe_url, open_store
from node.store.dialect import sqlite_file
from node.tls import TlsFiles, ensure_certificate, fingerprint, validate_pair, write_private
from web.app import MAX_BODY_BYTES, make_app, make_ssl_context

log = logging.getLogger("strongroom.serve")

ControlHandler = Callable[["Node", dict[str, Any]], Awaitable[dict[str, Any]]]
CONTROL_VERBS: dict[str, ControlHandler] = {}


def control_verb(name: str) -> Callable[[ControlHandler], ControlHandler]:
    """Register a handler for a control-socket verb (see appliance/control.py)."""

    def register(fn: ControlHandler) -> ControlHandler:
        CONTROL_VERBS[name] = fn
        return fn

    return register


class PortInUseError(FatalError):
    pass


def bind_port(settings: Settings) -> list[socket.socket]:
    try:
        return tornado.netutil.bind_sockets(settings.port, settings.bind or None)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"port {settings.port} on {settings.bind} is already in use "
                "(is another node running?)"
            ) from None
        raise PortInUseError(
            f"cannot listen on {settings.bind}:{settings.port}: {exc.strerror}"
        ) from None


@dataclass
class Node:
    """A running node: its services, the HTTPS server and the control socket."""

    settings: Settings
    store: Store
    keyring: KeyRing
    services: Services
    tls: TlsFiles
    ssl_ctx: ssl.SSLContext
    executor: ThreadPoolExecutor
    first_password: str | None = None
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    backup: BackupService | None = None
    cluster: Any = None  # appliance.cmd_cluster.HaNode in a high-availability cluster

    async def in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def reload_tls(self) -> None:
        self.ssl_ctx.load_cert_chain(str(self.tls.cert), str(self.tls.key))


def open_node(settings: Settings, read_only: bool = False) -> tuple[Store, KeyRing]:
    """Open the store and key ring of ``settings``. On a database that holds data, the
    master key must fit before any migration writes to it. ``read_only``: a cluster
    standby's replica, which is never migrated here (the primary's schema arrives)."""
    store = open_store(settings.db_url, migrate=False)
    try:
        if store.has_data():
            KeyRing.check_fits(store, settings.key_path)
        if not read_only:
            store.migrate()
        keyring = KeyRing.open(store, settings.key_path)
    except BaseException:
        store.dispose()
        raise
    return store, keyring


def write_initial_password(path: Path, password: str) -> None:
    write_private(path, (password + "\n").encode())


def assemble(settings: Settings, read_only: bool = False, state: NodeState | None = None) -> Node:
    """``read_only`` and ``state``: a cluster member's replica and its HA role (see
    appliance/cmd_cluster.py); a standby writes nothing at start."""
    store, keyring = open_node(settings, read_only)
    services = build_services(settings, store, keyring)
    if state is not None:
        services.state = state
    first = None
    if not read_only:
        services.licence.ensure_started()  # a new vault's evaluation starts now
        first = services.auth.bootstrap_admin()
    if first is not None:
        write_initial_password(services.initial_password_path, first)
    tls, _made = ensure_certificate(settings.tls_dir, settings.tls_addresses)
    return Node(
        settings=settings,
        store=store,
        keyring=keyring,
        services=services,
        tls=tls,
        ssl_ctx=make_ssl_context(tls),
        executor=ThreadPoolExecutor(max_workers=16, thread_name_prefix="sr-worker"),
        first_password=first,
        backup=BackupService(settings, store, keyring, services.audit, services.state),
    )


def banner(node: Node) -> str:
    host = (
        "localhost" if node.settings.bind in ("0.0.0.0", "::", "127.0.0.1") else node.settings.bind
    )
    lines = [
        f"Strongroom {__version__} is serving https://{host}:{node.settings.port}/",
        f"TLS certificate SHA-256 fingerprint: {fingerprint(node.tls.cert.read_bytes())}",
    ]
    if node.first_password is not None:
        lines += [
            "First start: log in as 'admin' with this one-time password (you must change it):",
            f"    {node.first_password}",
            f"(also in {node.services.initial_password_path}, deleted once it is changed)",
        ]
    lines += [f"Licence: {w.text}" for w in node.services.licence.entitlement().warnings]
    return "\n".join(lines)


def reveal_writer_command() -> list[str]:
    """The command of the audit writer process (appliance/reveal_writer.py). ``-P``: the
    working directory is not searched for the module (``-m`` would put it first), so a
    directory the node is started from cannot put its own code in the child."""
    return [sys.executable, "-P", "-m", "appliance.reveal_writer"]


def start_reveal_writer(
    settings: Settings, keyring: KeyRing, services: Services, loop: asyncio.AbstractEventLoop
) -> WriterProcess | None:
    """Give password reveals' audit rows to a writer process (node/reveal_writer.py), its
    answers read on ``loop``; None for a database another process cannot open (in memory:
    reveals then stay with the store's committer thread)."""
    url = make_url(settings.db_url)
    if url.get_backend_name() == "sqlite" and sqlite_file(url) is None:
        return None
    config = {
        "url": settings.db_url,
        "key": keyring.audit_hmac_key,
        "log_level": settings.log_level,
        "log_file": str(settings.log_file) if settings.log_file is not None else None,
    }
    writer = WriterProcess(reveal_writer_command(), config, loop=loop)
    services.vault.use_reveal_writer(writer)
    return writer


async def run_node(
    node: Node, sockets: list[socket.socket], announce: Callable[[str], None] = print
) -> None:
    loop = asyncio.get_running_loop()
    writer = start_reveal_writer(node.settings, node.keyring, node.services, loop)
    app = make_app(
        node.services,
        node.executor,
        strongroom_backup=node.backup,
        strongroom_cluster=node.cluster.web_handle if node.cluster is not None else None,
    )
    scheduler = Scheduler(node.backup) if node.backup is not None else None
    if scheduler is not None:
        scheduler.start()
    server = tornado.httpserver.HTTPServer(
        app, ssl_options=node.ssl_ctx, xheaders=False, max_body_size=MAX_BODY_BYTES
    )
    server.add_sockets(sockets)
    control = ControlServer({name: _bind(fn, node) for name, fn in CONTROL_VERBS.items()})
    sock_path = node.settings.control_socket
    sock_path.unlink(missing_ok=True)
    control.listen_on(sock_path)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.stop_event.set)
    announce(banner(node))
    log.info(
        "node started",
        extra={
            "port": node.settings.port,
            "version": __version__,
            "db": describe_url(node.settings.db_url),
            "key_file": str(node.settings.key_path),
        },
    )
    await node.stop_event.wait()
    log.info("node stopping")
    server.stop()
    control.stop()
    if scheduler is not None:
        scheduler.stop()
    sock_path.unlink(missing_ok=True)
    await server.close_all_connections()
    node.executor.shutdown(wait=True)
    ctx = app.settings["strongroom_ctx"]
    ctx.background.close()  # the audit rows still waiting
    ctx.anonymous.close()
    if writer is not None:
        writer.close()
    node.store.dispose()


def _bind(fn: ControlHandler, node: Node) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
    async def call(args: dict[str, Any]) -> dict[str, Any]:
        return await fn(node, args)

    return call


def settle_heap() -> None:
    """Move what the node made while starting (modules, SQLAlchemy's metadata, templates:
    over 100,000 objects that live as long as the process) out of the garbage collector's
    sight. Its full passes otherwise walk them all, each stopping every request for tens
    of milliseconds (measured: docs/benchmarks.md)."""
    gc.collect()
    gc.freeze()


def serve(settings: Settings, announce: Callable[[str], None] = print) -> None:
    """Run a node until SIGTERM or SIGINT. Fails with one clear error, having changed
    nothing, when the port is taken, the data dir is in use, or the key or database is bad."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with data_dir_lock(settings, "serve"):
        sockets = bind_port(settings)
        ha = None
        try:
            if cluster_member(settings.data_dir):  # HA: Raft, PostgreSQL, VIP, HA loop
                from appliance.cmd_cluster import start_ha

                ha = start_ha(settings)
                node = assemble(ha.settings, read_only=ha.read_only, state=ha.node_state)
                node.cluster = ha
                ha.run()
            else:
                node = assemble(settings)
            settle_heap()
            asyncio.run(run_node(node, sockets, announce))
        finally:
            if ha is not None:
                ha.stop()
            for s in sockets:
                s.close()


# --- control verbs of the foundation -------------------------------------------------------


LOCAL_ACTOR = "local admin"  # who the audit trail names for the CLI on the node itself
LOCAL_SOURCE = "local"


def local_setting(audit: AuditLog, target: str) -> Callable[[Session, str], None]:
    """What writes the user-audit row (operation ``settings``) of a change to ``target``
    made with the CLI on the node, in the transaction that makes it."""

    def record(session: Session, detail: str) -> None:
        audit.append(
            session,
            AuditEvent(
                operation="settings",
                username=LOCAL_ACTOR,
                source_ip=LOCAL_SOURCE,
                target=target,
                category="user",
                detail=detail,
            ),
        )

    return record


def rotate_keys(keyring: KeyRing, audit: AuditLog) -> int:
    return keyring.rotate(record=local_setting(audit, "key ring"))


def rekey(keyring: KeyRing, audit: AuditLog) -> Path:
    return keyring.rekey(record=local_setting(audit, "key ring"))


@control_verb("keys.rotate")
async def _keys_rotate(node: Node, _args: dict[str, Any]) -> dict[str, Any]:
    key_id = await node.in_thread(rotate_keys, node.keyring, node.services.audit)
    return {"key_id": key_id}


@control_verb("keys.rekey")
async def _keys_rekey(node: Node, _args: dict[str, Any]) -> dict[str, Any]:
    backup = await node.in_thread(rekey, node.keyring, node.services.audit)
    return {"backup": str(backup)}


@control_verb("admin.reset_password")
async def _reset_password(node: Node, args: dict[str, Any]) -> dict[str, Any]:
    username = str(args.get("username", ""))
    otp = await node.in_thread(node.services.auth.reset_password, username, "local admin", "local")
    return {"password": otp}


@control_verb("tls.install")
async def _tls_install(node: Node, args: dict[str, Any]) -> dict[str, Any]:
    cert = Path(str(args.get("cert", "")))
    key = Path(str(args.get("key", "")))
    chain = Path(str(args["chain"])) if args.get("chain") else None
    # A cluster standby's vault is a read-only replica: it has no trail to write to, and
    # its certificate is its own, so the install goes ahead there, logged.
    writable = node.cluster is None or node.cluster.node_state.writable
    audited = (node.services.store, node.services.audit) if writable else None
    await node.in_thread(install_tls, node.tls, cert, key, chain, audited)
    installed = fingerprint(node.tls.cert.read_bytes())
    if audited is None:
        log.warning(
            "TLS certificate installed on a node that is not the primary: not in the audit trail",
            extra={"fingerprint": installed},
        )
    node.reload_tls()
    return {"fingerprint": installed}


def install_tls(
    target: TlsFiles,
    cert: Path,
    key: Path,
    chain: Path | None,
    audited: tuple[Store, AuditLog] | None,
) -> None:
    """Check an operator's certificate and key, then install them over ``target``. With
    ``audited`` (None where there is no trail to write to: before the vault's first start,
    on a cluster standby, offline with PostgreSQL) the user-audit row (``settings``, ``TLS
    certificate``) is written first, in a transaction that commits once the files are
    written: a row that cannot be written stops the install."""
    try:
        cert_pem = cert.read_bytes()
        key_pem = key.read_bytes()
        chain_pem = chain.read_bytes() if chain else b""
    except OSError as exc:
        raise ValidationError(f"cannot read {exc.filename}: {exc.strerror}") from None
    full = validate_pair(cert_pem, key_pem, chain_pem)
    if audited is None:
        _write_tls(target, key_pem, full)
        return
    store, audit = audited
    with store.transaction() as session:
        detail = f"installed an operator's certificate, SHA-256 fingerprint {fingerprint(full)}"
        local_setting(audit, "TLS certificate")(session, detail)
        _write_tls(target, key_pem, full)


def _write_tls(target: TlsFiles, key_pem: bytes, cert_pem: bytes) -> None:
    write_private(target.key, key_pem)
    write_private(target.cert, cert_pem)
    os.chmod(target.cert, 0o644)


__all__ = ["serve", "control_verb", "Node", "StrongroomError"]
