"""The cluster over HTTPS: the CA certificate and join handshake (for joining nodes), the
Raft-join request, and the administrators' cluster status page."""

from __future__ import annotations

import json
from typing import Any

import tornado.web

from cluster.join import JoinService
from cluster.runtime import HaRuntime
from cluster.state import DATA
from node.errors import StrongroomError, ValidationError
from node.permissions import Action
from web.base import BaseHandler, needs, status_for
from web.forwarding import Forwarder

CLUSTER_SETTING = "strongroom_cluster"
MAX_BODY = 16 * 1024


class ClusterHandle:
    """What the composition root hands the web layer in HA mode."""

    def __init__(self, runtime: HaRuntime, join: JoinService, hold_timeout: float = 5.0) -> None:
        self.runtime = runtime
        self.join = join
        self.forwarder = Forwarder(runtime, hold_timeout)


def cluster_of(handler: tornado.web.RequestHandler) -> ClusterHandle | None:
    value = handler.application.settings.get(CLUSTER_SETTING)
    return value if isinstance(value, ClusterHandle) else None


class _ClusterApi(BaseHandler):
    """JSON, no browser session and no XSRF: these requests authenticate by token/proof."""

    serves_on_standby = True

    async def prepare(self) -> None:
        self.current_user_obj = None
        if cluster_of(self) is None:
            raise tornado.web.HTTPError(404, reason="This node is not in a cluster.")

    def check_xsrf_cookie(self) -> None:
        return None

    @property
    def handle(self) -> ClusterHandle:
        handle = cluster_of(self)
        assert handle is not None
        return handle

    def body(self) -> dict[str, Any]:
        if len(self.request.body) > MAX_BODY:
            raise ValidationError("the request is too large")
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError:
            raise ValidationError("the request body is not JSON") from None
        if not isinstance(data, dict):
            raise ValidationError("the request body must be a JSON object")
        return data

    def reply(self, status: int, body: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        message = self._reason or "error"
        if exc_info and isinstance(exc_info[1], StrongroomError):
            message = str(exc_info[1])
        elif status_code >= 500:
            message = "The server could not complete the request. The error has been logged."
        self.reply(status_code, {"error": message})

    async def call(self, fn: Any, *args: Any) -> Any:
        try:
            return await self.run(fn, *args)
        except StrongroomError as exc:
            self.reply(status_for(exc), {"error": str(exc)})
            return None


class CaHandler(_ClusterApi):
    async def get(self) -> None:
        pem = await self.run(self.handle.join.ca_pem)
        self.set_header("Content-Type", "application/x-pem-file")
        self.finish(pem)


class JoinHandler(_ClusterApi):
    async def post(self) -> None:
        try:
            d = self.body()
        except ValidationError as exc:
            self.reply(400, {"error": str(exc)})
            return
        kind = str(d.get("kind", DATA))
        if kind == DATA:
            try:
                await self.run(self.services.licence.check_join_cluster)
            except StrongroomError as exc:
                self.reply(status_for(exc), {"error": str(exc)})
                return
        result = await self.call(
            self.handle.join.join,
            str(d.get("token", "")),
            str(d.get("name", "")),
            str(d.get("advertise", "")),
            kind,
        )
        if result is not None:
            self.reply(200, result)


class RaftJoinHandler(_ClusterApi):
    async def post(self) -> None:
        try:
            d = self.body()
        except ValidationError as exc:
            self.reply(400, {"error": str(exc)})
            return
        done = await self.call(
            _add_to_raft, self.handle.join, str(d.get("name", "")), str(d.get("proof", ""))
        )
        if done is not None:
            self.reply(200, {"ok": True})


def _add_to_raft(join: JoinService, name: str, proof: str) -> bool:
    join.add_to_raft(name, proof)
    return True


class ClusterPage(BaseHandler):
    """Admin page: members, roles, Raft leader and term, primary and epoch, lag, VIP."""

    serves_on_standby = True

    @needs(Action.VIEW_CLUSTER)
    async def get(self) -> None:
        handle = cluster_of(self)
        status = await self.run(handle.runtime.status) if handle is not None else None
        self.render("cluster_status.html", status=status)


ROUTES = [
    (r"/cluster/ca", CaHandler),
    (r"/cluster/join", JoinHandler),
    (r"/cluster/raft-join", RaftJoinHandler),
    (r"/admin/cluster", ClusterPage),
]
