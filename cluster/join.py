"""Forming a cluster: ``init --ha`` on the first node, the join handshake (served by a data
member, used by ``join`` and ``witness --join``), and adding a joined node to Raft.

The joining node pins the hash of the cluster CA: it fetches the CA certificate, checks
its hash against the one the operator copied from ``strongroom join-token``, and then talks
TLS trusting only that CA. It presents a single-use token; a data node receives the
cluster secret, the master key, the database credentials and a certificate of its own; a
witness receives only what Raft needs (the cluster secret and the member list).
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import logging
import re
import secrets
import ssl
import time
import urllib.request
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cluster import config as node_config
from cluster.config import DB_PORT, RAFT_PORT, WEB_PORT, NodeConfig
from cluster.pki import ca_hash, issue, make_ca
from cluster.postgres import ClusterMember, LocalPostgres, PostgresError
from cluster.runtime import (
    pinned_context,
    post_json,
    raft_join_proof,
    seal,
    token_hash,
    unseal,
    utc_now,
)
from cluster.state import DATA, WITNESS, ClusterState, ClusterStateError, Member
from cluster.vip import parse_vip
from node.errors import ConflictError, PermissionDeniedError, StrongroomError, ValidationError
from node.keyring import KEY_LEN, read_key_file, write_key_file
from node.tls import TlsFiles, write_private

TOKEN_TTL_S = 3600
JOIN_TOKEN_PREFIX = "srj_"


def new_join_token() -> str:
    """192 random bits behind a fixed prefix: a bare URL-safe token starts with "-" one
    time in 64, and the command line (``--token T``) would then read it as an option."""
    return JOIN_TOKEN_PREFIX + secrets.token_urlsafe(24)


log = logging.getLogger("strongroom.join")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValidationError(
            f"node name {name!r} must be 1-32 lower-case letters, digits or dashes"
        )
    return name


def check_address(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        raise ValidationError(f"--advertise {address!r} is not an IP address") from None


def _write_tls(tls_dir: Path, cert: bytes, key: bytes) -> None:
    files = TlsFiles.in_dir(tls_dir)
    write_private(files.key, key)
    write_private(files.cert, cert)


def _wait_leader(state: ClusterState, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state.status().leader is not None:
            return
        time.sleep(0.05)
    raise ClusterStateError("Raft elected no leader")


# --- the first node ------------------------------------------------------------------------


def create_cluster(
    data_dir: Path,
    key_path: Path,
    tls_dir: Path,
    name: str,
    advertise: str,
    vip: str = "",
    vip_interface: str = "",
    hooks_dir: str = "",
) -> NodeConfig:
    """Create the cluster on this node: ids, secret, CA, certificate, master key, the
    managed PostgreSQL (initialised and left running as primary) and the Raft state."""
    check_name(name)
    check_address(advertise)
    if vip:
        parse_vip(vip)
        if not vip_interface:
            raise ValidationError("--vip needs --vip-interface (the interface to put it on)")
    if node_config.is_member(data_dir):
        raise ConflictError(f"{data_dir} already belongs to a cluster")
    if (data_dir / "strongroom.db").exists():
        raise ConflictError(
            f"{data_dir} holds a single-node vault; moving it into a cluster "
            "(--from-data-dir) is not supported by this version"
        )
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not key_path.exists():
        write_key_file(key_path, secrets.token_bytes(KEY_LEN))
    master = read_key_file(key_path)
    cluster_id = str(uuid.uuid4())
    secret = secrets.token_bytes(32)
    ca_cert, ca_key = make_ca(cluster_id)
    names = [advertise, "127.0.0.1", "localhost"]
    if vip:
        names.append(str(parse_vip(vip).ip))
    cert, key = issue(ca_cert, ca_key, names)
    _write_tls(tls_dir, cert, key)
    cfg = NodeConfig(
        name=name,
        kind=DATA,
        advertise=advertise,
        cluster_id=cluster_id,
        vip=vip,
        vip_interface=vip_interface,
        superuser_password=secrets.token_urlsafe(24),
        replication_password=secrets.token_urlsafe(24),
        app_password=secrets.token_urlsafe(24),
        raft_joined=True,
        hooks_dir=hooks_dir,
    )
    node_config.save_secret(data_dir, secret)
    write_private(node_config.cluster_dir(data_dir) / "ca.crt", ca_cert)
    pg = LocalPostgres(data_dir / "postgres", cfg.db_port)
    pg.member = ClusterMember(
        name, advertise, cert, key, cfg.superuser_password, cfg.replication_password, (advertise,)
    )
    pg.configure_cluster(pg.member)
    pg.initdb()
    pg.start()
    pg.setup_primary_roles(cfg.replication_password, cfg.app_password)
    state = ClusterState(
        cfg.raft_address, [], secret, node_config.cluster_dir(data_dir) / "raft"
    ).start()
    try:
        _wait_leader(state)
        me = Member(name, DATA, cfg.raft_address, cfg.api_url, advertise, cfg.db_port, utc_now())
        state.call("bootstrap", cluster_id, me.to_dict())
        state.call("set_vip", vip, vip_interface)
        state.call("set_setting", "ca_cert", ca_cert.decode())
        state.call("set_blob", "ca_key", seal(master, "ca_key", ca_key))
    finally:
        state.stop()
    node_config.save(data_dir, cfg)
    return cfg


# --- the handshake, served by a data member ------------------------------------------------


@dataclass
class JoinService:
    """What a data member does with a join request or a Raft-join request."""

    state: ClusterState
    cfg: NodeConfig
    secret: bytes
    key_path: Path

    def ca_pem(self) -> bytes:
        ca = self.state.view().settings.get("ca_cert")
        if not isinstance(ca, str):
            raise StrongroomError("the cluster CA is not in the Raft state yet")
        return ca.encode()

    def new_token(self, now: float | None = None) -> tuple[str, str]:
        """A single-use token valid for an hour, and the CA hash to pin."""
        now = utc_now() if now is None else now
        token = new_join_token()
        self.state.call("add_join_token", token_hash(token), now + TOKEN_TTL_S, now)
        return token, ca_hash(self.ca_pem())

    def join(self, token: str, name: str, advertise: str, kind: str) -> dict[str, Any]:
        check_name(name)
        check_address(advertise)
        if kind not in (DATA, WITNESS):
            raise ValidationError("kind must be 'data' or 'witness'")
        view = self.state.view()
        existing = view.member(name)
        if existing is not None:
            raise ConflictError(f"a member named {name} is already in the cluster")
        if not self.state.call("use_join_token", token_hash(token), utc_now()):
            raise PermissionDeniedError("the join token is unknown, already used or expired")
        api_url = f"https://{advertise}:{WEB_PORT}" if kind == DATA else ""
        member = Member(
            name,
            kind,
            f"{advertise}:{RAFT_PORT}",
            api_url,
            advertise if kind == DATA else "",
            DB_PORT if kind == DATA else 0,
            utc_now(),
        )
        if not self.state.call("add_member", member.to_dict()):
            raise ConflictError("the cluster refused the member (a witness already exists?)")
        view = self.state.view()
        reply: dict[str, Any] = {
            "cluster_id": view.cluster_id,
            "cluster_secret": base64.b64encode(self.secret).decode(),
            "ca_cert": self.ca_pem().decode(),
            "members": [m.to_dict() for m in view.members],
        }
        if kind == WITNESS:
            return reply
        master = read_key_file(self.key_path)
        ca_key = unseal(master, "ca_key", view.blobs["ca_key"])
        names = [advertise, "127.0.0.1", "localhost"]
        if view.vip:
            names.append(str(parse_vip(view.vip).ip))
        cert, key = issue(self.ca_pem(), ca_key, names)
        reply.update(
            master_key=base64.b64encode(master).decode(),
            superuser_password=self.cfg.superuser_password,
            replication_password=self.cfg.replication_password,
            app_password=self.cfg.app_password,
            node_cert=cert.decode(),
            node_key=key.decode(),
            vip=view.vip,
            vip_interface=view.vip_interface,
            primary=view.primary,
        )
        return reply

    def add_to_raft(self, name: str, proof: str) -> None:
        expected = raft_join_proof(self.secret, name)
        if not hmac.compare_digest(expected, proof):
            raise PermissionDeniedError("the Raft join proof is wrong")
        member = self.state.view().member(name)
        if member is None:
            raise PermissionDeniedError(f"{name} is not a member; join it first")
        if member.raft_address in self.state.status().connected:
            return
        self.state.add_raft_node(member.raft_address, timeout=5.0)


# --- the joining side ----------------------------------------------------------------------


def fetch_pinned_ca(url: str, expected_hash: str) -> bytes:
    """Fetch the CA certificate without trusting anything yet, then check its hash."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(f"{url}/cluster/ca", context=ctx, timeout=10) as resp:  # noqa: S310
            ca = bytes(resp.read())
    except OSError as exc:
        raise StrongroomError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None
    try:
        got = ca_hash(ca)
    except ValueError:
        raise StrongroomError(f"{url} did not send a CA certificate") from None
    if not hmac.compare_digest(got, expected_hash.strip().lower()):
        raise PermissionDeniedError(
            f"the cluster CA at {url} has hash {got}, not the pinned {expected_hash}; "
            "refusing to join"
        )
    return ca


def _normalise_url(url: str) -> str:
    url = url.rstrip("/")
    if not url.startswith("https://"):
        raise ValidationError("the primary's URL must start with https://")
    return url


def join_cluster(
    url: str,
    token: str,
    expected_ca_hash: str,
    name: str,
    advertise: str,
    kind: str,
    data_dir: Path,
    key_path: Path,
    tls_dir: Path,
    hooks_dir: str = "",
) -> NodeConfig:
    """The joining side of the handshake; writes what it received. A data node then takes
    a base backup and starts its PostgreSQL as a standby."""
    check_name(name)
    check_address(advertise)
    url = _normalise_url(url)
    if node_config.is_member(data_dir):
        raise ConflictError(f"{data_dir} already belongs to a cluster")
    ca = fetch_pinned_ca(url, expected_ca_hash)
    reply = post_json(
        f"{url}/cluster/join",
        {"token": token, "name": name, "advertise": advertise, "kind": kind},
        pinned_context(ca),
        timeout=30,
    )
    members = [Member.from_dict(m) for m in reply["members"]]
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    node_config.save_secret(data_dir, base64.b64decode(reply["cluster_secret"]))
    write_private(node_config.cluster_dir(data_dir) / "ca.crt", ca)
    cfg = NodeConfig(
        name=name,
        kind=kind,
        advertise=advertise,
        cluster_id=str(reply["cluster_id"]),
        extra={"join_url": url},
    ).with_peers(tuple(m.raft_address for m in members))
    if kind == DATA:
        if not key_path.exists():
            write_key_file(key_path, base64.b64decode(reply["master_key"]))
        elif read_key_file(key_path) != base64.b64decode(reply["master_key"]):
            raise ConflictError(f"{key_path} holds another master key; move it away first")
        cert, key = reply["node_cert"].encode(), reply["node_key"].encode()
        _write_tls(tls_dir, cert, key)
        cfg = NodeConfig(
            name=name,
            kind=kind,
            advertise=advertise,
            cluster_id=cfg.cluster_id,
            vip=str(reply.get("vip", "")),
            vip_interface=str(reply.get("vip_interface", "")),
            superuser_password=str(reply["superuser_password"]),
            replication_password=str(reply["replication_password"]),
            app_password=str(reply["app_password"]),
            raft_peers=cfg.raft_peers,
            hooks_dir=hooks_dir,
            extra={"join_url": url},
        )
        primary = next(m for m in members if m.name == reply["primary"])
        pg = LocalPostgres(data_dir / "postgres", cfg.db_port)
        pg.member = ClusterMember(
            name,
            advertise,
            cert,
            key,
            cfg.superuser_password,
            cfg.replication_password,
            tuple(m.db_host for m in members if m.db_host),
        )
        pg.configure_cluster(pg.member)
        # The primary admits our address in pg_hba on its next HA cycle.
        for attempt in range(20):
            try:
                pg.follow(primary.db_host, primary.db_port)
                break
            except PostgresError as exc:
                if "pg_hba.conf" not in str(exc) or attempt == 19:
                    raise
                time.sleep(0.5)
    node_config.save(data_dir, cfg)
    return cfg


def ensure_in_raft(data_dir: Path, cfg: NodeConfig, secret: bytes, stop: Any) -> NodeConfig:
    """Once, after joining: ask the member we joined through to add this node to the Raft
    configuration (retrying until it answers or ``stop`` is set)."""
    if cfg.raft_joined:
        return cfg
    ca = (node_config.cluster_dir(data_dir) / "ca.crt").read_bytes()
    body = {"name": cfg.name, "proof": raft_join_proof(secret, cfg.name)}
    url = str(cfg.extra.get("join_url", ""))
    while not stop.is_set():
        try:
            post_json(f"{url}/cluster/raft-join", body, pinned_context(ca), timeout=10)
            break
        except StrongroomError as exc:
            log.info("not yet in Raft: %s", exc)
            stop.wait(1.0)
    else:
        return cfg
    cfg = replace(cfg, raft_joined=True)
    node_config.save(data_dir, cfg)
    return cfg


__all__ = ["create_cluster", "join_cluster", "JoinService", "fetch_pinned_ca", "ensure_in_raft"]
