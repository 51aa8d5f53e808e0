"""The JSON base of the REST API under ``/restapi/json/v1``, compatible with Password
Manager Pro (see shared/PMP-API.md).

Every reply, success or failure, is PMP's envelope::

    {"operation": {"name": "<OP NAME>", "result": {"status": "Success" | "Failed",
     "message": "..."}, "Details": ..., "totalRows": N}}

with a proper HTTP status (PMP itself answers failures with 200; clients that check either
keep working). Requests authenticate with an ``AUTHTOKEN`` header or query parameter and
send their input as ``INPUT_DATA`` (JSON ``{"operation": {"Details": {...}}}``): in the query
string for GET and DELETE, in a form body (any content type, ``text/json`` included) for
POST and PUT. There are no cookies, so there is no XSRF check.

Each handler method is wrapped by :func:`operation`, which names the operation, the
:class:`Action` it needs (kept as ``required_action`` for the role-by-route test) and the
:class:`Spec` of its input (also used by the OpenAPI document).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import tornado.web

from node.auth import SessionUser
from node.errors import (
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    StrongroomError,
    ValidationError,
)
from node.inputs import is_decimal, unique_keys
from node.licence import Feature
from node.permissions import Action, allowed
from web.api.schema import NO_INPUT, Spec
from web.base import BaseHandler, status_for

log = logging.getLogger("strongroom.api")

API_PREFIX = "/restapi/json/v1"
MAX_INPUT_BYTES = 256 * 1024
RESERVED_QUERY = frozenset({"AUTHTOKEN", "INPUT_DATA"})
AUTH_OPERATION = "Authentication"
BAD_TOKEN = "Invalid API key received: the key is not associated with any user."
NO_TOKEN = "No API key received: send the AUTHTOKEN header (or AUTHTOKEN query parameter)."
_ABSENT: Any = object()
LICENCE_RECHECK = 2.0  # seconds a passed REST API licence check is trusted


@dataclass
class _LicenceCheck:
    """The REST API licence check of one node's services: when it last passed, and the
    check running now, which every request arriving meanwhile waits for (else each of
    them would run its own, all in worker threads, each time the last pass expires)."""

    passed_at: float = -math.inf
    running: asyncio.Future[None] | None = None


_licence_checks: dict[int, _LicenceCheck] = {}  # id(services) -> its check

ApiMethod = Callable[..., Awaitable[None]]


class _EveryMethod(tuple[str, ...]):
    """Tornado's known methods, yet claiming every method: tornado answers a method it
    does not know with 405 before ``prepare``, without authentication; this way such a
    request reaches :meth:`ApiHandler.prepare` like any wrong method."""

    def __contains__(self, method: object) -> bool:
        return True


class ApiHandler(BaseHandler):
    """Base of every REST API handler."""

    SUPPORTED_METHODS = _EveryMethod(tornado.web.RequestHandler.SUPPORTED_METHODS)
    operation_name = "REST API"
    path_template = ""
    api_user: SessionUser
    path_not_utf8 = False

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        """A path segment as text. Tornado answers one that is not UTF-8 with a bare "Bad
        Request" before authentication; here it is noted (and kept, its bad bytes
        replaced, for nothing to use) and the operation refuses it with a clear message
        once the caller is authenticated, like any other bad input."""
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            self.path_not_utf8 = True
            return value.decode("utf-8", errors="replace")

    # no browser session, no XSRF: the API authenticates each request by its token -------

    async def prepare(self) -> None:
        if not await self.serve_here():  # 503 on a standby; held/forwarded in a switchover
            return
        self.current_user_obj = None
        name = (self.request.method or "").lower()
        method = getattr(self, name, None)
        self.operation_name = getattr(method, "operation_name", self.operation_name)
        if len(self.request.body) > MAX_INPUT_BYTES:
            self.answer_failure(400, f"the request is too large (at most {MAX_INPUT_BYTES} bytes)")
        elif getattr(type(self), name, None) is getattr(tornado.web.RequestHandler, name, None):
            await self._refuse_method()  # not defined here (allowed_methods(), but cheaper)

    async def _refuse_method(self) -> None:
        """A method this path does not take: 405 and ``Allow`` for a valid token only. Any
        other request gets the 401 of every tokenless one, so that nobody learns, without
        a token, which paths exist (ApiNotFound answers them after authentication too)."""
        try:
            self.api_user = await self.authenticate()
        except _AuthFailure as exc:
            self.operation_name = AUTH_OPERATION
            self.answer_failure(401, str(exc))
            return
        except StrongroomError as exc:  # the REST API is not licensed
            self.answer_failure(status_for(exc), str(exc))
            return
        raise tornado.web.HTTPError(405)

    def check_xsrf_cookie(self) -> None:
        return None

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")

    # replies ----------------------------------------------------------------------------

    def answer(
        self,
        message: str,
        details: Any = _ABSENT,
        total_rows: int | None = None,
        status: int = 200,
        failed: bool = False,
    ) -> None:
        op: dict[str, Any] = {
            "name": self.operation_name,
            "result": {"status": "Failed" if failed else "Success", "message": message},
        }
        if details is not _ABSENT:
            op["Details"] = details
        if total_rows is not None:
            op["totalRows"] = total_rows
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(encode_json({"operation": op}))

    def answer_failure(self, status: int, message: str) -> None:
        self.audit_refusal(status, message)
        if status == 401:
            self.set_header("WWW-Authenticate", 'AUTHTOKEN realm="Strongroom"')
        self.answer(message, status=status, failed=True)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.name_allowed_methods(status_code)
        exc_info = kwargs.get("exc_info")
        exc = exc_info[1] if exc_info else None
        if isinstance(exc, StrongroomError):
            message = str(exc)
        elif status_code == 404:
            message = "No such API operation."
        elif status_code == 405:
            message = f"The method {self.request.method} is not allowed on this path."
        elif status_code < 500:
            message = self._reason or "The request could not be handled."
        else:
            message = "The server could not complete the request. The error has been logged."
        self.clear_header("WWW-Authenticate")
        self.audit_refusal(status_code, message)
        self.answer(message, status=status_code, failed=True)

    # authentication and input -----------------------------------------------------------

    def presented_token(self) -> str | None:
        token = self.request.headers.get("AUTHTOKEN")
        if token is None:
            values = self.request.query_arguments.get("AUTHTOKEN")
            if values:
                token = values[-1].decode("utf-8", errors="replace")
        return token.strip() if token is not None and token.strip() else None

    async def authenticate(self) -> SessionUser:
        token = self.presented_token()
        if token is None:
            raise _AuthFailure(NO_TOKEN)
        # A token is read from the database at least once a second and after each write
        # of this node (node/api_tokens.py, KNOWN_FOR); the REST API's licence check, once
        # passed, is trusted for LICENCE_RECHECK seconds (it may write, so it always runs
        # off the event loop).
        tokens = self.services.api_tokens
        user = tokens.known(token) or await self.run_read(tokens.authenticate, token)
        if user is None:
            log.warning(
                "API request with an unknown or revoked token",
                extra={"prefix": token[:8], "ip": self.source_ip},
            )
            left_out = self.ctx.bad_tokens.admit(self.source_ip)
            if left_out is not None:
                self.ctx.anonymous.submit(
                    "a failed REST API login could not be audited",
                    self.services.auth.record_failed_api_login,
                    token[:8],
                    self.source_ip,
                    *left_out,
                )
            raise _AuthFailure(BAD_TOKEN)
        check = _licence_checks.setdefault(id(self.services), _LicenceCheck())
        if time.monotonic() - check.passed_at > LICENCE_RECHECK:
            if check.running is None or check.running.done():
                check.running = asyncio.ensure_future(self._check_licence(check))
            await asyncio.shield(check.running)  # its LicenceError, if refused, for all
        return user

    async def _check_licence(self, check: _LicenceCheck) -> None:
        await self.run(self.services.licence.require, Feature.REST_API)
        check.passed_at = time.monotonic()

    def read_input(self, spec: Spec) -> dict[str, Any]:
        """The request's input: ``INPUT_DATA`` Details and plain query parameters, checked
        against ``spec``. Raises :class:`ValidationError` (400) for anything else."""
        query = {k: v for k, v in self.request.query_arguments.items()}
        body_input = self._body_input_data()
        raw_inputs = query.pop("INPUT_DATA", [])
        query.pop("AUTHTOKEN", None)
        if body_input is not None:
            raw_inputs = [*raw_inputs, body_input]
        if len(raw_inputs) > 1:
            raise ValidationError("INPUT_DATA was given more than once")
        details: dict[str, Any] = {}
        if raw_inputs:
            details = _details_of(_decode(raw_inputs[0]))
        extra: dict[str, Any] = {}
        for key, values in query.items():
            if key in details:
                raise ValidationError(f"{key[:40]} was given both in INPUT_DATA and the query")
            if len(values) != 1:
                raise ValidationError(f"the query parameter {key[:40]} was given more than once")
            extra[key] = _decode(values[0])
        merged = {**details, **extra}
        return spec.parse(merged)

    def _body_input_data(self) -> bytes | None:
        if not self.request.body.strip():  # any method: a DELETE's body is read (and checked) too
            return None
        ctype = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype == "multipart/form-data":
            values = self.request.body_arguments.get("INPUT_DATA", [])
            extra = [k for k in self.request.body_arguments if k != "INPUT_DATA"]
        else:
            body = self.request.body.strip()
            if body.startswith(b"{"):
                return body  # the JSON itself, as a few clients send it
            if b"{" in body or b'"' in body:
                # JSON's braces and quotes are always %-encoded in a form: this body was
                # sent as typed (curl --data 'INPUT_DATA={...}'). Read as a form, an '&' in
                # a value would cut it: what follows INPUT_DATA= is the JSON. A '+' or a
                # %-escape in it could mean itself or (as PMP reads forms) a space or the
                # escaped character: rather than guess a password, such a body is refused.
                if not body.startswith(b"INPUT_DATA="):
                    raise ValidationError(
                        "the request body must be a form with an INPUT_DATA field"
                    )
                raw = body[len(b"INPUT_DATA=") :]
                if b"+" in raw or _PERCENT_ESCAPE.search(raw):
                    raise ValidationError(
                        "INPUT_DATA was sent without URL-encoding and holds a '+' or a "
                        "%-escape, which could be read two ways: URL-encode it (curl "
                        "--data-urlencode 'INPUT_DATA=...')"
                    )
                return raw
            try:
                pairs = urllib.parse.parse_qs(
                    body.decode("utf-8"),
                    keep_blank_values=True,
                    strict_parsing=True,
                    errors="strict",  # %-encoded bytes that are not UTF-8: refused
                )
            except (UnicodeDecodeError, ValueError):
                raise ValidationError(
                    "the request body must be a form with an INPUT_DATA field"
                ) from None
            values = [v.encode() for v in pairs.get("INPUT_DATA", [])]
            extra = [k for k in pairs if k != "INPUT_DATA"]
        if extra:
            # INPUT_DATA first: a malformed one is named as such before any other field
            # (a piece of a value split at an '&' would be that field's name).
            for value in values:
                _details_of(_decode(value))
            raise ValidationError(
                f"unknown form field {extra[0][:40]!r} (only INPUT_DATA is accepted)"
            )
        if len(values) > 1:
            raise ValidationError("INPUT_DATA was given more than once")
        return values[0] if values else None

    # path ids ---------------------------------------------------------------------------

    @staticmethod
    def path_id(text: str, what: str) -> int:
        """A numeric id from the path. An id that cannot exist gets the same 404 as one
        that does not exist or is not shared."""
        if not is_decimal(text) or len(text) > 18 or int(text) < 1:
            shown = text if len(text) <= 20 else f"{text[:20]}..."
            raise NotFoundError(f"no {what} with id {shown}")
        return int(text)


class _AuthFailure(AuthenticationError):
    """The token is missing or not valid (answered as operation ``Authentication``)."""


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError("the input is not valid UTF-8") from None


def _reject_constant(name: str) -> Any:
    raise ValidationError(f"INPUT_DATA is not valid JSON ({name} is not allowed)")


def _twice(key: str) -> ValidationError:
    return ValidationError(f"INPUT_DATA is not valid: the key {key[:40]!r} is given twice")


def _details_of(text: str) -> dict[str, Any]:
    try:
        data = json.loads(
            text,
            parse_constant=_reject_constant,
            object_pairs_hook=functools.partial(unique_keys, refuse=_twice),
        )
    except (ValueError, RecursionError):
        raise ValidationError(
            'INPUT_DATA is not valid JSON; send {"operation": {"Details": {...}}}'
        ) from None
    if not isinstance(data, dict) or set(data) != {"operation"}:
        raise ValidationError('INPUT_DATA must be a JSON object {"operation": {"Details": {...}}}')
    op = data["operation"]
    if not isinstance(op, dict) or not set(op) <= {"Details"}:
        raise ValidationError('INPUT_DATA\'s "operation" may only hold "Details"')
    details = op.get("Details", {})
    if not isinstance(details, dict):
        raise ValidationError('INPUT_DATA\'s "Details" must be a JSON object')
    return details


_PERCENT_ESCAPE = re.compile(rb"%[0-9A-Fa-f]{2}")
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode_json(value: Any) -> str:
    """JSON with <, > and & escaped, so a stored script is inert even if a client shows
    the reply as HTML."""
    text = _ENCODE(value)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def operation(
    name: str,
    action: Action,
    spec: Spec = NO_INPUT,
    *,
    reply: dict[str, Any] | None = None,
    list_reply: bool = False,
    failures: dict[int, str] | None = None,
    failures_with_details: tuple[int, ...] = (),
) -> Callable[[ApiMethod], ApiMethod]:
    """Wrap an API handler method: authenticate the token, check that the caller's role
    allows ``action``, parse the input against ``spec``, then call the method with the path
    arguments and the parsed input. Every error becomes the PMP envelope with its status;
    unexpected errors are logged and answered without their text. ``reply`` (the JSON
    schema of ``Details``), ``list_reply`` (replies carry ``totalRows``) and ``failures``
    (statuses this operation answers beyond those every operation may, with their
    meaning) and ``failures_with_details`` (failure statuses whose replies carry ``Details``
    as ``reply`` describes them) only feed the OpenAPI document."""

    def decorate(method: ApiMethod) -> ApiMethod:
        @functools.wraps(method)
        async def wrapper(self: ApiHandler, *args: str) -> None:
            self.operation_name = name
            if self._finished:  # refused in prepare (too large)
                return
            try:
                try:
                    self.api_user = await self.authenticate()
                except _AuthFailure as exc:
                    self.operation_name = AUTH_OPERATION
                    raise exc
                if not allowed(self.api_user.role, action):
                    raise PermissionDeniedError(
                        f"your role ({self.api_user.role.label}) does not allow: {action.value}"
                    )
                if self.path_not_utf8:
                    raise ValidationError("the path is not valid UTF-8")
                data = self.read_input(spec)
                await method(self, *args, data)
            except StrongroomError as exc:
                if not self._finished:
                    self.answer_failure(status_for(exc), str(exc))

        wrapper.required_action = action  # type: ignore[attr-defined]
        wrapper.operation_name = name  # type: ignore[attr-defined]
        wrapper.input_spec = spec  # type: ignore[attr-defined]
        wrapper.reply_schema = reply  # type: ignore[attr-defined]
        wrapper.list_reply = list_reply  # type: ignore[attr-defined]
        wrapper.failures = failures or {}  # type: ignore[attr-defined]
        wrapper.failures_with_details = failures_with_details  # type: ignore[attr-defined]
        return wrapper

    return decorate


def api_routes(
    handlers: list[type[ApiHandler]],
) -> list[tuple[str, type[tornado.web.RequestHandler]]]:
    """Routes for handlers that declare ``path_template`` (``/resources/{rid}/accounts``,
    relative to the API prefix). A ``{name}`` matches one path segment; the handler checks
    it (so a malformed id gets the same 404 as an unknown one)."""
    out: list[tuple[str, type[tornado.web.RequestHandler]]] = []
    for cls in handlers:
        parts = re.split(r"\{[a-zA-Z]+\}", cls.path_template)
        pattern = "([^/]+)".join(re.escape(p) for p in parts)
        out.append((API_PREFIX + pattern + "/?", cls))
    return out


class ApiNotFound(ApiHandler):
    """Any other path under /restapi: the envelope with 404 (after authentication, so an
    anonymous client learns nothing about which paths exist; a wrong method on a path that
    does exist is likewise answered 405 only after authentication, in ``prepare``)."""

    @operation("REST API", Action.USE_VAULT)
    async def get(self, *_args: str) -> None:
        raise tornado.web.HTTPError(404)

    post = put = delete = get


ROUTES = [(r"/restapi/.*", ApiNotFound)]
