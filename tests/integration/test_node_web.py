"""A running node over HTTPS: health, TLS versions, login, forced change, lockout, key
rotation and rekey while running, certificate install, and logs free of secrets."""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import ssl
from contextlib import closing
from pathlib import Path

import pytest

from node.keyring import KeyRing
from node.store.db import open_store
from node.tls import fingerprint, make_self_signed
from tests.helpers import Client, NodeProcess, insecure_context, run_cli


def _change(client: Client, current: str, new: str) -> int:
    return client.post_form(
        "/change-password", {"current": current, "new": new, "confirm": new}
    ).status


def test_health_is_json_over_self_signed_tls(node: NodeProcess) -> None:
    resp = node.client().get("/health")
    assert resp.status == 200
    body = resp.json()
    assert body["role"] == "single" and body["database"] == "ok" and body["version"]
    assert resp.headers["content-type"].startswith("application/json")
    with pytest.raises(ssl.SSLCertVerificationError):
        strict = ssl.create_default_context()
        with socket.create_connection(("127.0.0.1", node.port)) as raw:
            strict.wrap_socket(raw, server_hostname="localhost")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_tls_refused(node: NodeProcess, version: ssl.TLSVersion) -> None:
    ctx = insecure_context()
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = version
    try:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            ctx.wrap_socket(raw, server_hostname="localhost")
    ok = insecure_context()
    ok.minimum_version = ok.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as raw:
        with ok.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() == "TLSv1.2"


def test_security_headers(node: NodeProcess) -> None:
    resp = node.client().get("/login")
    assert resp.status == 200
    h = resp.headers
    assert "max-age=" in h["strict-transport-security"]
    assert "script-src 'self'" in h["content-security-policy"]
    assert "unsafe-inline" not in h["content-security-policy"]
    assert h["x-frame-options"] == "DENY"
    assert h["x-content-type-options"] == "nosniff"
    assert h["referrer-policy"] == "no-referrer"
    # the console's own static files carry them too, and do not name the server
    static = node.client().get("/static/copy.js")
    assert static.status == 200 and static.headers["x-content-type-options"] == "nosniff"
    assert "max-age=" in static.headers["strict-transport-security"]
    assert "script-src 'self'" in static.headers["content-security-policy"]
    assert static.headers["x-frame-options"] == "DENY" and "server" not in static.headers


def test_a_body_larger_than_any_form_or_api_call_is_not_read(node: NodeProcess) -> None:
    """Anyone may send a request: its body is bounded before a byte of it is buffered
    (the 100 MB tornado would otherwise read for a login form)."""
    context = insecure_context()
    with socket.create_connection(("127.0.0.1", node.port)) as raw:
        tls = context.wrap_socket(raw, server_hostname="localhost")
        tls.settimeout(10)  # unbounded, the node would wait for the 3 MB
        tls.sendall(
            b"POST /login HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            + f"Content-Length: {3 * 1024 * 1024}\r\n\r\n".encode()
        )
        answer = tls.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:80]
    assert node.client().get("/health").status == 200


def test_first_login_forces_password_change(node: NodeProcess) -> None:
    otp = node.initial_password()
    otp_file = node.data_dir / "initial-admin-password.txt"
    assert otp_file.read_text().strip() == otp
    assert otp_file.stat().st_mode & 0o777 == 0o600
    c = node.client()
    resp = c.login("  Admin ", otp)  # usernames are normalised
    assert resp.status == 302 and resp.headers["location"] == "/change-password"
    cookie = [v for k, v in c.cookies.items() if k == "sr_session"]
    assert cookie, "session cookie set"
    # Nothing else is reachable before the change.
    assert c.get("/").headers.get("location") == "/change-password"
    assert _change(c, otp, "short") == 400
    assert _change(c, "wrong-current-password", "a-much-better-passphrase") == 400
    assert _change(c, otp, "a-much-better-passphrase") == 302
    assert not otp_file.exists()
    home = c.get("/")
    assert home.status == 200 and "Administrator" in home.text
    # The one-time password no longer works; the new one does.
    assert node.client().login("admin", otp).status == 401
    assert node.client().login("admin", "a-much-better-passphrase").status == 302


def test_session_cookie_flags_and_xsrf(node: NodeProcess) -> None:
    c = node.client()
    raw = c.request("GET", "/login")
    set_cookie = raw.headers.get("set-cookie", "")
    assert "Secure" in set_cookie and "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    # A form without the XSRF token is refused.
    resp = c.post_form(
        "/login", {"username": "admin", "password": node.initial_password()}, with_xsrf=False
    )
    assert resp.status == 403
    resp = c.login("admin", node.initial_password())
    session_header = [h for h in resp.headers.items() if h[0] == "set-cookie"]
    assert session_header and "HttpOnly" in session_header[0][1]


def test_same_message_for_unknown_user_and_wrong_password(node: NodeProcess) -> None:
    a = node.client().login("admin", "not-the-password")
    b = node.client().login("nobody-here", "not-the-password")
    assert a.status == b.status == 401
    msg = re.compile(r'<p class="error"[^>]*>(.*?)</p>')
    assert msg.search(a.text).group(1) == msg.search(b.text).group(1)  # type: ignore[union-attr]


def test_five_failures_lock_the_account(node: NodeProcess) -> None:
    otp = node.initial_password()
    for _ in range(5):
        assert node.client().login("admin", "wrong-password-x").status == 401
    locked = node.client().login("admin", otp)
    assert locked.status == 401 and "locked" in locked.text
    # The local reset lifts the lock and issues a new one-time password.
    result = run_cli("admin", "reset-password", "admin", "--data-dir", str(node.data_dir))
    assert result.returncode == 0, result.stderr
    new_otp = result.stdout.strip().splitlines()[-1].strip()
    c = node.client()
    assert c.login("admin", new_otp).headers["location"] == "/change-password"


def _plant_secret(data_dir: Path, value: str) -> bytes:
    store = open_store(f"sqlite:///{data_dir / 'strongroom.db'}", migrate=False)
    try:
        kr = KeyRing.open(store, data_dir / "keys" / "master.key")
        return kr.encrypt(value, "accounts", "password_ct", 424242)
    finally:
        store.dispose()


def _read_secret(data_dir: Path, blob: bytes) -> str:
    store = open_store(f"sqlite:///{data_dir / 'strongroom.db'}", migrate=False)
    try:
        kr = KeyRing.open(store, data_dir / "keys" / "master.key")
        return kr.decrypt_text(blob, "accounts", "password_ct", 424242)
    finally:
        store.dispose()


def _settings_rows(data_dir: Path) -> list[tuple[str, str, str, str]]:
    """The user-audit rows of settings changes: user, source, target, detail."""
    with closing(sqlite3.connect(data_dir / "strongroom.db")) as conn:
        rows = conn.execute(
            "SELECT username, source_ip, target, detail FROM audit_log "
            "WHERE operation = 'settings' AND category = 'user' ORDER BY id"
        ).fetchall()
    return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]


def _chain_intact(data_dir: Path) -> bool:
    return run_cli("audit", "verify", "--data-dir", str(data_dir)).returncode == 0


def test_rotate_and_rekey_on_running_node(node: NodeProcess) -> None:
    blob = _plant_secret(node.data_dir, "db-root-pw-before")
    old_key = (node.data_dir / "keys" / "master.key").read_bytes()
    r = run_cli("keys", "rotate", "--data-dir", str(node.data_dir))
    assert r.returncode == 0, r.stderr
    assert "new active data key" in r.stdout
    r = run_cli("keys", "rekey", "--data-dir", str(node.data_dir))
    assert r.returncode == 0, r.stderr
    backups = list((node.data_dir / "keys").glob("master.key.*.bak"))
    assert len(backups) == 1 and backups[0].read_bytes() == old_key
    assert (node.data_dir / "keys" / "master.key").read_bytes() != old_key
    assert (node.data_dir / "keys" / "master.key").stat().st_mode & 0o777 == 0o600
    assert _read_secret(node.data_dir, blob) == "db-root-pw-before"
    # Both are audited, as the CLI on the node itself, in the chain the node goes on with.
    rows = _settings_rows(node.data_dir)
    assert [r[:3] for r in rows] == [("local admin", "local", "key ring")] * 2
    assert "added and made active" in rows[0][3] and "master key replaced" in rows[1][3]
    assert _chain_intact(node.data_dir)
    # The running node still works after both, and survives a restart with the new key.
    assert node.client().login("admin", node.initial_password()).status == 302
    node.stop()
    node.start()
    assert node.client().get("/health").status == 200


def test_tls_install_on_running_node(node: NodeProcess, tmp_path: Path) -> None:
    cert, key = make_self_signed(["vault.example.org", "127.0.0.1"])
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    r = run_cli(
        "tls",
        "install",
        str(tmp_path / "c.pem"),
        str(tmp_path / "k.pem"),
        "--data-dir",
        str(node.data_dir),
    )
    assert r.returncode == 0, r.stderr
    assert fingerprint(cert) in r.stdout
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as raw:
        with insecure_context().wrap_socket(raw, server_hostname="localhost") as tls:
            served = tls.getpeercert(binary_form=True)
    assert served is not None
    der = ssl.PEM_cert_to_DER_cert(cert.decode())
    assert served == der
    (row,) = _settings_rows(node.data_dir)
    assert row[:3] == ("local admin", "local", "TLS certificate")
    assert fingerprint(cert) in row[3]
    assert _chain_intact(node.data_dir)


def test_logs_hold_no_secrets(node: NodeProcess) -> None:
    otp = node.initial_password()
    c = node.client()
    c.login("admin", otp)
    new = "Unique-Login-Secret-4471x"
    assert _change(c, otp, new) == 302
    node.client().login("admin", "Wrong-Guess-Secret-9921")
    blob = _plant_secret(node.data_dir, "Vault-Secret-Value-5510")
    run_cli("keys", "rotate", "--data-dir", str(node.data_dir))
    assert _read_secret(node.data_dir, blob) == "Vault-Secret-Value-5510"
    node.stop()
    log = node.stderr()
    assert log.strip(), "the node wrote a log"
    for line in log.strip().splitlines():
        json.loads(line)  # structured: one JSON object per line
    for secret in (otp, new, "Wrong-Guess-Secret-9921", "Vault-Secret-Value-5510"):
        assert secret not in log
    assert '"path": "/login"' in log


def test_a_refused_header_value_is_not_logged(node: NodeProcess) -> None:
    """A header holding a byte HTTP does not allow is refused (400) by tornado, whose log
    line quoted the whole value: an AUTHTOKEN or a session cookie with one stray byte was
    then in the node's log. The line says what was wrong, without the value."""
    token = "7A1B2C3D-4E5F-6071-8293-A4B5C6D7E8F9"
    cookie = "Session-Cookie-Secret-3318"
    for header in (f"AUTHTOKEN: {token}\x7f", f"Cookie: sr_session={cookie}\x01"):
        with socket.create_connection(("127.0.0.1", node.port), timeout=10) as raw:
            with insecure_context().wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(
                    f"GET /restapi/json/v1/resources HTTP/1.1\r\nHost: localhost\r\n"
                    f"{header}\r\n\r\n".encode("latin-1")
                )
                assert tls.recv(64).startswith(b"HTTP/1.1 400")
    node.stop()
    log = node.stderr()
    assert log.count("Invalid header value (its value is not logged)") == 2
    assert token not in log and cookie not in log
