"""The Tornado application and its HTTPS server."""

from __future__ import annotations

import secrets
import ssl
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import tornado.web

from node.services import Services
from node.tls import TlsFiles
from web import (
    admin_pages,
    apiuser_pages,
    audit_pages,
    backup_pages,
    branding_pages,
    cluster_pages,
    group_pages,
    licence_pages,
    people_pages,
    policy_pages,
    report_pages,
    session_pages,
    share_pages,
    vault_pages,
)
from web.api import base as api_base
from web.api import openapi as api_openapi
from web.api import resources as api_resources
from web.api import sharing as api_sharing
from web.base import BaseHandler, WebContext, access_log, security_headers

HERE = Path(__file__).parent


class NotFoundPage(BaseHandler):
    async def prepare(self) -> None:
        await super().prepare()
        raise tornado.web.HTTPError(404, reason="No such page.")


def route_table() -> list[tuple[str, type[tornado.web.RequestHandler]]]:
    """Every route of the application, in one list (the authorization matrix test walks it)."""
    return [
        # REST API first: tornado tries the patterns in order, and API clients make most of
        # the requests. Its routes, then its catch-all (JSON 404) last among /restapi paths;
        # no console page lives under /restapi.
        *api_resources.ROUTES,
        *api_sharing.ROUTES,
        *api_openapi.ROUTES,
        *api_base.ROUTES,
        *session_pages.ROUTES,
        *vault_pages.ROUTES,
        *share_pages.ROUTES,
        *group_pages.ROUTES,
        *people_pages.ROUTES,
        *policy_pages.ROUTES,
        *admin_pages.ROUTES,
        *licence_pages.ROUTES,
        *apiuser_pages.ROUTES,
        *audit_pages.ROUTES,
        *report_pages.ROUTES,
        *branding_pages.ROUTES,
        *backup_pages.ROUTES,
        *cluster_pages.ROUTES,
    ]


def make_app(
    services: Services, executor: ThreadPoolExecutor | None = None, **overrides: Any
) -> tornado.web.Application:
    ctx = WebContext(
        services, executor or ThreadPoolExecutor(max_workers=8, thread_name_prefix="sr-web")
    )
    handlers: list[Any] = [(pattern, cls, {"ctx": ctx}) for pattern, cls in route_table()]
    settings: dict[str, Any] = {
        "template_path": str(HERE / "templates"),
        "static_path": str(HERE / "static"),
        "static_handler_class": StaticFiles,
        "xsrf_cookies": True,
        "xsrf_cookie_kwargs": {"secure": True, "httponly": True, "samesite": "Strict"},
        "cookie_secret": secrets.token_hex(32),
        "login_url": "/login",
        "log_function": access_log,
        "default_handler_class": NotFoundPage,
        "default_handler_args": {"ctx": ctx},
        "compress_response": False,
        "autoescape": "xhtml_escape",
    }
    settings.update(overrides)
    app = tornado.web.Application(handlers, **settings)
    app.settings["strongroom_ctx"] = ctx
    return app


# The largest request body the node reads (tornado's default is 100 MB, buffered in
# memory before any check, for anyone, logged in or not). The largest legitimate ones are
# far smaller: a logo (200 KB), a licence file, a REST API call (256 KB).
MAX_BODY_BYTES = 2 * 1024 * 1024


class StaticFiles(tornado.web.StaticFileHandler):
    """The console's own scripts, styles and images, with the headers every page has (no
    ETag trouble here: nothing static is secret)."""

    def set_default_headers(self) -> None:
        security_headers(self)


def make_ssl_context(files: TlsFiles) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(files.cert), str(files.key))
    return ctx
