"""The local control socket: how CLI verbs change a running node.

The node listens on ``DATA_DIR/run/control.sock`` (mode 0600, in a 0700 directory) and
accepts only peers running as its own user or root (SO_PEERCRED). Requests are one JSON
object per connection: ``{"verb": ..., "args": {...}}``; the reply is ``{"ok": true,
"result": {...}}`` or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tornado.iostream import IOStream, StreamClosedError
from tornado.netutil import bind_unix_socket
from tornado.tcpserver import TCPServer

from node.errors import StrongroomError

log = logging.getLogger("strongroom.control")
MAX_REQUEST = 1 << 20

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class NodeNotRunningError(StrongroomError):
    """No node answers on the control socket."""


class ControlError(StrongroomError):
    """The node refused or failed a control request; the message is the node's."""


def call(
    socket_path: Path, verb: str, args: dict[str, Any] | None = None, timeout: float = 120.0
) -> dict[str, Any]:
    """Send one request to the node at ``socket_path`` and return its result."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(socket_path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise NodeNotRunningError(f"no node is running on {socket_path}") from None
        payload = json.dumps({"verb": verb, "args": args or {}}).encode()
        sock.sendall(payload + b"\n")
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        sock.close()
    try:
        reply = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        raise ControlError("the node sent an unreadable reply") from None
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "the node refused the request")))
    result = reply.get("result", {})
    assert isinstance(result, dict)
    return result


def _peer_uid(stream: IOStream) -> int:
    sock = stream.socket
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class ControlServer(TCPServer):
    def __init__(self, handlers: dict[str, Handler]) -> None:
        super().__init__(max_buffer_size=MAX_REQUEST)
        self._verbs = handlers

    def listen_on(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path.parent, 0o700)
        sock = bind_unix_socket(str(path), mode=0o600)
        self.add_socket(sock)

    async def handle_stream(self, stream: IOStream, address: Any) -> None:
        try:
            if _peer_uid(stream) not in (0, os.getuid()):
                await stream.write(b'{"ok": false, "error": "not allowed"}')
                return
            line = await stream.read_until(b"\n", max_bytes=MAX_REQUEST)
            reply = await self._dispatch(line)
            await stream.write(json.dumps(reply).encode())
        except StreamClosedError:
            pass
        finally:
            stream.close()

    async def _dispatch(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            verb = request["verb"]
            args = request.get("args") or {}
            handler = self._verbs[verb]
        except (ValueError, KeyError, TypeError):
            return {"ok": False, "error": "unknown or malformed control request"}
        try:
            result = await handler(args)
        except StrongroomError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception:
            log.exception("control verb failed", extra={"verb": verb})
            return {"ok": False, "error": f"{verb} failed on the node; see its log"}
        log.info("control verb done", extra={"verb": verb})
        return {"ok": True, "result": result}
