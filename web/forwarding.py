"""Requests during a planned switchover: held, then served here or forwarded to the new
primary (the decision is cluster/forwarding.py's), so a switchover fails no request.

A forwarded request goes to the new primary over HTTPS pinned to the cluster CA, with its
method, path, query, body and every header the client sent (its cookie or AUTHTOKEN
included: the primary authenticates and authorises it itself, exactly as if it came
directly), plus ``X-Forwarded-For`` (the client's address as this node sees it) and
``X-Strongroom-Forwarded-By`` (this node's name) and ``X-Strongroom-Forwarding-Proof`` (an
HMAC with the cluster secret, cluster/forwarding.py). The primary believes X-Forwarded-For
only from a data member's address with a valid proof. The answer is relayed as it is, with
``X-Strongroom-Forwarded-By`` added. Bodies, query strings and tokens are never logged.

The forwarder also counts the requests this node is serving: the HA loop lets them finish
before it hands over (cluster/ha.py ``hand_over``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import TYPE_CHECKING

import tornado.web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.httputil import HTTPHeaders, HTTPServerRequest

from cluster import config as node_config
from cluster.forwarding import (
    FORWARD,
    HOLD,
    SERVE,
    Traffic,
    forwarded_client,
    forwarding_proof,
    member_addresses,
    member_hosts,
    route_request,
)
from cluster.runtime import HaRuntime, pinned_context

if TYPE_CHECKING:
    from web.base import BaseHandler

log = logging.getLogger("strongroom.web")

FORWARDED_BY = "X-Strongroom-Forwarded-By"
FORWARDING_PROOF = "X-Strongroom-Forwarding-Proof"
HOLD_POLL = 0.02  # seconds between looks at the node's role while a request is held
# Never passed on: they describe one connection, or are set by the forwarder itself.
NOT_FORWARDED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "x-forwarded-for",
        FORWARDED_BY.lower(),
        FORWARDING_PROOF.lower(),
    }
)
NOT_RELAYED = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"}
)


class Forwarder:
    """Holds and forwards requests of one cluster member's web server."""

    def __init__(self, runtime: HaRuntime, hold_timeout: float) -> None:
        self.runtime = runtime
        self.hold_timeout = hold_timeout
        self.in_flight = 0
        self._members_at = -1.0
        self._addresses: frozenset[str] = frozenset()
        self._hosts: frozenset[str] = frozenset()
        self._context: ssl.SSLContext | None = None
        runtime.requests_in_flight = self.count

    def count(self) -> int:
        return self.in_flight

    @property
    def node_name(self) -> str:
        return self.runtime.cfg.name

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._members_at < 1.0:
            return
        members = self.runtime.state.view().members
        self._addresses = member_addresses(members)
        self._hosts = member_hosts(members) - {self.runtime.cfg.advertise}
        self._members_at = now

    def client_of(self, request: HTTPServerRequest) -> str | None:
        """The client address named by a request another data member forwarded, else None
        (X-Forwarded-For from anyone but a member is not believed)."""
        if FORWARDED_BY not in request.headers:
            return None
        self._refresh()
        return forwarded_client(
            request.remote_ip or "",
            request.headers.get(FORWARDED_BY),
            request.headers.get("X-Forwarded-For"),
            self._hosts,
            proof=request.headers.get(FORWARDING_PROOF),
            secret=self.runtime.secret,
            method=request.method or "",
            uri=request.uri or "",
            now=time.time(),
        )

    # holding ----------------------------------------------------------------------------

    async def route(self, handler: BaseHandler) -> bool:
        """Hold the request until it can be served here (True) or forwarded (False, the
        answer is sent); refuse it with a 503 naming the primary when neither happens."""
        forwarded = self.client_of(handler.request) is not None
        started = time.monotonic()
        while True:
            # Counted before the check: once the HA loop paused writes and then sees no
            # request in flight, none that passed this check is still running.
            self.in_flight += 1
            state = handler.services.state
            self._refresh()
            traffic = Traffic(
                state.role,
                state.writable,
                state.primary_address,
                self.runtime.cfg.api_url,
                self._addresses,
            )
            decision = route_request(
                traffic, forwarded, time.monotonic() - started, self.hold_timeout
            )
            if decision.kind == SERVE:
                handler.counted_in = self
                handler.clear_header("Retry-After")
                handler.clear_header("X-Strongroom-Primary")
                handler.cluster_headers()
                return True
            self.in_flight -= 1
            if decision.kind == HOLD:
                await asyncio.sleep(HOLD_POLL)
                continue
            if decision.kind == FORWARD:
                await self.forward(handler, decision.target)
                return False
            if decision.target:
                log.warning(
                    "%s %s %s", handler.request.method, handler.request.path, decision.sentence
                )
            handler.refuse_unless_writable()  # raises the 503 ...
            # ... unless the node became writable in between: decide again.

    def finished(self) -> None:
        self.in_flight -= 1

    # forwarding -------------------------------------------------------------------------

    def _ssl(self) -> ssl.SSLContext:
        if self._context is None:
            data_dir = self.runtime.data_dir
            ca = (node_config.cluster_dir(data_dir) / "ca.crt").read_bytes()
            self._context = pinned_context(ca)
        return self._context

    async def forward(self, handler: BaseHandler, target: str) -> None:
        """Send the request to ``target`` (a data member) and relay its answer."""
        request = handler.request
        headers = HTTPHeaders()
        for name, value in request.headers.get_all():
            if name.lower() not in NOT_FORWARDED:
                headers.add(name, value)
        method = request.method or "GET"
        headers["X-Forwarded-For"] = handler.source_ip
        headers[FORWARDED_BY] = self.node_name
        headers[FORWARDING_PROOF] = forwarding_proof(
            self.runtime.secret,
            self.node_name,
            handler.source_ip,
            method,
            request.uri or "",
            time.time(),
        )
        body = request.body if request.body or method in ("POST", "PUT", "PATCH") else None
        outgoing = HTTPRequest(
            f"{target}{request.uri}",
            method=method,
            headers=headers,
            body=body,
            follow_redirects=False,
            decompress_response=False,
            allow_nonstandard_methods=True,
            ssl_options=self._ssl(),
            connect_timeout=2.0,
            # The primary may hold it too, then serve a slow request (a report, a restore).
            request_timeout=self.hold_timeout + 120.0,
        )
        answer = await AsyncHTTPClient().fetch(outgoing, raise_error=False)
        if answer.code == 599:  # no answer at all (refused, reset, timed out)
            log.warning("forwarding %s %s to %s failed", method, request.path, target)
            raise tornado.web.HTTPError(
                503, reason=f"The primary {target} could not be reached; try again."
            )
        handler.clear_header("Retry-After")
        handler.clear_header("X-Strongroom-Primary")
        handler.set_status(answer.code, answer.reason)
        seen: set[str] = set()
        for name, value in answer.headers.get_all():
            key = name.lower()
            if key in NOT_RELAYED:
                continue
            if key in seen:
                handler.add_header(name, value)
            else:
                handler.set_header(name, value)
                seen.add(key)
        handler.set_header(FORWARDED_BY, self.node_name)
        if answer.body:
            handler.finish(answer.body)
        else:
            handler.finish()


__all__ = ["Forwarder", "FORWARDED_BY"]
