"""Base handlers: security headers, sessions, the client's address, errors without
internals, and running blocking service calls off the event loop."""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import math
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

import tornado.web
from tornado.ioloop import IOLoop

from node import __version__
from node.access import Access
from node.auth import SessionUser
from node.errors import (
    AuthenticationError,
    ConflictError,
    LicenceError,
    NotFoundError,
    NotPrimaryError,
    PermissionDeniedError,
    StrongroomError,
    ValidationError,
)
from node.inputs import MAX_ATTRIBUTE_VALUE, MAX_TEXT
from node.permissions import Action, allowed
from node.services import Services
from web.commit_wait import CommitWaiter
from web.forwarding import Forwarder

log = logging.getLogger("strongroom.web")

SESSION_COOKIE = "sr_session"
FLASH_COOKIE = "sr_flash"
P = ParamSpec("P")
T = TypeVar("T")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)

STATUS_OF: list[tuple[type[StrongroomError], int]] = [
    (ValidationError, 400),
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (LicenceError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (NotPrimaryError, 503),
]


def status_for(exc: StrongroomError) -> int:
    for kind, status in STATUS_OF:
        if isinstance(exc, kind):
            return status
    return 500


class Background:
    """Audit rows of requests answered either way (a refusal, a bad AUTHTOKEN), written by
    one thread of their own, so that many of them never hold up the workers that serve
    requests; at most ``max_pending`` wait, more are dropped (each drop logged)."""

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sr-audit-bg")
        self._lock = threading.Lock()
        self._pending = 0

    def submit(self, failed: str, fn: Callable[..., Any], *args: Any) -> bool:
        """Run ``fn(*args)`` later; log ``failed`` if it raises. False if it was dropped
        (``max_pending`` wait already, or the node is stopping), which is logged."""
        with self._lock:
            if self._pending >= self.max_pending:
                log.warning("too many audit rows waiting: one dropped", extra={"what": failed})
                return False
            self._pending += 1
        try:
            done = self._pool.submit(fn, *args)
        except RuntimeError:  # shut down: the node is stopping
            with self._lock:
                self._pending -= 1
            log.warning("the node is stopping: an audit row dropped", extra={"what": failed})
            return False

        def check(future: Any) -> None:
            with self._lock:
                self._pending -= 1
            if future.exception() is not None:
                log.error(failed, exc_info=future.exception())

        done.add_done_callback(check)
        return True

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class FailureThrottle:
    """How often a failure anyone can repeat at no cost (a made-up AUTHTOKEN) gets an audit
    row. Per source (an IPv4 address; an IPv6 /64, which one client commonly holds whole):
    the first at once, then at most one every ``every`` seconds. In all: at most
    ``per_second`` rows a second, whatever the number of sources. A row counts the
    failures left out before it, from its source and from all others; the node's log has
    each failure."""

    MAX_SOURCES = 10_000

    def __init__(self, every: float = 10.0, per_second: float = 5.0) -> None:
        self.every = every
        self.per_second = per_second
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[float, int]] = {}  # source -> (last row, left out)
        self._budget = (0.0, per_second)  # (when counted, rows allowed now)
        self._elsewhere = 0  # left out for want of the budget, any source

    @staticmethod
    def source(address: str) -> str:
        try:
            ip = _plain(ipaddress.ip_address(address))
        except ValueError:
            return address
        if ip.version == 6:
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))
        return str(ip)

    def admit(self, address: str, now: float | None = None) -> tuple[int, int] | None:
        """None: no row now (counted); else a row, with how many were left out before it
        from this source and from the others."""
        now = time.monotonic() if now is None else now
        key = self.source(address)
        with self._lock:
            known = self._seen.pop(key, None)  # put back below: the last to be forgotten
            if known is None and len(self._seen) >= self.MAX_SOURCES:
                self._seen.pop(next(iter(self._seen)))  # the longest unheard-of source
            last, left_out = known or (-math.inf, 0)
            when, allowed = self._budget
            allowed = min(self.per_second, allowed + (now - when) * self.per_second)
            if now - last < self.every:  # this source had its row lately
                self._seen[key] = (last, left_out + 1)
                self._budget = (now, allowed)
                return None
            if allowed < 1:  # too many rows from everywhere this second
                self._seen[key] = (last, left_out)
                self._elsewhere += 1
                self._budget = (now, allowed)
                return None
            self._seen[key] = (now, 0)
            self._budget = (now, allowed - 1)
            elsewhere, self._elsewhere = self._elsewhere, 0
            return left_out, elsewhere


class WebContext:
    """What every handler reaches through ``self.ctx``."""

    def __init__(self, services: Services, executor: ThreadPoolExecutor) -> None:
        self.services = services
        self.executor = executor
        # two lanes: what a logged-in user did wrong, and what anyone can send (throttled)
        self.background = Background(max_pending=100_000)
        self.anonymous = Background(max_pending=1_000)
        self.bad_tokens = FailureThrottle()
        # awaits the reveals' audit rows (the store's group commit, or a writer process)
        self.commits = CommitWaiter(services.vault.reveals)
        self.version = __version__
        trusted = []
        for net in services.settings.trusted_proxies:
            trusted.append(ipaddress.ip_network(net, strict=False))
        self.trusted_proxies = trusted


def security_headers(handler: tornado.web.RequestHandler) -> None:
    """What every answer of the console carries (pages, errors, static files): HTTPS only,
    the content policy, no framing, no sniffing, no referrer, no server name."""
    handler.set_header("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
    handler.set_header("Content-Security-Policy", CSP)
    handler.set_header("X-Frame-Options", "DENY")
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.set_header("Referrer-Policy", "no-referrer")
    handler.clear_header("Server")


class BaseHandler(tornado.web.RequestHandler):
    ctx: WebContext
    counted_in: Forwarder | None = None  # the forwarder counting this request in flight

    def initialize(self, ctx: WebContext) -> None:
        self.ctx = ctx

    @property
    def services(self) -> Services:
        return self.ctx.services

    def set_default_headers(self) -> None:
        security_headers(self)
        self.set_header("Cache-Control", "no-store")
        self.cluster_headers()

    def compute_etag(self) -> str | None:
        """No ETag on any answer: tornado's would be a SHA-1 of the body, which for a page or
        an API reply that shows a password is an unsalted hash of it in a header (and,
        with If-None-Match, a way to test guesses). Nothing here may be cached anyway."""
        return None

    def cluster_headers(self) -> None:
        """A cluster member names itself, and a standby names the primary, on every answer
        (error pages included: tornado resets headers to these defaults before them)."""
        ctx = getattr(self, "ctx", None)  # not yet set on the first call, in __init__
        if ctx is None:
            return
        state = ctx.services.state
        if state.node_name:
            self.set_header("X-Strongroom-Node", state.node_name)
        if state.primary_address and not state.writable:
            self.set_header("X-Strongroom-Primary", state.primary_address)
        if not state.writable:
            self.set_header("Retry-After", "1")  # a failover or switchover takes seconds

    # the client -------------------------------------------------------------------------

    @functools.cached_property
    def source_ip(self) -> str:
        """The client's address. X-Forwarded-For counts only from a trusted proxy, and then
        only its right-most untrusted hop."""
        remote = self.request.remote_ip or ""
        forwarder = self.forwarder
        forwarded = forwarder.client_of(self.request) if forwarder is not None else None
        if forwarded is not None:  # forwarded by another data member (web/forwarding.py)
            return forwarded
        if not self.ctx.trusted_proxies or not self._trusted(remote):
            return remote
        hops = [h.strip() for h in self.request.headers.get("X-Forwarded-For", "").split(",")]
        for hop in reversed([h for h in hops if h]):
            if not self._trusted(hop):
                try:
                    return str(_plain(ipaddress.ip_address(hop)))
                except ValueError:
                    return remote
        return remote

    def _trusted(self, addr: str) -> bool:
        try:
            ip = _plain(ipaddress.ip_address(addr))
        except ValueError:
            return False
        return any(ip in net for net in self.ctx.trusted_proxies)

    # off the loop -----------------------------------------------------------------------

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        call = functools.partial(fn, *args, **kwargs)
        return await IOLoop.current().run_in_executor(self.ctx.executor, call)

    async def run_read(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn``, a few point reads by key and no write, for a hot path. On SQLite it
        runs right here on the event loop: a WAL reader reads a local file in microseconds
        and never waits for the writer, and handing it to a worker thread costs more than
        the read (measured: bench/retrieval.py, docs/benchmarks.md). On PostgreSQL, a
        network round trip, it goes off the loop like any other blocking work."""
        if self.services.store.dialect == "sqlite":
            return fn(*args, **kwargs)
        return await self.run(fn, *args, **kwargs)

    # sessions ---------------------------------------------------------------------------

    # Handlers that still answer on a standby or a fenced primary (health, cluster status).
    serves_on_standby = False

    def refuse_unless_writable(self) -> None:
        """A standby or a fenced primary answers 503 naming the primary (cluster/ha.py)."""
        state = self.services.state
        self.cluster_headers()
        if state.writable or self.serves_on_standby:
            return
        where = f"; the primary is {state.primary_address}" if state.primary_address else ""
        raise tornado.web.HTTPError(
            503, reason=f"This node ({state.role}) does not accept requests now{where}."
        )

    @property
    def forwarder(self) -> Forwarder | None:
        """A cluster member's forwarder (web/forwarding.py); None on a single node."""
        handle = self.application.settings.get("strongroom_cluster")
        forwarder = getattr(handle, "forwarder", None)
        return forwarder if isinstance(forwarder, Forwarder) else None

    async def serve_here(self) -> bool:
        """Whether this node handles the request itself: True, or a 503 as from
        :meth:`refuse_unless_writable`; during a planned switchover the request is held
        first, and False means it was forwarded to the new primary and answered."""
        forwarder = self.forwarder
        if forwarder is None or self.serves_on_standby:
            self.refuse_unless_writable()
            return True
        return await forwarder.route(self)

    def on_finish(self) -> None:
        counted, self.counted_in = self.counted_in, None
        if counted is not None:
            counted.finished()

    async def prepare(self) -> None:
        if not await self.serve_here():
            return
        token = self.get_cookie(SESSION_COOKIE)
        self.current_user_obj: SessionUser | None = None
        if token:
            self.current_user_obj = await self.run(self.services.auth.session_user, token)
            if self.current_user_obj is None:
                self.clear_cookie(SESSION_COOKIE, path="/")
            else:  # the licence banner (for those who manage the licence)
                self.licence_warnings = await self.run(
                    self.services.licence.warnings_for, self.current_user_obj.role
                )

    def get_current_user(self) -> SessionUser | None:
        return getattr(self, "current_user_obj", None)

    @property
    def user(self) -> SessionUser:
        user = self.get_current_user()
        assert user is not None
        return user

    def start_session(self, token: str) -> None:
        self.set_cookie(
            SESSION_COOKIE, token, path="/", secure=True, httponly=True, samesite="Strict"
        )

    def get_login_url(self) -> str:
        return "/login"

    # errors -----------------------------------------------------------------------------

    def allowed_methods(self) -> list[str]:
        """The HTTP methods this handler answers (those it defines itself)."""
        base = tornado.web.RequestHandler
        return [
            m
            for m in self.SUPPORTED_METHODS
            if getattr(type(self), m.lower(), None) is not getattr(base, m.lower(), None)
        ]

    def name_allowed_methods(self, status_code: int) -> None:
        """A 405 says which methods the path takes (``Allow``, as HTTP requires)."""
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))

    def audit_refusal(self, status_code: int, message: str) -> None:
        """A logged-in user's (or API user's) request refused for want of permission (403)
        gets a user-audit row, "refused", written in the background (``ctx.background``):
        the answer does not wait for it. Refusals of requests from nobody in particular
        (a form posted without its XSRF token, logged out) are in the access log only:
        anyone could write rows by the thousand with them."""
        if status_code != 403:
            return
        user = self.get_current_user() or getattr(self, "api_user", None)
        ctx = getattr(self, "ctx", None)
        if ctx is None or user is None:
            return
        ctx.background.submit(
            "a refused request could not be audited",
            ctx.services.auth.record_refusal,
            user.username,
            self.source_ip,
            f"{self.request.method} {self.request.path}"[:512],
            message,
        )

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.name_allowed_methods(status_code)
        message = self._reason or "Something went wrong."
        exc_info = kwargs.get("exc_info")
        if exc_info and isinstance(exc_info[1], StrongroomError):
            message = str(exc_info[1])
        elif status_code >= 500:
            message = "The server could not complete the request. The error has been logged."
        self.audit_refusal(status_code, message)
        self.render("error.html", status=status_code, message=message)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """An unexpected error is logged with its traceback, the request named by its method
        and path only: tornado's own line shows the whole URI, whose query string may carry
        an AUTHTOKEN or INPUT_DATA."""
        if isinstance(value, StrongroomError | tornado.web.HTTPError):
            return
        request = self.request
        log.error(
            "unexpected error answering a request",
            extra={"method": request.method, "path": request.path, "ip": request.remote_ip},
            exc_info=(typ, value, tb),
        )

    def fail(self, exc: StrongroomError) -> None:
        """Answer a service error with its status and message."""
        self.set_status(status_for(exc))
        self.render("error.html", status=status_for(exc), message=str(exc))

    # flash messages: one short sentence carried over a redirect ------------------------

    def flash(self, message: str, kind: str = "notice") -> None:
        """Show ``message`` on the next page this browser renders (after a redirect).
        ``kind`` is ``notice`` or ``error``. Never put a secret in a flash message."""
        value = json.dumps({"m": message[:400], "k": kind if kind == "error" else "notice"})
        self.set_signed_cookie(
            FLASH_COOKIE,
            value,
            expires_days=None,
            path="/",
            secure=True,
            httponly=True,
            samesite="Strict",
        )

    def _take_flash(self) -> dict[str, str] | None:
        if getattr(self, "_flash_taken", False):
            return None
        self._flash_taken = True
        raw = self.get_signed_cookie(FLASH_COOKIE, max_age_days=1)
        if raw is None:
            return None
        self.clear_cookie(FLASH_COOKIE, path="/")
        try:
            data = json.loads(raw)
            return {"message": str(data["m"]), "kind": str(data["k"])}
        except (ValueError, KeyError, TypeError):
            return None

    def can(self, action: Action) -> bool:
        """Whether the logged-in user's role allows ``action`` (for navigation links)."""
        user = self.get_current_user()
        return user is not None and not user.must_change_password and allowed(user.role, action)

    def access_label(self, access: Access, owner_id: int) -> str:
        """The "Your access" text: Owner only for the object's owner (``owner_id``);
        someone else who holds owner-level access holds it through the Super
        Administrator scope, and is told so rather than shown as its owner."""
        user = self.get_current_user()
        if access == Access.OWNER and user is not None and user.id != owner_id:
            return "Super Administrator"
        return access.label

    def get_template_namespace(self) -> dict[str, Any]:
        ns = super().get_template_namespace()
        ns.update(
            user=self.get_current_user(),
            version=self.ctx.version,
            node_state=self.services.state,
            path=self.request.path,
            licence_warnings=getattr(self, "licence_warnings", ()),
            can=self.can,
            access_label=self.access_label,
            Action=Action,
            flash=self._take_flash(),
            # the maxlength of free text and custom attribute inputs: the services' limits
            MAX_TEXT=MAX_TEXT,
            MAX_ATTRIBUTE_VALUE=MAX_ATTRIBUTE_VALUE,
        )
        return ns


def authenticated_page(
    method: Callable[..., Awaitable[None]],
) -> Callable[..., Awaitable[None]]:
    """A page for logged-in users who have set their own password."""

    @functools.wraps(method)
    async def wrapper(self: BaseHandler, *args: Any, **kwargs: Any) -> None:
        user = self.get_current_user()
        if user is None:
            if self.request.method in ("GET", "HEAD"):  # back here once logged in
                self.redirect("/login?" + urllib.parse.urlencode({"next": self.request.uri}))
                return
            raise tornado.web.HTTPError(401)
        if user.must_change_password:
            self.redirect("/change-password")
            return
        await method(self, *args, **kwargs)

    return wrapper


def _plain(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Any:
    """An IPv4 address written as IPv6 (``::ffff:10.0.0.2``, as dual-stack sockets and
    some proxies give it) as the IPv4 address it is; an IPv6 address without its zone
    (``fe80::1%eth0``: the zone names an interface of the sender, and may be long)."""
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        return mapped
    if getattr(ip, "scope_id", None) is not None:
        return ipaddress.IPv6Address(str(ip).partition("%")[0])
    return ip


_ACCESS = logging.getLogger("strongroom.access")


class AccessRecord(logging.LogRecord):
    """An access line: its extra fields, in this order (``json_fields``, which the node's
    JSON formatter uses to write the line without looking for them)."""

    json_fields = ("method", "path", "status", "ms", "ip")


def access_log(handler: tornado.web.RequestHandler) -> None:
    """Tornado's access log, without query strings (they may carry an AUTHTOKEN). One line
    per request, so the record is made here directly (the logger's own path looks up the
    calling source line, which an access line does not need)."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING
    if status >= 500:
        level = logging.ERROR
    if not _ACCESS.isEnabledFor(level):
        return
    request = handler.request
    record = AccessRecord(_ACCESS.name, level, __file__, 0, "request", None, None)
    record.method = request.method
    record.path = request.path
    record.status = status
    record.ms = round(1000.0 * request.request_time(), 1)
    record.ip = request.remote_ip
    _ACCESS.handle(record)


def needs(
    action: Action,
) -> Callable[[Callable[..., Awaitable[None]]], Callable[..., Awaitable[None]]]:
    """A page method for logged-in users whose role allows ``action``. The action is kept on
    the method (``required_action``) so the role-by-route test can read it."""

    def decorate(method: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        inner = authenticated_page(method)

        @functools.wraps(method)
        async def wrapper(self: BaseHandler, *args: Any, **kwargs: Any) -> None:
            user = self.get_current_user()
            if user is not None and not user.must_change_password:
                if not allowed(user.role, action):
                    raise tornado.web.HTTPError(403, reason="Your role does not allow this.")
            await inner(self, *args, **kwargs)

        wrapper.required_action = action  # type: ignore[attr-defined]
        return wrapper

    return decorate
