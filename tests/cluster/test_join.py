"""The join handshake's guarantees, on a real one-member Raft cluster on loopback and a real
HTTPS endpoint: single-use expiring tokens, a witness that never receives the master key,
certificates signed by the cluster CA, CA pinning that refuses another CA."""

from __future__ import annotations

import base64
import http.server
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from appliance.cli import build_parser
from cluster.config import NodeConfig
from cluster.join import JoinService, fetch_pinned_ca, new_join_token
from cluster.pki import ca_hash, issue, make_ca
from cluster.runtime import raft_join_proof, seal
from cluster.state import DATA, ClusterState, Member
from node.errors import ConflictError, PermissionDeniedError, ValidationError
from node.keyring import read_key_file, write_key_file
from tests.helpers import free_port

SECRET = b"c" * 32


@pytest.fixture
def service(tmp_path: Path) -> Iterator[JoinService]:
    addr = f"127.0.0.1:{free_port()}"
    state = ClusterState(addr, [], SECRET, tmp_path / "raft").start()
    key_path = tmp_path / "master.key"
    write_key_file(key_path, b"m" * 32)
    try:
        deadline = time.monotonic() + 15
        while state.status().leader is None and time.monotonic() < deadline:
            time.sleep(0.05)
        ca_cert, ca_key = make_ca("cid")
        me = Member("n1", DATA, addr, "https://127.0.0.1:7272", "127.0.0.1", 2345, 0.0)
        state.call("bootstrap", "cid", me.to_dict())
        state.call("set_setting", "ca_cert", ca_cert.decode())
        state.call("set_blob", "ca_key", seal(b"m" * 32, "ca_key", ca_key))
        cfg = NodeConfig(
            name="n1",
            kind=DATA,
            advertise="127.0.0.1",
            cluster_id="cid",
            superuser_password="su",
            replication_password="repl",
            app_password="app",
        )
        yield JoinService(state, cfg, SECRET, key_path)
    finally:
        state.stop()


def test_a_witness_gets_what_raft_needs_and_never_the_master_key(service: JoinService) -> None:
    token, pinned = service.new_token()
    assert pinned == ca_hash(service.ca_pem())
    reply = service.join(token, "w", "10.0.0.13", "witness")
    assert set(reply) == {"cluster_id", "cluster_secret", "ca_cert", "members"}
    assert base64.b64decode(reply["cluster_secret"]) == SECRET
    assert [m["name"] for m in reply["members"]] == ["n1", "w"]


def test_every_token_can_be_given_on_the_command_line() -> None:
    """``strongroom join URL --token T``: a token that began with "-" would be read as an
    option (one bare URL-safe token in 64 does)."""
    parser = build_parser()
    for _ in range(2000):
        token = new_join_token()
        args = parser.parse_args(
            [
                "join",
                "https://10.0.0.11:7272",
                "--token",
                token,
                "--ca-hash",
                "sha256:00",
                "--advertise",
                "10.0.0.12",
            ]
        )
        assert args.token == token


def test_a_token_works_once(service: JoinService) -> None:
    token, _ = service.new_token()
    service.join(token, "w", "10.0.0.13", "witness")
    with pytest.raises(PermissionDeniedError, match="unknown, already used or expired"):
        service.join(token, "n2", "10.0.0.12", "data")
    with pytest.raises(PermissionDeniedError):
        service.join("made-up", "n3", "10.0.0.14", "data")


def test_an_expired_token_is_refused(service: JoinService) -> None:
    token, _ = service.new_token(now=time.time() - 3601)
    with pytest.raises(PermissionDeniedError):
        service.join(token, "n2", "10.0.0.12", "data")


def test_a_data_node_gets_the_master_key_and_a_certificate_from_the_ca(
    service: JoinService,
) -> None:
    token, _ = service.new_token()
    reply = service.join(token, "n2", "10.0.0.12", "data")
    assert base64.b64decode(reply["master_key"]) == read_key_file(service.key_path)
    assert reply["replication_password"] == "repl" and reply["primary"] == "n1"
    leaf = x509.load_pem_x509_certificate(reply["node_cert"].encode())
    ca = x509.load_pem_x509_certificate(service.ca_pem())
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10.0.0.12" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]


def test_bad_input_and_name_clashes_are_refused_without_using_the_token(
    service: JoinService,
) -> None:
    token, _ = service.new_token()
    with pytest.raises(ValidationError):
        service.join(token, "Bad Name!", "10.0.0.12", "data")
    with pytest.raises(ValidationError):
        service.join(token, "n2", "not-an-address", "data")
    with pytest.raises(ConflictError):
        service.join(token, "n1", "10.0.0.12", "data")
    # None of these consumed the token.
    service.join(token, "n2", "10.0.0.12", "data")


def test_raft_join_needs_the_cluster_secret(service: JoinService) -> None:
    with pytest.raises(PermissionDeniedError):
        service.add_to_raft("n1", raft_join_proof(b"x" * 32, "n1"))
    with pytest.raises(PermissionDeniedError, match="not a member"):
        service.add_to_raft("ghost", raft_join_proof(SECRET, "ghost"))


@pytest.fixture
def https_ca(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    """A real HTTPS endpoint that serves a CA certificate at /cluster/ca."""
    ca_cert, ca_key = make_ca("other")
    cert, key = issue(ca_cert, ca_key, ["127.0.0.1"])
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.end_headers()
            self.wfile.write(ca_cert)

        def log_message(self, *_args: object) -> None:
            return None

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_port}", ca_cert
    finally:
        server.shutdown()
        server.server_close()


def test_join_pins_the_ca_hash(https_ca: tuple[str, bytes]) -> None:
    url, ca = https_ca
    assert fetch_pinned_ca(url, ca_hash(ca)) == ca
    other, _ = make_ca("attacker")
    with pytest.raises(PermissionDeniedError, match="refusing to join"):
        fetch_pinned_ca(url, ca_hash(other))
