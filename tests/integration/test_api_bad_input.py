"""Bad input to the REST API: clear 4xx answers in PMP's envelope, and nothing changes.

Malformed JSON, unknown keys, over-long values, ids that do not exist or are not shared
(the same answer), missing and revoked tokens, XSS payloads (stored and returned as inert
JSON data), oversized bodies, wrong methods and unknown paths."""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from node.roles import Role
from tests.integration.api_helpers import World, api_world, audit_rows, one_account, op


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with api_world(tmp_path_factory.mktemp("api-bad")) as w:
        api = w.api("app-padmin")
        op(
            api.post(
                "/resources",
                {"RESOURCENAME": "base", "ACCOUNTNAME": "acc", "PASSWORD": "Base-pass-1"},
            )
        )
        yield w


def resource_names(world: World) -> list[str]:
    """The resources of app-padmin, who creates them in these tests (never empty)."""
    o = op(world.api("app-padmin").get("/resources"))
    names = sorted(r["RESOURCE NAME"] for r in o.get("Details", []))
    assert "base" in names
    return names


def message(resp_text: str) -> str:
    return str(json.loads(resp_text)["operation"]["result"]["message"])


@pytest.mark.parametrize(
    "raw",
    [
        '{"operation": {"Details": {"RESOURCENAME": "x"}',  # cut short
        "not json at all",
        '{"operation": {"Details": {"RESOURCENAME": NaN}}}',
        '["operation"]',
        '{"Details": {"RESOURCENAME": "x"}}',  # no "operation"
        '{"operation": {"Details": "RESOURCENAME"}}',
        '{"operation": {"Details": {}, "name": "CREATE RESOURCE"}}',
        "[" * 5000 + "]" * 5000,
    ],
)
def test_malformed_input_data_is_refused_and_nothing_is_created(world: World, raw: str) -> None:
    before = resource_names(world)
    resp = world.api("app-padmin").post("/resources", raw_input=raw)
    o = op(resp, 400)
    assert o["name"] == "CREATE RESOURCE"
    assert "INPUT_DATA" in o["result"]["message"]
    assert resource_names(world) == before


def test_malformed_json_in_a_get_query(world: World) -> None:
    resp = world.api("app-padmin").get("/resources", raw_input="{oops")
    assert "not valid JSON" in op(resp, 400)["result"]["message"]


def test_unknown_keys_are_named_and_refused(world: World) -> None:
    api = world.api("app-padmin")
    before = resource_names(world)
    resp = api.post("/resources", {"RESOURCENAME": "u1", "RESOURCENAM": "typo"})
    msg = op(resp, 400)["result"]["message"]
    assert "RESOURCENAM" in msg and "unknown key" in msg
    nested = api.post(
        "/resources",
        {"RESOURCENAME": "u2", "RESOURCECUSTOMFIELD": [{"CUSTOMLABEL": "a", "COLOR": "red"}]},
    )
    assert "COLOR" in op(nested, 400)["result"]["message"]
    query = api.get("/resources", query={"SORTBY": "name"})
    assert "SORTBY" in op(query, 400)["result"]["message"]
    valid = json.dumps({"operation": {"Details": {"RESOURCENAME": "u3"}}})
    form = world.api("app-padmin").browser.request(
        "POST",
        "/restapi/json/v1/resources",
        body=urllib.parse.urlencode({"INPUT_DATA": valid, "EXTRA": "1"}).encode(),
        headers={
            "AUTHTOKEN": world.tokens["app-padmin"],
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert "EXTRA" in op(form, 400)["result"]["message"]
    assert resource_names(world) == before


def test_wrong_types_and_choices(world: World) -> None:
    api = world.api("app-padmin")
    rid, aid = api.ids("base", "acc")
    cases = [
        api.post("/resources", {"RESOURCENAME": 42}),
        api.post("/resources", {"RESOURCENAME": ["a"]}),
        api.post(f"/resources/{rid}/accounts", {"ACCOUNTLIST": {"ACCOUNTNAME": "x"}}),
        api.post(f"/resources/{rid}/accounts", {"ACCOUNTLIST": []}),
        api.put(
            f"/resources/{rid}/accounts/{aid}/password",
            {"NEWPASSWORD": "Abc-12345", "RESETTYPE": "SIDEWAYS"},
        ),
        api.put(f"/resources/{rid}/accounts/{aid}/share", {"ACCESSTYPE": "owner", "USERID": "1"}),
        api.put(f"/resources/{rid}/accounts/{aid}/share", {"ACCESSTYPE": "view", "USERID": "one"}),
        api.get("/resources", {"SEARCHCOLUMN": "PASSWORD", "SEARCHVALUE": "x"}),
        api.post("/resources", {}),  # RESOURCENAME is mandatory
    ]
    for resp in cases:
        op(resp, 400)
    assert op(api.get(f"/resources/{rid}/accounts/{aid}/password"))["Details"]["PASSWORD"] == (
        "Base-pass-1"
    )


def test_over_long_values_are_refused_and_nothing_changes(world: World) -> None:
    api = world.api("app-padmin")
    rid, aid = api.ids("base", "acc")
    before = resource_names(world)
    long_name = api.post("/resources", {"RESOURCENAME": "r" * 257})
    msg = op(long_name, 400)["result"]["message"]
    assert "RESOURCENAME" in msg and "too long" in msg
    long_notes = api.post(
        "/resources", {"RESOURCENAME": "ok-name", "ACCOUNTNAME": "a", "NOTES": "n" * 5000}
    )
    assert "NOTES" in op(long_notes, 400)["result"]["message"]
    assert resource_names(world) == before
    long_pw = api.put(f"/resources/{rid}/accounts/{aid}/password", {"NEWPASSWORD": "P" * 300})
    msg = op(long_pw, 400)["result"]["message"]
    assert "too long" in msg and "PPPP" not in msg  # a password is never echoed
    long_reason = api.get(f"/resources/{rid}/accounts/{aid}/password", {"REASON": "x" * 2000})
    op(long_reason, 400)
    too_many = api.post(
        f"/resources/{rid}/accounts",
        {"ACCOUNTLIST": [{"ACCOUNTNAME": f"a{i}"} for i in range(101)]},
    )
    assert "at most 100" in op(too_many, 400)["result"]["message"]
    long_path = api.get("/resources/resourcename/" + "n" * 300)
    op(long_path, 400)
    huge = api.post("/resources", {"RESOURCENAME": "big", "RESOURCEDESCRIPTION": "d" * 300_000})
    assert "too large" in op(huge, 400)["result"]["message"]
    assert op(huge, 400)["name"] == "CREATE RESOURCE"
    accounts = op(api.get(f"/resources/{rid}/accounts"))["Details"]["ACCOUNT LIST"]
    assert [a["ACCOUNT NAME"] for a in accounts] == ["acc"]
    assert op(api.get(f"/resources/{rid}/accounts/{aid}/password"))["Details"]["PASSWORD"] == (
        "Base-pass-1"
    )
    assert resource_names(world) == before


def _same_answer(a: str, a_id: str, b: str, b_id: str) -> None:
    assert re.sub(rf"\b{a_id}\b", "ID", a) == re.sub(rf"\b{b_id}\b", "ID", b)


def test_ids_that_do_not_exist_and_ids_not_shared_get_the_same_answer(world: World) -> None:
    owner = world.api("app-padmin")
    outsider = world.api("app-padmin2")
    rid, aid = owner.ids("base", "acc")
    missing = "987654"
    views = len(audit_rows(world.services, "view password"))
    for template in (
        "/resources/{r}/accounts",
        "/resources/{r}/accounts/{a}",
        "/resources/{r}/accounts/{a}/password",
    ):
        real = outsider.get(template.format(r=rid, a=aid))
        fake = outsider.get(template.format(r=missing, a=missing))
        assert real.status == fake.status == 404
        op(real, 404)
        _same_answer(real.text, rid, fake.text, missing)
    # an account id that exists, under a resource id it does not belong to
    op(owner.post("/resources", {"RESOURCENAME": "other"}))
    other = op(owner.get("/resources/resourcename/other"))["Details"]["RESOURCEID"]
    wrong_parent = owner.get(f"/resources/{other}/accounts/{aid}/password")
    fake = owner.get(f"/resources/{other}/accounts/{missing}/password")
    op(wrong_parent, 404)
    _same_answer(wrong_parent.text, aid, fake.text, missing)
    assert len(audit_rows(world.services, "view password")) == views  # nothing was revealed
    for method, template, details in (
        ("PUT", "/resources/{r}/accounts/{a}/password", {"NEWPASSWORD": "Zz-123456"}),
        ("PUT", "/resources/{r}/accounts/{a}/share", {"ACCESSTYPE": "view", "USERID": "1"}),
        ("POST", "/resources/{r}/accounts", {"ACCOUNTLIST": [{"ACCOUNTNAME": "intruder"}]}),
        ("DELETE", "/resources/{r}", None),
    ):
        real = outsider.call(method, template.format(r=rid, a=aid), details)
        fake = outsider.call(method, template.format(r=missing, a=missing), details)
        assert real.status == fake.status == 404, (method, template, real.text)
        _same_answer(real.text, rid, fake.text, missing)
    # by name too
    real = outsider.get("/resources/resourcename/base/accounts/accountname/acc")
    fake = outsider.get("/resources/resourcename/nothing/accounts/accountname/acc")
    assert real.status == fake.status == 404
    _same_answer(real.text, "base", fake.text, "nothing")
    # malformed ids get the same 404 as well
    assert outsider.get("/resources/abc/accounts").status == 404
    assert outsider.get("/resources/99999999999999999999999/accounts").status == 404
    assert owner.get("/resources/base/accounts").status == 404
    assert op(owner.get(f"/resources/{rid}/accounts/{aid}/password"))["Details"]["PASSWORD"] == (
        "Base-pass-1"
    )


@pytest.mark.parametrize(
    "token", [None, "", "nonsense", "A" * 500, "00000000-0000-0000-0000-000000000000"]
)
def test_missing_or_unknown_token_is_401_authentication(world: World, token: str | None) -> None:
    api = world.api(None)
    headers = {} if token is None else {"AUTHTOKEN": token}
    resp = api.browser.request("GET", "/restapi/json/v1/resources", headers=headers)
    o = op(resp, 401)
    assert o["name"] == "Authentication"
    if token:
        assert "not associated with any user" in o["result"]["message"]
    assert resp.headers.get("www-authenticate", "").startswith("AUTHTOKEN")
    assert "base" not in resp.text


def test_a_bad_token_is_refused_before_the_input_is_read(world: World) -> None:
    resp = world.api("wrong-token-value-1234").post("/resources", raw_input="{broken")
    assert op(resp, 401)["name"] == "Authentication"


def test_revoked_token_and_disabled_api_user(world: World) -> None:
    services = world.services
    issued = services.api_tokens.add_api_user(
        "short-lived", Role.PASSWORD_USER, "test", "127.0.0.1"
    )
    api = world.api(issued.token)
    op(api.get("/resources"))
    services.api_tokens.revoke("short-lived", "test", "127.0.0.1")
    assert op(api.get("/resources"), 401)["name"] == "Authentication"
    assert op(api.get("/resources", token_in_query=True), 401)["name"] == "Authentication"
    fresh = services.api_tokens.regenerate("short-lived", "test", "127.0.0.1")
    assert fresh.token != issued.token
    op(world.api(fresh.token).get("/resources"))
    assert op(world.api(issued.token).get("/resources"), 401)["name"] == "Authentication"
    uid = services.users.user_id_by_name(world.admin, "short-lived")
    services.users.set_enabled(world.admin, "127.0.0.1", uid, False)
    assert op(world.api(fresh.token).get("/resources"), 401)["name"] == "Authentication"
    # a new token does not enable a disabled API user; enabling it does
    newer = services.api_tokens.regenerate("short-lived", "test", "127.0.0.1")
    assert op(world.api(newer.token).get("/resources"), 401)["name"] == "Authentication"
    assert services.users.get_user(world.admin, uid).status == "disabled"
    services.users.set_enabled(world.admin, "127.0.0.1", uid, True)
    op(world.api(newer.token).get("/resources"))


def test_a_bad_token_is_a_failed_login_in_the_audit_every_few_seconds_at_most(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A made-up or revoked AUTHTOKEN is a failed login in the user audit, named by the
    token's first characters only; from one address, the first at once and then at most
    one row every few seconds (anyone can send them by the thousand), each in the log."""
    caplog.set_level(logging.INFO)
    with api_world(tmp_path) as world:
        services = world.services
        issued = services.api_tokens.add_api_user("gone", Role.PASSWORD_USER, "t", "127.0.0.1")
        services.api_tokens.revoke("gone", "t", "127.0.0.1")
        assert op(world.api(issued.token).get("/resources"), 401)["name"] == "Authentication"
        for _ in range(5):
            op(world.api("made-up-token-0123456789").get("/resources"), 401)
        first = f"REST API: unknown or revoked AUTHTOKEN {issued.token[:8]}..."
        deadline = time.monotonic() + 10
        rows: list[str] = []
        while first not in rows and time.monotonic() < deadline:
            rows = [r.detail for r in audit_rows(services, "failed login")]
            time.sleep(0.05)
        time.sleep(0.5)  # what else would come, has come
        rows = [r.detail for r in audit_rows(services, "failed login")]
        assert rows == [first]
        assert issued.token[8:16] not in "".join(rows)  # never more of the token
        # the log names the token by the same prefix, so a line and a row can be matched
        from appliance.logs import JsonFormatter

        logged = [
            json.loads(JsonFormatter().format(r))
            for r in caplog.records
            if r.getMessage() == "API request with an unknown or revoked token"
        ]
        assert issued.token[:8] in [line["prefix"] for line in logged]
        assert all(issued.token[8:16] not in json.dumps(line) for line in logged)


XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;\'"'


def test_xss_payloads_round_trip_as_inert_json_data(world: World) -> None:
    api = world.api("app-padmin")
    name = "xss " + XSS
    op(
        api.post(
            "/resources",
            {
                "RESOURCENAME": name,
                "ACCOUNTNAME": "acct " + XSS,
                "PASSWORD": "Xss-pass-1<b>",
                "RESOURCEDESCRIPTION": XSS,
                "DNSNAME": "xss.example",
                "DEPARTMENT": XSS[:100],
                "LOCATION": XSS[:100],
                "NOTES": XSS,
            },
        )
    )
    listing = api.get("/resources", {"SEARCHVALUE": "xss "})
    rid, aid = api.ids(name, "acct " + XSS)
    detail = api.get(f"/resources/{rid}/accounts")
    account = api.get(f"/resources/{rid}/accounts/{aid}")
    password = api.get(f"/resources/{rid}/accounts/{aid}/password")
    for resp in (listing, detail, account, password):
        assert resp.headers["content-type"].startswith("application/json")
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert "<" not in resp.text and ">" not in resp.text  # escaped as \u003c / \u003e
    [row] = op(listing)["Details"]
    assert row["RESOURCE NAME"] == name and row["RESOURCE DESCRIPTION"] == XSS
    d = op(detail)["Details"]
    assert d["DEPARTMENT"] == XSS[:100] and d["ACCOUNT LIST"][0]["ACCOUNT NAME"] == "acct " + XSS
    assert op(account)["Details"]["DESCRIPTION"] == XSS
    assert op(password)["Details"]["PASSWORD"] == "Xss-pass-1<b>"
    # an error message that quotes the input is escaped too
    unknown = api.post("/resources", {"RESOURCENAME": "y", "<script>": "1"})
    assert "<" not in unknown.text and "\\u003cscript" in unknown.text


def test_wrong_method_and_unknown_paths(world: World) -> None:
    api = world.api("app-padmin")
    patch = api.call("PATCH", "/resources", {"RESOURCENAME": "p"})
    assert op(patch, 405)["result"]["status"] == "Failed"
    assert patch.headers["allow"] == "GET, POST"
    delete = api.call("DELETE", "/resources")
    assert op(delete, 405) and delete.headers["allow"] == "GET, POST"
    password = api.call("POST", "/resources/1/accounts/1/password")
    assert op(password, 405) and password.headers["allow"] == "GET, PUT"
    assert op(api.get("/no/such/operation"), 404)["result"]["message"] == "No such API operation."
    assert op(world.api(None).get("/no/such/operation"), 401)["name"] == "Authentication"


def test_a_wrong_method_is_answered_only_after_authentication(world: World) -> None:
    """Without a valid token a wrong method gets the 401 of any tokenless request, on an
    API path or not, so that an anonymous client cannot tell which paths exist (from a
    405, or the methods in Allow); with one, 405 and Allow as before."""
    anonymous, forged = world.api(None), world.api("not-a-token")
    api = world.api("app-padmin")
    for method, path, allow in (
        ("POST", "/resources/1/accounts/1/password", "GET, PUT"),
        ("DELETE", "/resources", "GET, POST"),
        ("PATCH", "/resources/1", "DELETE"),
        ("OPTIONS", "/resources/1/accounts", "GET, POST"),
        ("PROPFIND", "/resources", "GET, POST"),  # not even a method tornado knows
    ):
        nothing_here = anonymous.call(method, "/no/such/path")
        for who in (anonymous, forged):
            resp = who.call(method, path)
            o = op(resp, 401)
            assert o["name"] == "Authentication" and "allow" not in resp.headers, method
            if who is anonymous:
                assert resp.text == nothing_here.text
        known = api.call(method, path)
        assert op(known, 405)["result"]["message"] == (
            f"The method {method} is not allowed on this path."
        )
        assert known.headers["allow"] == allow


def test_a_path_that_is_not_utf8_gets_a_clear_400_after_authentication(world: World) -> None:
    """Bytes in the path that are not UTF-8 (%FF%FE) are named as such, in the envelope of
    the operation asked for; without a token, the 401 of any tokenless request."""
    api = world.api("app-padmin")
    for path, name in (
        ("/resources/resourcename/%FF%FE", "GET_RESOURCEID"),
        ("/resources/resourcename/base/accounts/accountname/%C3", "GET_RESOURCEACCOUNTID"),
        ("/resources/%FF/accounts/1/password", "GET PASSWORD"),
    ):
        o = op(api.get(path), 400)
        assert o["name"] == name and o["result"]["message"] == "the path is not valid UTF-8"
        assert op(world.api(None).get(path), 401)["name"] == "Authentication"
    # a role that may not do the operation is told so first, as for any path
    auditor = world.api("app-auditor")
    assert "does not allow" in op(auditor.delete("/resources/%FF"), 403)["result"]["message"]
    # a valid path in UTF-8 is still taken
    assert op(api.get("/resources/resourcename/%C3%A9t%C3%A9"), 404)["result"]["message"] == (
        "no resource named 'été'"
    )


def test_a_form_body_is_accepted_in_every_content_type_clients_send(world: World) -> None:
    api = world.api("app-padmin")
    for i, ctype in enumerate(
        ("text/json", "application/x-www-form-urlencoded", "application/json; charset=UTF-8")
    ):
        op(api.post("/resources", {"RESOURCENAME": f"ctype-{i}"}, content_type=ctype))
    raw = api.browser.request(
        "POST",
        "/restapi/json/v1/resources",
        body=json.dumps({"operation": {"Details": {"RESOURCENAME": "ctype-raw"}}}).encode(),
        headers={"AUTHTOKEN": world.tokens["app-padmin"], "Content-Type": "application/json"},
    )
    op(raw)
    assert {"ctype-0", "ctype-1", "ctype-2", "ctype-raw"} <= set(resource_names(world))


def test_an_unexpected_server_error_is_answered_without_its_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A database that fails under the API (here a table renamed away) gives a 500 in the
    envelope with a generic message; the exception's text (SQL, table names) stays in the
    server's log."""
    with api_world(tmp_path) as world:
        api = world.api("app-padmin")
        rid, aid = one_account(api, "err-1", "Err-pass-1")
        with world.services.store.engine.begin() as conn:
            conn.execute(text("ALTER TABLE accounts RENAME TO accounts_gone"))
        caplog.set_level(logging.INFO)
        resp = api.get(
            f"/resources/{rid}/accounts/{aid}/password",
            {"REASON": "nightly"},
            token_in_query=True,
        )
        o = op(resp, 500)
        assert o["name"] == "GET PASSWORD"
        assert o["result"]["message"] == (
            "The server could not complete the request. The error has been logged."
        )
        for leak in ("accounts", "sqlite", "SELECT", "Error", "Err-pass-1"):
            assert leak not in resp.text
    # The error is logged, naming the path; not the query string, which held the token.
    [logged] = [
        r for r in caplog.records if r.getMessage() == "unexpected error answering a request"
    ]
    assert logged.path == f"/restapi/json/v1/resources/{rid}/accounts/{aid}/password"
    assert logged.exc_info is not None
    token = world.tokens["app-padmin"]
    assert not [r for r in caplog.records if token in r.getMessage() or token in str(vars(r))]


LONE = "\ud800"  # a lone surrogate: JSON's escape \ud800 decodes to it; no encoder takes it


def test_lone_surrogates_in_text_are_refused_and_nothing_changes(world: World) -> None:
    """JSON may escape a lone surrogate (\\ud800), which is no character: every text field
    refuses it with a 400 naming the key, before anything is written (no 500)."""
    api = world.api("app-padmin")
    rid, aid = api.ids("base", "acc")
    before = resource_names(world)
    views = len(audit_rows(world.services, "view password"))
    accounts = op(api.get(f"/resources/{rid}/accounts"))["Details"]["ACCOUNT LIST"]
    cases = {
        "RESOURCENAME": api.post("/resources", {"RESOURCENAME": f"lone{LONE}"}),
        "ACCOUNTNAME": api.post("/resources", {"RESOURCENAME": "l1", "ACCOUNTNAME": LONE}),
        "NOTES": api.post("/resources", {"RESOURCENAME": "l2", "ACCOUNTNAME": "a", "NOTES": LONE}),
        "PASSWORD": api.post(
            "/resources", {"RESOURCENAME": "l3", "ACCOUNTNAME": "a", "PASSWORD": f"Aa-1{LONE}"}
        ),
        "ACCOUNTLIST[1].ACCOUNTNAME": api.post(
            f"/resources/{rid}/accounts",
            {"ACCOUNTLIST": [{"ACCOUNTNAME": "first-good"}, {"ACCOUNTNAME": f"2nd{LONE}"}]},
        ),
        "NEWPASSWORD": api.put(
            f"/resources/{rid}/accounts/{aid}/password", {"NEWPASSWORD": f"New-pass-1{LONE}"}
        ),
        "Details.REASON": api.get(f"/resources/{rid}/accounts/{aid}/password", {"REASON": LONE}),
        "TICKETID": api.get(f"/resources/{rid}/accounts/{aid}/password", {"TICKETID": LONE}),
        "USERNAME": api.get("/user/getUserId", {"USERNAME": LONE}),
    }
    for key, resp in cases.items():
        msg = op(resp, 400)["result"]["message"]
        assert key in msg and "not valid Unicode text" in msg, (key, msg)
    assert resource_names(world) == before
    assert op(api.get(f"/resources/{rid}/accounts"))["Details"]["ACCOUNT LIST"] == accounts
    assert len(audit_rows(world.services, "view password")) == views
    assert op(api.get(f"/resources/{rid}/accounts/{aid}/password"))["Details"] == {
        "PASSWORD": "Base-pass-1"
    }
    # a surrogate pair is a character (U+1F511), and is kept
    key = "\U0001f511"
    op(api.post("/resources", {"RESOURCENAME": f"key-{key}"}))
    assert f"key-{key}" in resource_names(world)


def test_ids_in_other_scripts_digits_are_not_ids(world: World) -> None:
    """Full-width and Arabic-Indic digits are digits to Python's int(), not ids here: a
    path id written so is not found (as a missing one), an id in INPUT_DATA is refused."""
    api = world.api("app-padmin")
    rid, aid = api.ids("base", "acc")
    for alias in ("\uff11", "\u0663", "\u0661"):  # full-width 1, Arabic-Indic 3 and 1
        missing = api.get(f"/resources/{urllib.parse.quote(alias)}/accounts")
        assert "no resource with id" in op(missing, 404)["result"]["message"]
    user_id = op(api.get("/user/getUserId", {"USERNAME": "app-user"}))["Details"]["USERID"]
    wide = "".join(chr(0xFF10 + int(c)) for c in user_id)
    share = api.put(
        f"/resources/{rid}/accounts/{aid}/share", {"ACCESSTYPE": "view", "USERID": wide}
    )
    assert "USERID must be a numeric id" in op(share, 400)["result"]["message"]
    assert op(world.api("app-user").get(f"/resources/{rid}/accounts/{aid}/password"), 404)
    long_id = api.get("/resources/" + "9" * 30 + "/accounts")
    assert op(long_id, 404)["result"]["message"] == f"no resource with id {'9' * 20}..."


def test_duplicate_keys_are_refused(world: World) -> None:
    api = world.api("app-padmin")
    before = resource_names(world)
    raw = '{"operation": {"Details": {"RESOURCENAME": "dupk", "RESOURCENAME": "dupk2"}}}'
    msg = op(api.post("/resources", raw_input=raw), 400)["result"]["message"]
    assert "'RESOURCENAME' is given twice" in msg
    assert resource_names(world) == before


def test_a_delete_reads_and_checks_its_body(world: World) -> None:
    """INPUT_DATA in a DELETE's body is checked like anywhere else: an unknown key there
    refuses the call, and the resource stays."""
    api = world.api("app-padmin")
    op(api.post("/resources", {"RESOURCENAME": "del-body"}))
    rid = op(api.get("/resources/resourcename/del-body"))["Details"]["RESOURCEID"]
    body = urllib.parse.urlencode(
        {"INPUT_DATA": json.dumps({"operation": {"Details": {"FOO": "1"}}})}
    ).encode()
    headers = {"AUTHTOKEN": world.tokens["app-padmin"], "Content-Type": "text/json"}
    resp = api.browser.request(
        "DELETE", f"/restapi/json/v1/resources/{rid}", body=body, headers=headers
    )
    assert "unknown key 'FOO'" in op(resp, 400)["result"]["message"]
    assert "del-body" in resource_names(world)
    op(api.delete(f"/resources/{rid}"))
    assert "del-body" not in resource_names(world)


def test_a_body_sent_as_typed_is_taken_as_it_is(world: World) -> None:
    """A client that does not URL-encode INPUT_DATA (curl --data 'INPUT_DATA={...}'): read
    as a form, an '&' in the new password would cut it. JSON's braces and quotes never
    appear raw in a form, so such a body is taken as it is: the password stored is the one
    typed. A '+' or a %-escape in it could be meant either way (PMP decodes the body as a
    form): refused, nothing stored. A %-encoded byte that is not UTF-8 in a real form is
    refused, not stored as U+FFFD."""
    api = world.api("app-padmin")
    rid, aid = api.ids("base", "acc")
    headers = {"AUTHTOKEN": world.tokens["app-padmin"], "Content-Type": "text/json"}
    path = f"/restapi/json/v1/resources/{rid}/accounts/{aid}/password"

    def typed_body(password: str) -> bytes:
        details = {"NEWPASSWORD": password, "RESETTYPE": "LOCAL"}
        return ("INPUT_DATA=" + json.dumps({"operation": {"Details": details}})).encode()

    typed = "Amp&ersand=1x!"
    op(api.browser.request("PUT", path, body=typed_body(typed), headers=headers))
    assert op(api.get(f"/resources/{rid}/accounts/{aid}/password"))["Details"] == {
        "PASSWORD": typed
    }
    for two_ways in ("Plus+sign-1x", "Zz9!p%2Bq%26r%25s"):
        sent = api.browser.request("PUT", path, body=typed_body(two_ways), headers=headers)
        assert "could be read two ways" in op(sent, 400)["result"]["message"]
        assert two_ways not in sent.text
    # the same, URL-encoded, means itself
    op(api.put(f"/resources/{rid}/accounts/{aid}/password", {"NEWPASSWORD": "Plus+sign-1x"}))
    typed = "Plus+sign-1x"
    not_utf8 = (
        b"INPUT_DATA="
        + urllib.parse.quote(
            json.dumps(
                {"operation": {"Details": {"NEWPASSWORD": "Caf\u00e9-pass-1"}}}, ensure_ascii=False
            )
        ).encode()
    )
    assert b"%C3%A9" in not_utf8
    not_utf8 = not_utf8.replace(b"%C3%A9", b"%E9")  # Latin-1, as an old client might send
    refused = api.browser.request("PUT", path, body=not_utf8, headers=headers)
    assert "must be a form with an INPUT_DATA field" in op(refused, 400)["result"]["message"]
    stray = api.browser.request("PUT", path, body=b'NEWPASSWORD="x"&{', headers=headers)
    assert "must be a form with an INPUT_DATA field" in op(stray, 400)["result"]["message"]
    assert op(api.get(f"/resources/{rid}/accounts/{aid}/password"))["Details"] == {
        "PASSWORD": typed
    }
    op(api.put(f"/resources/{rid}/accounts/{aid}/password", {"NEWPASSWORD": "Base-pass-1"}))
