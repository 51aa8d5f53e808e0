"""The published OpenAPI document: served without a token, valid OpenAPI 3, and describing
every REST API route and method the application serves, with PMP's operation names."""

from __future__ import annotations

import re
from pathlib import Path

from openapi_spec_validator import validate

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
