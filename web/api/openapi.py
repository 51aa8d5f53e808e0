"""The OpenAPI 3 document of the REST API, built from the routes themselves: each API
handler's path template, and for each method its operation name, required action, input
:class:`Spec` and reply schema (all declared by :func:`web.api.base.operation`). Served,
without authentication, at ``/restapi/openapi.json``."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

import tornado.web

from node import __version__
from web.api.base import API_PREFIX, ApiHandler, encode_json
from web.api.schema import Spec
from web.base import BaseHandler

METHODS = ("get", "post", "put", "delete")
_PARAM = re.compile(r"\{([a-zA-Z]+)\}")

ENVELOPE_DESCRIPTION = (
    "Password Manager Pro's envelope. `result.status` is `Success` or `Failed`; failures "
    "also carry a 4xx or 5xx status. `Details` is absent on failures (except `ADD "
    "ACCOUNTS`, which lists each account's `STATUS` either way) and on empty lists; "
    "`totalRows` is present on list operations. Ids and flags are strings."
)
# What any operation may answer besides 200 (an operation adds its own: ``failures`` of
# web.api.base.operation).
COMMON_FAILURES = {
    400: "Malformed INPUT_DATA, an unknown key, or a value that breaks a rule",
    401: "Missing, unknown or revoked AUTHTOKEN (operation `Authentication`)",
    403: "The API user's role does not allow this, or the share does not",
    404: "No such object, or it is not shared with the API user",
    500: "An unexpected error; it is logged, nothing of it is shown",
    503: (
        "This node does not take requests now (a standby, or a primary cut off from its "
        "cluster); the `X-Strongroom-Primary` header names the primary when it is known"
    ),
}


METHOD_NOT_ALLOWED = (
    "The path exists but does not take this method (any path, any method the document "
    "does not list for it); `Allow` names those it takes"
)


def _envelope(details: dict[str, Any] | None, list_reply: bool) -> dict[str, Any]:
    op: dict[str, Any] = {
        "type": "object",
        "required": ["name", "result"],
        "properties": {
            "name": {"type": "string"},
            "result": {"$ref": "#/components/schemas/Result"},
        },
    }
    if details is not None:
        op["properties"]["Details"] = details
    if list_reply:
        op["properties"]["totalRows"] = {"type": "integer", "minimum": 0}
    return {
        "type": "object",
        "description": ENVELOPE_DESCRIPTION,
        "required": ["operation"],
        "properties": {"operation": op},
    }


def _input_data(spec: Spec) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "operation": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"Details": spec.json_schema()},
            }
        },
    }


# Headers that come with some failures, as the server sends them.
FAILURE_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": '`AUTHTOKEN realm="Strongroom"`',
            "schema": {"type": "string"},
        }
    },
    503: {
        "X-Strongroom-Primary": {
            "description": "The primary's address, when it is known",
            "schema": {"type": "string"},
        }
    },
}


def _error(status: int, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """A failure reply: PMP's envelope without ``Details``, unless ``schema`` says what it
    carries."""
    out: dict[str, Any] = {
        "description": description,
        "content": {
            "application/json": {
                "schema": schema or {"$ref": "#/components/schemas/Failure"},
            }
        },
    }
    if status in FAILURE_HEADERS:
        out["headers"] = FAILURE_HEADERS[status]
    return out


def _query_parameters(spec: Spec) -> list[dict[str, Any]]:
    """A GET operation's input as PMP's own clients send it, one plain query parameter per
    key (``?RESOURCENAME=R&ACCOUNTNAME=A``), then INPUT_DATA, which the server takes
    instead (a key may not be in both). OpenAPI 3.0 cannot say "this or that": a key
    marked required may come in INPUT_DATA instead, as its description says."""
    params: list[dict[str, Any]] = []
    for f in spec.fields:
        param: dict[str, Any] = {
            "name": f.name,
            "in": "query",
            "required": f.required,
            "schema": f.json_schema(),
        }
        if f.required:
            param["description"] = "Required: here, or in INPUT_DATA instead."
        params.append(param)
    params.append(
        {
            "name": "INPUT_DATA",
            "in": "query",
            "required": False,
            "description": (
                "The same keys as JSON, sent instead of the plain query parameters "
                '(`{"operation": {"Details": {...}}}`); a key may not be given both '
                "ways."
            ),
            "content": {"application/json": {"schema": _input_data(spec)}},
        }
    )
    return params


def _operation(template: str, http_method: str, fn: Any) -> dict[str, Any]:
    name: str = fn.operation_name
    spec: Spec = fn.input_spec
    reply: dict[str, Any] | None = getattr(fn, "reply_schema", None)
    list_reply: bool = getattr(fn, "list_reply", False)
    with_details: tuple[int, ...] = getattr(fn, "failures_with_details", ())
    summary: str = (fn.__doc__ or name).strip().splitlines()[0]
    op: dict[str, Any] = {
        "operationId": re.sub(r"[^A-Za-z0-9]+", "_", f"{http_method}_{template}").strip("_"),
        "summary": summary,
        "description": (
            f"Operation name in replies: `{name}`. Needs the role permission "
            f"`{fn.required_action.value}`."
        ),
        "tags": [template.strip("/").split("/")[0]],
        "parameters": [
            {
                "name": p,
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
            }
            for p in _PARAM.findall(template)
        ],
        "responses": {
            "200": {
                "description": "Success",
                "content": {"application/json": {"schema": _envelope(reply, list_reply)}},
            },
            **{
                str(status): _error(
                    status,
                    text,
                    _envelope(reply, list_reply) if status in with_details else None,
                )
                for status, text in sorted({**COMMON_FAILURES, **fn.failures}.items())
            },
        },
    }
    if spec.fields:
        if http_method in ("post", "put"):
            op["requestBody"] = {
                "required": any(f.required for f in spec.fields),
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "properties": {"INPUT_DATA": _input_data(spec)},
                        },
                        "encoding": {"INPUT_DATA": {"contentType": "application/json"}},
                    }
                },
            }
        else:
            op["parameters"].extend(_query_parameters(spec))
    return op


def build_document(
    routes: Iterable[tuple[str, type[tornado.web.RequestHandler]]],
) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for _pattern, cls in routes:
        template = getattr(cls, "path_template", None)
        if not (isinstance(template, str) and template and issubclass(cls, ApiHandler)):
            continue
        item: dict[str, Any] = paths.setdefault(template, {})
        for http_method in METHODS:
            fn = getattr(cls, http_method, None)
            if fn is not None and hasattr(fn, "operation_name"):
                item[http_method] = _operation(template, http_method, fn)
    result_schema = {
        "type": "object",
        "required": ["status", "message"],
        "properties": {
            "status": {"type": "string", "enum": ["Success", "Failed"]},
            "message": {"type": "string"},
        },
    }
    failure = {
        "type": "object",
        "required": ["operation"],
        "properties": {
            "operation": {
                "type": "object",
                "required": ["name", "result"],
                "additionalProperties": False,  # no Details: see the operations that have them
                "properties": {
                    "name": {"type": "string"},
                    "result": {"$ref": "#/components/schemas/Result"},
                },
            }
        },
    }
    method_not_allowed = _error(405, METHOD_NOT_ALLOWED)
    method_not_allowed["headers"] = {
        "Allow": {
            "description": "The methods the path takes, such as `GET, PUT`",
            "schema": {"type": "string"},
        }
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Strongroom REST API (Password Manager Pro compatible)",
            "version": __version__,
            "description": (
                "Application-to-application access to the vault. Paths, INPUT_DATA, key "
                "names, operation names and the reply envelope follow Password Manager "
                "Pro's REST API, so existing integration scripts keep working. Every "
                "password fetch is audited. A method a listed path does not take is "
                "answered 405 with an `Allow` header (after authentication: without a "
                "valid AUTHTOKEN it is the usual 401); see `components.responses."
                "MethodNotAllowed`."
            ),
        },
        "servers": [{"url": API_PREFIX}],
        "security": [{"authtokenHeader": []}, {"authtokenQuery": []}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {
                "authtokenHeader": {"type": "apiKey", "in": "header", "name": "AUTHTOKEN"},
                "authtokenQuery": {"type": "apiKey", "in": "query", "name": "AUTHTOKEN"},
            },
            "schemas": {"Result": result_schema, "Failure": failure},
            "responses": {"MethodNotAllowed": method_not_allowed},
        },
    }


class OpenApiDocument(BaseHandler):
    """GET /restapi/openapi.json: the document, public (it describes, it reveals no data)."""

    async def prepare(self) -> None:
        return None

    def check_xsrf_cookie(self) -> None:
        return None

    async def get(self) -> None:
        from web.app import route_table

        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(_document_text(tuple(route_table())))


@functools.lru_cache(maxsize=1)
def _document_text(routes: tuple[tuple[str, type[tornado.web.RequestHandler]], ...]) -> str:
    return encode_json(build_document(routes))


ROUTES = [(r"/restapi/openapi.json", OpenApiDocument)]
