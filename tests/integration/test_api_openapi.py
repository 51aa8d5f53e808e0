"""The published OpenAPI document: served without a token, valid OpenAPI 3, and describing
every REST API route and method the application serves, with PMP's operation names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from tests.helpers import Response
from tests.integration.api_helpers import api_world, one_account, op
from tests.integration.live_app import Browser, live_app
from web.api.base import ApiHandler
from web.app import route_table

EXPECTED = {
    ("/resources", "get"): "GET RESOURCES",
    ("/resources", "post"): "CREATE RESOURCE",
    ("/resources/{rid}/accounts", "get"): "GET RESOURCE ACCOUNTLIST",
    ("/resources/{rid}/accounts", "post"): "ADD ACCOUNTS",
    ("/resources/{rid}/accounts/{aid}", "get"): "GET RESOURCE ACCOUNT DETAILS",
    ("/resources/{rid}/accounts/{aid}/password", "get"): "GET PASSWORD",
    ("/resources/{rid}/accounts/{aid}/password", "put"): "CHANGE PASSWORD",
    ("/resources/{rid}/accounts/{aid}/share", "put"): "SHARE ACCOUNT",
    ("/resources/{rid}", "delete"): "DELETE RESOURCE",
    ("/resources/getResourceIdAccountId", "get"): "GET_RESOURCEACCOUNTID",
    (
        "/resources/resourcename/{resourcename}/accounts/accountname/{accountname}",
        "get",
    ): "GET_RESOURCEACCOUNTID",
    ("/resources/resourcename/{resourcename}", "get"): "GET_RESOURCEID",
    ("/user/getUserId", "get"): "GET_USERID",
}


def test_openapi_document_is_valid_and_complete(tmp_path: Path) -> None:
    with live_app(tmp_path) as (_services, port):
        browser = Browser(port)
        resp = browser.get("/restapi/openapi.json")
        browser.close()
    assert resp.status == 200
    assert resp.headers["content-type"].startswith("application/json")
    doc = resp.json()
    validate(doc)  # raises on an invalid OpenAPI 3 document
    assert doc["servers"] == [{"url": "/restapi/json/v1"}]
    assert {"authtokenHeader", "authtokenQuery"} == set(doc["components"]["securitySchemes"])
    found = {
        (path, method): item["description"]
        for path, methods in doc["paths"].items()
        for method, item in methods.items()
    }
    assert set(found) == set(EXPECTED)
    for key, name in EXPECTED.items():
        assert f"`{name}`" in found[key], key
    # every API handler method the app routes is in the document
    served = {
        (cls.path_template, m)
        for _p, cls in route_table()
        if isinstance(cls, type) and issubclass(cls, ApiHandler) and cls.path_template
        for m in ("get", "post", "put", "delete")
        if hasattr(getattr(cls, m, None), "operation_name")
    }
    assert served == set(EXPECTED)
    # input is described key by key, with the limits the server enforces
    create = doc["paths"]["/resources"]["post"]["requestBody"]["content"]
    form = create["application/x-www-form-urlencoded"]
    details = form["schema"]["properties"]["INPUT_DATA"]["properties"]["operation"]["properties"][
        "Details"
    ]
    assert details["required"] == ["RESOURCENAME"] and details["additionalProperties"] is False
    assert details["properties"]["RESOURCENAME"]["maxLength"] == 256
    assert details["properties"]["PASSWORD"]["format"] == "password"
    assert form["encoding"]["INPUT_DATA"]["contentType"] == "application/json"
    listing = doc["paths"]["/resources"]["get"]["responses"]["200"]["content"]
    envelope = listing["application/json"]["schema"]["properties"]["operation"]
    assert "totalRows" in envelope["properties"]
    assert set(doc["paths"]["/resources/{rid}"]["delete"]["responses"]) >= {"401", "403", "404"}
    # what each operation may answer, its own failures included
    common = {"200", "400", "401", "403", "404", "500", "503"}
    paths = doc["paths"]
    assert set(paths["/resources"]["post"]["responses"]) == common | {"409"}
    assert set(paths["/resources/{rid}/accounts"]["post"]["responses"]) == common | {"409"}
    change = paths["/resources/{rid}/accounts/{aid}/password"]["put"]["responses"]
    assert set(change) == common | {"501"} and "REMOTE" in change["501"]["description"]
    fetch = paths["/resources/{rid}/accounts/{aid}/password"]["get"]["responses"]
    assert "fail closed" in fetch["500"]["description"]
    assert set(paths["/user/getUserId"]["get"]["responses"]) == common
    assert not re.search(r"\\u003c|<script", resp.text)


def _reply_schema(doc: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of a documented reply, with the document's components at its root
    so that its ``#/components/...`` references resolve."""
    schema = dict(response["content"]["application/json"]["schema"])
    schema["components"] = doc["components"]
    return schema


def _matches(doc: dict[str, Any], response: dict[str, Any], resp: Response) -> None:
    """Raise unless the real reply ``resp`` is what the document's ``response`` says."""
    for name in response.get("headers", {}):
        assert name.lower() in resp.headers, (name, resp.headers)
    OAS30Validator(_reply_schema(doc, response)).validate(resp.json())


def test_the_document_describes_query_parameters_and_the_real_replies(tmp_path: Path) -> None:
    """GET input is listed key by key as PMP clients send it (plain query parameters, with
    INPUT_DATA as the alternative); the replies the server really sends (ADD ACCOUNTS'
    failures with Details, 405 with Allow, 401) match what the document says of them; ids
    may be JSON numbers as well as strings."""
    with api_world(tmp_path) as world:
        anonymous = world.api(None)
        doc = anonymous.browser.get("/restapi/openapi.json").json()
        validate(doc)
        paths = doc["paths"]

        def query(path: str) -> dict[str, dict[str, Any]]:
            return {p["name"]: p for p in paths[path]["get"]["parameters"] if p["in"] == "query"}

        ids = query("/resources/getResourceIdAccountId")
        assert ids["RESOURCENAME"]["required"] is True
        assert ids["RESOURCENAME"]["schema"] == {"type": "string", "maxLength": 256}
        assert ids["ACCOUNTNAME"]["required"] is True
        assert ids["INPUT_DATA"]["required"] is False
        assert "instead of" in ids["INPUT_DATA"]["description"]
        assert query("/user/getUserId")["USERNAME"]["required"] is True
        password = query("/resources/{rid}/accounts/{aid}/password")
        assert set(password) == {"REASON", "TICKETID", "INPUT_DATA"}
        assert not password["REASON"]["required"] and not password["TICKETID"]["required"]
        assert "EQUALS" in query("/resources")["SEARCHTYPE"]["schema"]["enum"]
        assert set(query("/resources/{rid}/accounts")) == set()  # no input, nothing listed
        # ... and the server takes them so
        api = world.api("app-padmin")
        rid, aid = one_account(api, "doc-web", "Doc-pass-1")
        by_query = api.get(
            "/resources/getResourceIdAccountId",
            query={"RESOURCENAME": "doc-web", "ACCOUNTNAME": "a"},
        )
        _matches(
            doc, paths["/resources/getResourceIdAccountId"]["get"]["responses"]["200"], by_query
        )

        add = paths["/resources/{rid}/accounts"]["post"]["responses"]
        duplicate = api.post(f"/resources/{rid}/accounts", {"ACCOUNTLIST": [{"ACCOUNTNAME": "a"}]})
        assert op(duplicate, 409)["Details"]
        _matches(doc, add["409"], duplicate)
        refused = api.post(
            f"/resources/{rid}/accounts",
            {"ACCOUNTLIST": [{"ACCOUNTNAME": "b", "ACCOUNTPASSWORDPOLICY": "Nope"}]},
        )
        assert op(refused, 400)["Details"]
        _matches(doc, add["400"], refused)
        # other failures carry no Details, and the document says so
        missing = api.get(f"/resources/{rid}/accounts/99999")
        _matches(doc, paths["/resources/{rid}/accounts/{aid}"]["get"]["responses"]["404"], missing)
        with pytest.raises(ValidationError):
            OAS30Validator(_reply_schema(doc, add["404"])).validate(duplicate.json())
        unauthenticated = anonymous.get("/resources")
        _matches(doc, paths["/resources"]["get"]["responses"]["401"], unauthenticated)

        # a method a path does not take: 405 with Allow, described once for every path
        wrong = api.call("POST", f"/resources/{rid}/accounts/{aid}/password")
        assert wrong.status == 405
        not_allowed = doc["components"]["responses"]["MethodNotAllowed"]
        assert "Allow" in not_allowed["headers"]
        _matches(doc, not_allowed, wrong)
        assert "405" in doc["info"]["description"]

        # USERID / USERGROUPID: a string or, as some clients send it, a JSON number
        share = paths["/resources/{rid}/accounts/{aid}/share"]["put"]["requestBody"]["content"]
        details = share["application/x-www-form-urlencoded"]["schema"]["properties"]["INPUT_DATA"]
        keys = details["properties"]["operation"]["properties"]["Details"]["properties"]
        for key in ("USERID", "USERGROUPID"):
            assert {s["type"] for s in keys[key]["oneOf"]} == {"string", "integer"}
        uid = op(api.get("/user/getUserId", query={"USERNAME": "app-user"}))["Details"]["USERID"]
        shared = api.put(
            f"/resources/{rid}/accounts/{aid}/share", {"ACCESSTYPE": "view", "USERID": int(uid)}
        )
        op(shared)
        OAS30Validator(details["properties"]["operation"]["properties"]["Details"]).validate(
            {"ACCESSTYPE": "view", "USERID": int(uid)}
        )
