"""Serve given services (on either dialect) with the real web application in-process over
HTTPS, for the audit, report and rebranding page tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import tornado.httpserver
import tornado.netutil

from node.auth import SessionUser
from node.services import Services
from node.tls import ensure_certificate
from tests.integration.live_app import Browser, browser_for
from web.app import make_app, make_ssl_context


@contextmanager
def serving(services: Services, tls_dir: Path) -> Iterator[int]:
    """The app for ``services`` on a free port of 127.0.0.1; yields the port."""
    tls, _ = ensure_certificate(tls_dir, ())
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    port = int(sockets[0].getsockname()[1])
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, tornado.httpserver.HTTPServer] = {}

    def serve() -> None:
        asyncio.set_event_loop(loop)

        async def start() -> None:
            server = tornado.httpserver.HTTPServer(
                make_app(services), ssl_options=make_ssl_context(tls)
            )
            server.add_sockets(sockets)
            holder["server"] = server
            started.set()

        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True, name="report-web")
    thread.start()
    assert started.wait(10)
    try:
        yield port
    finally:

        async def stop() -> None:
            holder["server"].stop()
            await holder["server"].close_all_connections()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def browser(services: Services, port: int, user: SessionUser | None) -> Browser:
    return browser_for(services, port, user)
