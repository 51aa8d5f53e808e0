"""Verbs of the high-availability cluster: init --ha, join-token, join, witness,
cluster status/switchover/remove, vip release; and the HA part of ``serve``."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.context import data_dir_lock, settings_from_args
from appliance.control import NodeNotRunningError, call
from appliance.logs import setup_logging
from appliance.server import Node, control_verb
from cluster import config as node_config
from cluster.config import NodeConfig
from cluster.ha import HaTimings
from cluster.join import JoinService, create_cluster, ensure_in_raft, join_cluster
from cluster.runtime import HaRuntime, WitnessRuntime
from cluster.state import DATA, WITNESS, ClusterStateError
from cluster.vip import make_vip
from node.errors import ConflictError, StrongroomError, ValidationError
from node.services import NodeState
from node.settings import Settings
from node.tls import TlsFiles
from web.cluster_pages import ClusterHandle

# --- the HA part of `serve` ----------------------------------------------------------------


@dataclass
class HaNode:
    settings: Settings
    runtime: HaRuntime
    join: JoinService
    node_state: NodeState
    read_only: bool
    stop_joining: threading.Event

    @functools.cached_property
    def web_handle(self) -> ClusterHandle:
        return ClusterHandle(self.runtime, self.join, self.settings.cluster_hold_timeout)

    def run(self) -> None:
        """Start the HA loop, once the node's services are assembled."""
        self.runtime.start_loop()

    def stop(self) -> None:
        self.stop_joining.set()
        self.runtime.stop()


def start_ha(settings: Settings) -> HaNode:
    """Start Raft, the local PostgreSQL and the HA loop of a data member; return what the
    rest of ``serve`` needs (settings pointing at the local database, the role state)."""
    cfg = node_config.load(settings.data_dir)
    if cfg.kind != DATA:
        raise ConflictError(f"{settings.data_dir} is a witness; run `strongroom witness`")
    secret = node_config.load_secret(settings.data_dir)
    tls = TlsFiles.in_dir(settings.tls_dir)
    timings = HaTimings(handover_wait=float(settings.cluster_hold_timeout))
    runtime = HaRuntime(
        settings.data_dir, cfg, secret, tls.cert.read_bytes(), tls.key.read_bytes(), timings
    )
    state = NodeState(role="starting", writable=False, node_name=cfg.name)

    def on_role(role: str, writable: bool, primary: str | None) -> None:
        state.role = role
        state.writable = writable
        state.primary_address = primary

    # Whatever this host held before it stopped, it holds no VIP until the loop says so.
    runtime.vip.release()
    runtime.on_role(on_role)
    runtime.epoch_writer = runtime.pg.write_epoch
    stop_joining = threading.Event()
    runtime.state.start()
    if not cfg.raft_joined:
        threading.Thread(
            target=ensure_in_raft,
            args=(settings.data_dir, cfg, secret, stop_joining),
            name="sr-raft-join",
            daemon=True,
        ).start()
    view = runtime.wait_for_state(timeout=60)
    runtime.prepare_postgres(view.primary == cfg.name)
    primary = view.member(view.primary)
    if primary is not None and primary.name != cfg.name:
        # Not the primary: make sure the local server runs as its standby before the
        # services open it (a former primary is rewound first, never started as primary).
        pg = runtime.pg
        if not pg.is_running() or not pg.in_recovery():
            pg.follow(primary.db_host, primary.db_port)
    runtime.start_guards()
    join = JoinService(runtime.state, cfg, secret, settings.key_path)
    db_settings = dataclasses.replace(settings, database_url=cfg.database_url())
    return HaNode(db_settings, runtime, join, state, view.primary != cfg.name, stop_joining)


# --- control verbs (on the running node) ---------------------------------------------------


def _ha(node: Node) -> HaNode:
    if not isinstance(node.cluster, HaNode):
        raise ValidationError("this node is not in a high-availability cluster")
    return node.cluster


@control_verb("cluster.status")
async def _status(node: Node, _args: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await node.in_thread(_ha(node).runtime.status)
    return result


@control_verb("cluster.join_token")
async def _join_token(node: Node, _args: dict[str, Any]) -> dict[str, Any]:
    token, ca = await node.in_thread(_ha(node).join.new_token)
    return {"token": token, "ca_hash": ca}


def _switchover(ha: HaNode, target: str | None, timeout: float = 60.0) -> dict[str, Any]:
    state = ha.runtime.state
    view = state.view()
    target = target or view.sync_standby
    if target is None:
        raise ConflictError("there is no synchronous standby to hand over to")
    if target == view.primary:
        raise ValidationError(f"{target} is already the primary")
    if target != view.sync_standby:
        raise ConflictError(
            f"{target} is not the synchronous standby ({view.sync_standby or 'none'}); "
            "only it can take over without losing writes"
        )
    if not state.call("request_switchover", target, view.epoch, timeout=5.0):
        raise ConflictError("the cluster changed meanwhile; try again")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = state.view()
        if now.primary == target:
            return {"primary": target, "epoch": now.epoch}
        time.sleep(0.2)
    state.call("cancel_switchover", view.epoch, timeout=5.0)
    raise ConflictError(f"{target} did not take over within {timeout:g} s; switchover cancelled")


@control_verb("cluster.switchover")
async def _switchover_verb(node: Node, args: dict[str, Any]) -> dict[str, Any]:
    target = args.get("to")
    result: dict[str, Any] = await node.in_thread(
        _switchover, _ha(node), str(target) if target else None
    )
    return result


def _remove(ha: HaNode, name: str) -> dict[str, Any]:
    state = ha.runtime.state
    member = state.view().member(name)
    if member is None:
        raise ValidationError(f"no member named {name}")
    if not state.call("remove_member", name, timeout=5.0):
        raise ConflictError(f"{name} is the primary or the synchronous standby; switch over first")
    try:
        state.remove_raft_node(member.raft_address)
    except ClusterStateError as exc:
        raise ConflictError(f"{name} left the member list but not Raft yet: {exc}") from None
    return {"removed": name}


@control_verb("cluster.remove")
async def _remove_verb(node: Node, args: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await node.in_thread(_remove, _ha(node), str(args.get("name", "")))
    return result


# --- the CLI -------------------------------------------------------------------------------


def _name(args: argparse.Namespace) -> str:
    return str(args.name or socket.gethostname().split(".")[0].lower())


def cmd_init(args: argparse.Namespace) -> int:
    if not args.ha:
        raise ValidationError(
            "a single node needs no init: run `strongroom serve`; for a cluster use --ha"
        )
    if not args.advertise:
        raise ValidationError("init --ha needs --advertise ADDR (this node's cluster address)")
    settings = settings_from_args(args)
    setup_logging("WARNING")
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    archive = None
    if args.from_data_dir:
        archive = _snapshot_single_node(Path(args.from_data_dir).absolute(), settings)
    with data_dir_lock(settings, "init --ha"):
        cfg = create_cluster(
            settings.data_dir,
            settings.key_path,
            settings.tls_dir,
            _name(args),
            args.advertise,
            args.vip or "",
            args.vip_interface or "",
            args.hooks_dir or "",
        )
    if archive is not None:
        moved = _restore_into_cluster(archive, settings, cfg)
        print(f"moved the vault of {args.from_data_dir} into PostgreSQL ({moved} rows)")
    print(f"cluster {cfg.cluster_id} created; {cfg.name} is its primary")
    print(f"PostgreSQL runs on port {cfg.db_port}; Raft will listen on {cfg.raft_address}")
    print("Start the node now: strongroom serve (or: systemctl start strongroom)")
    return 0


def _snapshot_single_node(source: Path, settings: Settings) -> Path:
    """``init --ha --from-data-dir``: an encrypted logical snapshot of a stopped single
    node's SQLite vault (the backup format), taken under that node's lock. Its master key
    becomes the cluster's."""
    from backup.service import snapshot_archive
    from node.keyring import read_key_file, write_key_file
    from node.store.db import open_store

    old = dataclasses.replace(settings, data_dir=source, database_url=None, master_key_path=None)
    if not (source / "strongroom.db").is_file():
        raise ValidationError(f"{source} holds no single-node vault (no strongroom.db)")
    master = read_key_file(old.key_path)
    if settings.key_path.exists():
        if read_key_file(settings.key_path) != master:
            raise ConflictError(f"{settings.key_path} holds another master key; move it away")
    else:
        write_key_file(settings.key_path, master)
    archive = node_config.cluster_dir(settings.data_dir) / "from-single-node.zip"
    archive.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with data_dir_lock(old, "init --ha --from-data-dir (stop that node first)"):
        store = open_store(old.db_url, migrate=False)
        try:
            snapshot_archive(store, old.key_path, archive, installation_id="single-node")
        finally:
            store.dispose()
    return archive


def _restore_into_cluster(archive: Path, settings: Settings, cfg: NodeConfig) -> int:
    from backup.restore import KeySource, open_verified, restore

    try:
        verified = open_verified(archive, KeySource.from_key_file(settings.key_path))
        try:
            summary = restore(
                verified,
                data_dir=settings.data_dir,
                key_path=settings.key_path,
                database_url=cfg.database_url(),
            )
        finally:
            verified.reader.close()
    finally:
        archive.unlink(missing_ok=True)
    return summary.rows


def cmd_join_token(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    setup_logging("WARNING")
    try:
        result = call(settings.control_socket, "cluster.join_token", {})
    except NodeNotRunningError:
        raise StrongroomError("join-token needs the running primary (strongroom serve)") from None
    print(f"token:   {result['token']}")
    print(f"ca-hash: {result['ca_hash']}")
    print("The token is valid for one hour and for one node.")
    return 0


def cmd_join(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    setup_logging("WARNING")
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with data_dir_lock(settings, "join"):
        cfg = join_cluster(
            args.url,
            args.token,
            args.ca_hash,
            _name(args),
            args.advertise,
            DATA,
            settings.data_dir,
            settings.key_path,
            settings.tls_dir,
            args.hooks_dir or "",
        )
    print(f"{cfg.name} joined cluster {cfg.cluster_id}; base backup taken, PostgreSQL follows")
    print("Start the node now: strongroom serve (or: systemctl start strongroom)")
    return 0


def cmd_witness(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    setup_logging(settings.log_level, settings.log_file)
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with data_dir_lock(settings, "witness"):
        if args.join and not node_config.is_member(settings.data_dir):
            if not (args.token and args.ca_hash and args.advertise):
                raise ValidationError("witness --join needs --token, --ca-hash and --advertise")
            join_cluster(
                args.join,
                args.token,
                args.ca_hash,
                _name(args),
                args.advertise,
                WITNESS,
                settings.data_dir,
                settings.key_path,
                settings.tls_dir,
            )
        cfg = node_config.load(settings.data_dir)
        if cfg.kind != WITNESS:
            raise ConflictError(f"{settings.data_dir} is a data node; run `strongroom serve`")
        run_witness(settings, cfg)
    return 0


def run_witness(settings: Settings, cfg: NodeConfig) -> None:
    secret = node_config.load_secret(settings.data_dir)
    witness = WitnessRuntime(settings.data_dir, cfg, secret)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())
    witness.start()
    print(f"witness {cfg.name} runs Raft on {cfg.raft_address}", flush=True)
    status_file = settings.data_dir / "run" / "witness-status.json"
    status_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        ensure_in_raft(settings.data_dir, cfg, secret, stop)
        while not stop.wait(1.0):
            witness.tick()
            status_file.write_text(json.dumps(witness.status()))
    finally:
        witness.stop()


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    setup_logging("WARNING")
    try:
        status = call(settings.control_socket, "cluster.status", {})
    except NodeNotRunningError:
        witness_file = settings.data_dir / "run" / "witness-status.json"
        if not witness_file.exists():
            raise
        status = json.loads(witness_file.read_text())
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
        return 0
    raft = status.get("raft", {})
    print(f"cluster {status.get('cluster_id')}  (this node: {status.get('self')})")
    print(f"primary: {status.get('primary')}  epoch {status.get('epoch')}")
    print(f"synchronous standby: {status.get('sync_standby') or 'none'}")
    print(f"raft: leader {raft.get('leader')}  term {raft.get('term')}")
    if status.get("vip"):
        print(f"vip: {status['vip']} on {status.get('vip_holder')}")
    for m in status.get("members", []):
        lag = m.get("replication_lag_bytes")
        contact = m.get("last_contact_s")
        print(
            f"  {m['name']:<12} {m.get('role', m.get('kind', '')):<8} {m.get('address', '')}"
            f"  last contact {'-' if contact is None else f'{contact} s'}"
            f"  lag {'-' if lag is None else f'{lag} B'}"
        )
    return 0


def cmd_switchover(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    setup_logging("WARNING")
    result = call(settings.control_socket, "cluster.switchover", {"to": args.to}, timeout=90)
    print(f"{result['primary']} is the primary now (epoch {result['epoch']})")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    setup_logging("WARNING")
    call(settings.control_socket, "cluster.remove", {"name": args.node})
    print(f"{args.node} removed from the cluster")
    return 0


def cmd_vip_release(args: argparse.Namespace) -> int:
    """Used by systemd (ExecStopPost): drop the VIP whatever state the node died in."""
    settings = settings_from_args(args)
    setup_logging("WARNING")
    if not node_config.is_member(settings.data_dir):
        return 0
    cfg = node_config.load(settings.data_dir)
    make_vip(cfg.vip, cfg.vip_interface).release()
    if cfg.vip:
        print(f"VIP {cfg.vip} released")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("init", parents=[common], help="create a high-availability cluster")
    p.add_argument("--ha", action="store_true", help="make this node a cluster's first primary")
    p.add_argument("--advertise", help="this node's address on the cluster network")
    p.add_argument("--name", help="this node's name in the cluster (default: host name)")
    p.add_argument("--vip", help="virtual IP with prefix length, e.g. 10.0.0.100/24")
    p.add_argument("--vip-interface", help="network interface for the VIP, e.g. eth1")
    p.add_argument("--from-data-dir", help="move this stopped single node's vault into the cluster")
    p.add_argument("--hooks-dir", help="run the executables here on role changes")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser(
        "join-token", parents=[common], help="print a single-use join token and the CA hash"
    )
    p.set_defaults(func=cmd_join_token)

    p = sub.add_parser("join", parents=[common], help="join a cluster as a data node")
    p.add_argument("url", help="https://PRIMARY:7272")
    p.add_argument("--token", required=True)
    p.add_argument("--ca-hash", required=True, help="sha256:... from strongroom join-token")
    p.add_argument("--advertise", required=True, help="this node's address")
    p.add_argument("--name", help="this node's name in the cluster (default: host name)")
    p.add_argument("--hooks-dir", help="run the executables here on role changes")
    p.set_defaults(func=cmd_join)

    p = sub.add_parser("witness", parents=[common], help="run (and first join) a witness")
    p.add_argument("--join", metavar="URL", help="https://PRIMARY:7272 to join through")
    p.add_argument("--token")
    p.add_argument("--ca-hash")
    p.add_argument("--advertise")
    p.add_argument("--name", help="this node's name in the cluster (default: host name)")
    p.set_defaults(func=cmd_witness)

    p = sub.add_parser("cluster", help="the high-availability cluster")
    c = p.add_subparsers(dest="cluster_verb", metavar="ACTION")
    c.required = True
    s = c.add_parser("status", parents=[common], help="members, roles, primary, lag, VIP")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)
    s = c.add_parser("switchover", parents=[common], help="planned handover to the standby")
    s.add_argument("--to", default=None, help="the node to hand over to")
    s.set_defaults(func=cmd_switchover)
    s = c.add_parser("remove", parents=[common], help="remove a member")
    s.add_argument("node")
    s.set_defaults(func=cmd_remove)

    p = sub.add_parser("vip", help="the virtual IP")
    v = p.add_subparsers(dest="vip_verb", metavar="ACTION")
    v.required = True
    s = v.add_parser("release", parents=[common], help="make sure this host holds no VIP")
    s.set_defaults(func=cmd_vip_release)


__all__ = ["register", "start_ha", "HaNode"]
