"""Contract tests of the REST API (Password Manager Pro compatible): every endpoint, its
operation name, key names, string ids and flags, and the envelope, against the real
Tornado app over HTTPS on a real vault. Passwords fetched through the API are audited."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import select, text

import web.api.base as api_base
from node.audit import verify_chain
from node.errors import LicenceError
from node.licence import Feature
from node.policies import check_password
from node.store.models import Account, AuditRow
from node.vault import AccountChanges
from tests.integration.api_helpers import World, api_world, audit_rows, one_account, op

ACCOUNT_LIST_KEYS = {
    "ACCOUNT ID",
    "ACCOUNT NAME",
    "PASSWDID",
    "PASSWORD STATUS",
    "ACCOUNT PASSWORD POLICY",
    "ISREASONREQUIRED",
    "IS_TICKETID_REQD",
    "IS_TICKETID_REQD_MANDATORY",
}
RESOURCE_KEYS = {
    "RESOURCE ID",
    "RESOURCE NAME",
    "RESOURCE DESCRIPTION",
    "RESOURCE TYPE",
    "DNS NAME",
    "DEPARTMENT",
    "LOCATION",
    "RESOURCE URL",
    "RESOURCE OWNER",
    "RESOURCE PASSWORD POLICY",
    "DOMAIN NAME",
    "ACCOUNT LIST",
}
ACCOUNT_DETAIL_KEYS = {
    "DESCRIPTION",
    "PASSWDID",
    "LAST MODIFIED TIME",
    "LAST ACCESSED TIME",
    "EXPIRY STATUS",
    "PASSWORD STATUS",
    "PASSWORD POLICY",
    "COMPLIANT STATUS",
    "COMPLIANT REASON",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with api_world(tmp_path_factory.mktemp("api-contract")) as w:
        yield w


def test_list_is_empty_then_lists_created_resources_with_string_ids(world: World) -> None:
    api = world.api("app-padmin2")
    empty = op(api.get("/resources"))
    assert empty["name"] == "GET RESOURCES"
    assert empty["totalRows"] == 0 and "Details" not in empty
    created = op(
        api.post(
            "/resources",
            {
                "RESOURCENAME": "lst-web01",
                "ACCOUNTNAME": "root",
                "RESOURCETYPE": "Linux",
                "PASSWORD": "Initial-pass-1",
                "RESOURCEDESCRIPTION": "front web",
                "DNSNAME": "web01.example.org",
            },
        )
    )
    assert created == {
        "name": "CREATE RESOURCE",
        "result": {
            "status": "Success",
            "message": "Resource lst-web01 has been added successfully",
        },
    }
    op(api.post("/resources", {"RESOURCENAME": "lst-db01"}))
    listed = op(api.get("/resources"))
    assert listed["totalRows"] == 2
    rows = {r["RESOURCE NAME"]: r for r in listed["Details"]}
    assert set(rows) == {"lst-web01", "lst-db01"}
    web = rows["lst-web01"]
    assert set(web) == {
        "RESOURCE ID",
        "RESOURCE NAME",
        "RESOURCE TYPE",
        "RESOURCE DESCRIPTION",
        "NOOFACCOUNTS",
    }
    assert web["RESOURCE TYPE"] == "Linux" and web["RESOURCE DESCRIPTION"] == "front web"
    assert web["NOOFACCOUNTS"] == "1" and rows["lst-db01"]["NOOFACCOUNTS"] == "0"
    assert all(
        isinstance(r["RESOURCE ID"], str) and r["RESOURCE ID"].isdigit() for r in rows.values()
    )


def test_search_by_column_and_type(world: World) -> None:
    api = world.api("app-padmin2")
    for name, dept in (("srch-alpha", "Finance"), ("srch-beta", "Ops"), ("xsrch-gamma", "Finance")):
        op(api.post("/resources", {"RESOURCENAME": name, "DEPARTMENT": dept}))

    def names(details: dict[str, str]) -> set[str]:
        o = op(api.get("/resources", details))
        assert o["totalRows"] == len(o.get("Details", []))
        return {r["RESOURCE NAME"] for r in o.get("Details", [])}

    assert names(
        {"SEARCHCOLUMN": "RESOURCENAME", "SEARCHVALUE": "srch", "SEARCHTYPE": "contains"}
    ) == {
        "srch-alpha",
        "srch-beta",
        "xsrch-gamma",
    }
    assert names(
        {"SEARCHCOLUMN": "RESOURCENAME", "SEARCHVALUE": "srch-", "SEARCHTYPE": "STARTSWITH"}
    ) == {"srch-alpha", "srch-beta"}
    assert names(
        {"SEARCHCOLUMN": "RESOURCENAME", "SEARCHVALUE": "SRCH-BETA", "SEARCHTYPE": "equals"}
    ) == {"srch-beta"}
    assert names(
        {"SEARCHCOLUMN": "DEPARTMENT", "SEARCHVALUE": "finance", "SEARCHTYPE": "equals"}
    ) == {
        "srch-alpha",
        "xsrch-gamma",
    }
    # the same search as plain query parameters, as some clients send it
    o = op(api.get("/resources", query={"SEARCHVALUE": "gamma"}))
    assert [r["RESOURCE NAME"] for r in o["Details"]] == ["xsrch-gamma"]
    assert names({"SEARCHVALUE": "no-such-thing"}) == set()


def test_resource_account_list_and_account_details(world: World) -> None:
    api = world.api("app-padmin")
    op(
        api.post(
            "/resources",
            {
                "RESOURCENAME": "acl-db01",
                "ACCOUNTNAME": "postgres",
                "PASSWORD": "Pg-Pass-123456!",
                "RESOURCETYPE": "postgresql",
                "DNSNAME": "db01.example.org",
                "DEPARTMENT": "Data",
                "LOCATION": "Rack 4",
                "RESOURCEURL": "https://db01.example.org/",
                "DOMAINNAME": "EXAMPLE",
                "RESOURCEPASSWORDPOLICY": "Strong",
                "NOTES": "superuser",
            },
        )
    )
    rid, aid = api.ids("acl-db01", "postgres")
    o = op(api.get(f"/resources/{rid}/accounts"))
    assert o["name"] == "GET RESOURCE ACCOUNTLIST"
    d = o["Details"]
    assert set(d) == RESOURCE_KEYS
    assert d["RESOURCE ID"] == rid and d["RESOURCE NAME"] == "acl-db01"
    assert d["RESOURCE TYPE"] == "PostgreSQL"  # the built-in type, whatever case was sent
    assert d["DNS NAME"] == "db01.example.org" and d["LOCATION"] == "Rack 4"
    assert d["RESOURCE URL"] == "https://db01.example.org/" and d["DOMAIN NAME"] == "EXAMPLE"
    assert d["RESOURCE OWNER"] == "app-padmin"
    assert d["RESOURCE PASSWORD POLICY"] == "Strong"
    [account] = d["ACCOUNT LIST"]
    assert set(account) == ACCOUNT_LIST_KEYS
    assert account["ACCOUNT ID"] == aid and account["PASSWDID"] == aid
    assert account["ACCOUNT NAME"] == "postgres"
    assert account["PASSWORD STATUS"] == "****"
    assert account["ACCOUNT PASSWORD POLICY"] == "Strong"
    assert account["ISREASONREQUIRED"] == "false"
    assert account["IS_TICKETID_REQD"] == account["IS_TICKETID_REQD_MANDATORY"] == "false"
    assert "Pg-Pass-123456!" not in api.get(f"/resources/{rid}/accounts").text

    detail = op(api.get(f"/resources/{rid}/accounts/{aid}"))
    assert detail["name"] == "GET RESOURCE ACCOUNT DETAILS"
    dd = detail["Details"]
    assert set(dd) == ACCOUNT_DETAIL_KEYS
    assert dd["DESCRIPTION"] == "superuser" and dd["PASSWDID"] == aid
    assert dd["PASSWORD STATUS"] == "****" and dd["PASSWORD POLICY"] == "Strong"
    assert dd["LAST ACCESSED TIME"] == "N/A" and dd["LAST MODIFIED TIME"].endswith("UTC")
    assert dd["EXPIRY STATUS"] == "Valid" and dd["COMPLIANT STATUS"] == "Compliant"


def test_get_password_is_audited_with_reason_and_source_ip(world: World) -> None:
    api = world.api("app-padmin")
    op(
        api.post(
            "/resources",
            {"RESOURCENAME": "pw-app01", "ACCOUNTNAME": "svc", "PASSWORD": "Svc-pass-9"},
        )
    )
    rid, aid = api.ids("pw-app01", "svc")
    before = len(audit_rows(world.services, "view password"))
    fetched = api.get(f"/resources/{rid}/accounts/{aid}/password", {"REASON": "deploy job 42"})
    # no ETag: it would be a hash of a body holding the password (and an If-None-Match
    # oracle); nothing may be cached
    assert "etag" not in fetched.headers and fetched.headers["cache-control"] == "no-store"
    o = op(fetched)
    assert o == {
        "name": "GET PASSWORD",
        "result": {"status": "Success", "message": "Password fetched successfully"},
        "Details": {"PASSWORD": "Svc-pass-9"},
    }
    rows = audit_rows(world.services, "view password")
    assert len(rows) == before + 1
    row = rows[-1]
    assert (row.username, row.source_ip, row.reason, row.result) == (
        "app-padmin",
        "127.0.0.1",
        "deploy job 42",
        "success",
    )
    assert row.resource_id == int(rid) and row.account_id == int(aid)
    assert "Svc-pass-9" not in f"{row.target} {row.reason} {row.detail}"
    # the token may also come as a query parameter
    again = op(api.get(f"/resources/{rid}/accounts/{aid}/password", token_in_query=True))
    assert again["Details"] == {"PASSWORD": "Svc-pass-9"}
    assert op(api.get(f"/resources/{rid}/accounts/{aid}"))["Details"]["LAST ACCESSED TIME"] != "N/A"


def test_the_access_log_has_no_query_string(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """The token and INPUT_DATA may travel in the query string: the access line names the
    path, status, time and client only."""
    api = world.api("app-padmin")
    rid, aid = one_account(api, "log-app01", "Log-pass-1")
    caplog.set_level(logging.INFO, logger="strongroom.access")
    op(
        api.get(
            f"/resources/{rid}/accounts/{aid}/password", {"REASON": "nightly"}, token_in_query=True
        )
    )
    # The line is written just after the answer is sent, on the app's own thread: wait.
    deadline = time.monotonic() + 10
    while True:
        lines = [
            r for r in caplog.records if r.name == "strongroom.access" and "password" in r.path
        ]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    [record] = lines
    assert record.levelno == logging.INFO and record.getMessage() == "request"
    assert (record.method, record.status, record.ip) == ("GET", 200, "127.0.0.1")
    assert record.path == f"/restapi/json/v1/resources/{rid}/accounts/{aid}/password"
    assert isinstance(record.ms, float) and record.ms >= 0
    assert api.token is not None
    dumped = str(vars(record))
    assert api.token not in dumped and "nightly" not in dumped and "Log-pass-1" not in dumped


def test_reason_and_ticket_required_when_the_account_says_so(world: World) -> None:
    api = world.api("app-padmin")
    op(
        api.post(
            "/resources",
            {"RESOURCENAME": "rsn-fw01", "ACCOUNTNAME": "enable", "PASSWORD": "Fw-pass-77"},
        )
    )
    rid, aid = api.ids("rsn-fw01", "enable")
    owner = world.services.api_tokens.authenticate(world.tokens["app-padmin"])
    assert owner is not None
    world.services.vault.edit_account(
        owner, "127.0.0.1", int(aid), AccountChanges(reason_required=True, ticket_required=True)
    )
    [account] = op(api.get(f"/resources/{rid}/accounts"))["Details"]["ACCOUNT LIST"]
    assert account["ISREASONREQUIRED"] == "true"
    assert account["IS_TICKETID_REQD"] == account["IS_TICKETID_REQD_MANDATORY"] == "true"
    views = len(audit_rows(world.services, "view password"))
    path = f"/resources/{rid}/accounts/{aid}/password"
    no_reason = api.get(path, {"TICKETID": "CHG-1"})
    assert no_reason.status == 400 and "reason" in op(no_reason, 400)["result"]["message"]
    no_ticket = api.get(path, {"REASON": "incident"})
    assert no_ticket.status == 400 and "ticket" in op(no_ticket, 400)["result"]["message"]
    assert "Fw-pass-77" not in no_reason.text + no_ticket.text
    # the refused attempts are audited as failures, with the API user and its address
    refused = audit_rows(world.services, "view password")[views:]
    assert [(r.result, r.username, r.source_ip) for r in refused] == [
        ("failure", "app-padmin", "127.0.0.1")
    ] * 2
    ok = op(api.get(path, {"REASON": "incident", "TICKETID": "CHG-1"}))
    assert ok["Details"]["PASSWORD"] == "Fw-pass-77"
    last = audit_rows(world.services, "view password")[-1]
    assert (last.result, last.reason, last.detail) == ("success", "incident", "ticket CHG-1")
    # changes through the API need them too
    no_ticket_change = api.put(path, {"NEWPASSWORD": "Fw-pass-88", "REASON": "rotation"})
    assert "TICKETID" in op(no_ticket_change, 400)["result"]["message"]
    no_reason_change = api.put(path, {"NEWPASSWORD": "Fw-pass-88", "TICKETID": "CHG-2"})
    assert "REASON" in op(no_reason_change, 400)["result"]["message"]
    assert op(api.get(path, {"REASON": "check", "TICKETID": "CHG-1"}))["Details"] == {
        "PASSWORD": "Fw-pass-77"
    }
    op(api.put(path, {"NEWPASSWORD": "Fw-pass-88", "REASON": "rotation", "TICKETID": "CHG-2"}))
    change = audit_rows(world.services, "change password")[-1]
    assert change.reason == "rotation (ticket CHG-2)"


def test_change_password_local_and_remote(world: World) -> None:
    api = world.api("app-padmin")
    op(
        api.post(
            "/resources",
            {"RESOURCENAME": "chg-web", "ACCOUNTNAME": "deploy", "PASSWORD": "Old-pass-11"},
        )
    )
    rid, aid = api.ids("chg-web", "deploy")
    path = f"/resources/{rid}/accounts/{aid}/password"
    done = op(
        api.put(path, {"NEWPASSWORD": "New-pass-22", "RESETTYPE": "LOCAL", "REASON": "rotation"})
    )
    assert done == {
        "name": "CHANGE PASSWORD",
        "result": {"status": "Success", "message": "Password changed successfully"},
    }
    assert op(api.get(path))["Details"]["PASSWORD"] == "New-pass-22"
    change = audit_rows(world.services, "change password")[-1]
    assert change.username == "app-padmin" and change.reason == "rotation"
    # RESETTYPE defaults to LOCAL
    op(api.put(path, {"NEWPASSWORD": "New-pass-33"}))
    assert op(api.get(path))["Details"]["PASSWORD"] == "New-pass-33"
    remote = api.put(path, {"NEWPASSWORD": "Remote-pass-44", "RESETTYPE": "REMOTE"})
    assert remote.status == 501
    message = op(remote, 501)["result"]["message"]
    assert "remote password reset is not available yet" in message.lower()
    assert op(api.get(path))["Details"]["PASSWORD"] == "New-pass-33"
    # a password that breaks the policy is refused with the rule, and nothing changes
    weak = api.put(path, {"NEWPASSWORD": "ab"})
    assert weak.status == 400 and "at least" in op(weak, 400)["result"]["message"]
    assert op(api.get(path))["Details"]["PASSWORD"] == "New-pass-33"


def test_remote_reset_is_refused_first_to_a_caller_who_may_not_change_the_password(
    world: World,
) -> None:
    """RESETTYPE REMOTE answers 501 only to a caller who could make the change: a View-only
    share gets the same 403 as a LOCAL change (audited as a refusal), an account not
    shared the same 404."""
    owner = world.api("app-padmin")
    rid, aid = one_account(owner, "rmt-view", "Rmt-pass-11")
    uid = op(owner.get("/user/getUserId", query={"USERNAME": "app-padmin2"}))["Details"]["USERID"]
    op(owner.put(f"/resources/{rid}/accounts/{aid}/share", {"ACCESSTYPE": "view", "USERID": uid}))
    viewer = world.api("app-padmin2")
    path = f"/resources/{rid}/accounts/{aid}/password"
    local = viewer.put(path, {"NEWPASSWORD": "Rmt-pass-22", "RESETTYPE": "LOCAL"})
    remote = viewer.put(path, {"NEWPASSWORD": "Rmt-pass-22", "RESETTYPE": "REMOTE"})
    assert op(remote, 403)["result"]["message"] == op(local, 403)["result"]["message"]
    assert "(View) does not allow changing this password" in op(remote, 403)["result"]["message"]
    assert op(remote, 403)["name"] == "CHANGE PASSWORD"
    deadline = time.monotonic() + 5  # refusals are audited in the background
    while time.monotonic() < deadline:
        refused = [r for r in audit_rows(world.services, "refused") if r.username == "app-padmin2"]
        if len(refused) >= 2:
            break
        time.sleep(0.05)
    assert [r.target for r in refused[-2:]] == [f"PUT /restapi/json/v1{path}"] * 2
    # not shared at all, or no such account: 404, as for a LOCAL change
    rid2, aid2 = one_account(owner, "rmt-private", "Rmt-pass-33")
    unshared = viewer.put(
        f"/resources/{rid2}/accounts/{aid2}/password",
        {"NEWPASSWORD": "Rmt-pass-44", "RESETTYPE": "REMOTE"},
    )
    assert op(unshared, 404)["result"]["message"] == f"no account with id {aid2}"
    missing = viewer.put(
        f"/resources/{rid}/accounts/99999/password",
        {"NEWPASSWORD": "Rmt-pass-44", "RESETTYPE": "REMOTE"},
    )
    op(missing, 404)
    # with Modify, REMOTE is still not available, and nothing changed
    op(owner.put(f"/resources/{rid}/accounts/{aid}/share", {"ACCESSTYPE": "modify", "USERID": uid}))
    op(viewer.put(path, {"NEWPASSWORD": "Rmt-pass-22", "RESETTYPE": "REMOTE"}), 501)
    assert op(owner.get(path))["Details"]["PASSWORD"] == "Rmt-pass-11"


def test_create_generates_a_password_from_the_policy(world: World) -> None:
    api = world.api("app-padmin")
    op(
        api.post(
            "/resources",
            {"RESOURCENAME": "gen-host", "ACCOUNTNAME": "root", "ACCOUNTPASSWORDPOLICY": "Strong"},
        )
    )
    rid, aid = api.ids("gen-host", "root")
    password = op(api.get(f"/resources/{rid}/accounts/{aid}/password"))["Details"]["PASSWORD"]
    strong = next(
        p for p in world.services.policies.list_policies(world.admin) if p.name == "Strong"
    )
    check_password(strong, password)  # raises if the generated password broke the policy
    unknown = api.post("/resources", {"RESOURCENAME": "gen-2", "RESOURCEPASSWORDPOLICY": "Nope"})
    assert unknown.status == 400 and "Nope" in op(unknown, 400)["result"]["message"]
    assert api.get("/resources/resourcename/gen-2").status == 404


def test_create_with_custom_fields_and_duplicate_name(world: World) -> None:
    api = world.api("app-padmin")
    op(api.post("/resources", {"RESOURCENAME": "dup-1"}))
    dup = api.post("/resources", {"RESOURCENAME": "dup-1"})
    assert dup.status == 409 and op(dup, 409)["name"] == "CREATE RESOURCE"
    # a custom field the administrator has not defined is refused, nothing is created
    bad = api.post(
        "/resources",
        {
            "RESOURCENAME": "cf-1",
            "RESOURCECUSTOMFIELD": [{"CUSTOMLABEL": "Rack", "CUSTOMVALUE": "4"}],
        },
    )
    assert bad.status == 400 and "Rack" in op(bad, 400)["result"]["message"]
    assert api.get("/resources/resourcename/cf-1").status == 404
    world.services.users.define_field(world.admin, "127.0.0.1", "resource", "Rack", "text")
    op(
        api.post(
            "/resources",
            {
                "RESOURCENAME": "cf-1",
                "RESOURCECUSTOMFIELD": [{"CUSTOMLABEL": "Rack", "CUSTOMVALUE": "4"}],
            },
        )
    )
    rid = op(api.get("/resources/resourcename/cf-1"))["Details"]["RESOURCEID"]
    fields = op(api.get(f"/resources/{rid}/accounts"))["Details"]["CUSTOM FIELD"]
    assert fields == [
        {
            "CUSTOMFIELDLABEL": "Rack",
            "CUSTOMFIELDVALUE": "4",
            "CUSTOMFIELDTYPE": "Character",
            "CUSTOMFIELDCOLUMNNAME": "Rack",
        }
    ]


def test_add_accounts_reports_each_one(world: World) -> None:
    api = world.api("app-padmin")
    op(
        api.post(
            "/resources",
            {"RESOURCENAME": "add-srv", "ACCOUNTNAME": "root", "PASSWORD": "Root-pass-1"},
        )
    )
    rid = op(api.get("/resources/resourcename/add-srv"))["Details"]["RESOURCEID"]
    o = op(
        api.post(
            f"/resources/{rid}/accounts",
            {
                "ACCOUNTLIST": [
                    {"ACCOUNTNAME": "app", "PASSWORD": "App-pass-12", "NOTES": "service"},
                    {"ACCOUNTNAME": "root", "PASSWORD": "Other-pass-3"},
                    {"ACCOUNTNAME": "gen"},
                ]
            },
        )
    )
    assert o["name"] == "ADD ACCOUNTS" and o["result"]["message"] == "2 of 3 account(s) added"
    assert o["Details"] == [
        {"app": {"STATUS": "Account added successfully"}},
        {"root": {"STATUS": "Account already exists; not added"}},
        {"gen": {"STATUS": "Account added successfully"}},
    ]
    accounts = op(api.get(f"/resources/{rid}/accounts"))["Details"]["ACCOUNT LIST"]
    assert sorted(a["ACCOUNT NAME"] for a in accounts) == ["app", "gen", "root"]
    _, root = api.ids("add-srv", "root")
    assert op(api.get(f"/resources/{rid}/accounts/{root}/password"))["Details"]["PASSWORD"] == (
        "Root-pass-1"
    )
    all_dup = api.post(f"/resources/{rid}/accounts", {"ACCOUNTLIST": [{"ACCOUNTNAME": "app"}]})
    assert all_dup.status == 409
    assert op(all_dup, 409)["Details"] == [{"app": {"STATUS": "Account already exists; not added"}}]


def test_ids_by_name_in_both_forms(world: World) -> None:
    api = world.api("app-padmin")
    op(api.post("/resources", {"RESOURCENAME": "Mail Server/EU", "ACCOUNTNAME": "post master"}))
    by_query = op(
        api.get(
            "/resources/getResourceIdAccountId",
            query={"RESOURCENAME": "Mail Server/EU", "ACCOUNTNAME": "post master"},
        )
    )
    assert by_query["name"] == "GET_RESOURCEACCOUNTID"
    ids = by_query["Details"]
    assert set(ids) == {"RESOURCEID", "ACCOUNTID"} and all(v.isdigit() for v in ids.values())
    by_input = op(
        api.get(
            "/resources/getResourceIdAccountId",
            {"RESOURCENAME": "Mail Server/EU", "ACCOUNTNAME": "post master"},
        )
    )
    assert by_input["Details"] == ids
    by_path = op(
        api.get("/resources/resourcename/Mail%20Server%2FEU/accounts/accountname/post%20master")
    )
    assert by_path["name"] == "GET_RESOURCEACCOUNTID" and by_path["Details"] == ids
    rid = op(api.get("/resources/resourcename/Mail%20Server%2FEU"))
    assert rid["name"] == "GET_RESOURCEID"
    assert rid["Details"] == {"RESOURCEID": ids["RESOURCEID"]}
    missing = api.get("/resources/resourcename/Mail%20Server%2FEU/accounts/accountname/nobody")
    assert missing.status == 404 and op(missing, 404)["name"] == "GET_RESOURCEACCOUNTID"


def test_delete_resource_moves_it_to_the_trash(world: World) -> None:
    api = world.api("app-padmin")
    op(
        api.post(
            "/resources", {"RESOURCENAME": "del-me", "ACCOUNTNAME": "x", "PASSWORD": "Del-pass-1"}
        )
    )
    rid, aid = api.ids("del-me", "x")
    o = op(api.delete(f"/resources/{rid}"))
    assert o["name"] == "DELETE RESOURCE" and "Details" not in o
    gone = api.get(f"/resources/{rid}/accounts/{aid}/password")
    assert gone.status == 404
    assert "del-me" not in api.get("/resources").text
    assert "del-me" in [r.name for r in world.services.vault.list_trash(world.admin)]
    assert api.delete(f"/resources/{rid}").status == 404


def test_share_account_with_a_user_by_id(world: World) -> None:
    owner = world.api("app-padmin")
    reader = world.api("app-user")
    op(
        owner.post(
            "/resources", {"RESOURCENAME": "shr-db", "ACCOUNTNAME": "ro", "PASSWORD": "Ro-pass-55"}
        )
    )
    rid, aid = owner.ids("shr-db", "ro")
    assert reader.get(f"/resources/{rid}/accounts/{aid}/password").status == 404
    uid = op(owner.get("/user/getUserId", query={"USERNAME": "app-user"}))
    assert uid["name"] == "GET_USERID" and uid["Details"]["USERID"].isdigit()
    shared = op(
        owner.put(
            f"/resources/{rid}/accounts/{aid}/share",
            {"ACCESSTYPE": "view", "USERID": uid["Details"]["USERID"]},
        )
    )
    assert shared["name"] == "SHARE ACCOUNT" and shared["result"]["status"] == "Success"
    listed = op(reader.get("/resources"))
    assert [r["RESOURCE NAME"] for r in listed["Details"]] == ["shr-db"]
    assert op(reader.get(f"/resources/{rid}/accounts/{aid}/password"))["Details"] == {
        "PASSWORD": "Ro-pass-55"
    }
    # view does not allow a change
    refused = reader.put(f"/resources/{rid}/accounts/{aid}/password", {"NEWPASSWORD": "Rw-pass-66"})
    assert refused.status == 403
    op(
        owner.put(
            f"/resources/{rid}/accounts/{aid}/share",
            {"ACCESSTYPE": "modify", "USERID": uid["Details"]["USERID"]},
        )
    )
    op(reader.put(f"/resources/{rid}/accounts/{aid}/password", {"NEWPASSWORD": "Rw-pass-66"}))
    op(
        owner.put(
            f"/resources/{rid}/accounts/{aid}/share",
            {"ACCESSTYPE": "revoke", "USERID": uid["Details"]["USERID"]},
        )
    )
    assert reader.get(f"/resources/{rid}/accounts/{aid}/password").status == 404
    assert op(reader.get("/resources"))["totalRows"] == 0


def test_roles_are_enforced_with_the_operation_name_kept(world: World) -> None:
    user = world.api("app-user")
    refused = user.post("/resources", {"RESOURCENAME": "not-allowed"})
    assert refused.status == 403
    assert op(refused, 403)["name"] == "CREATE RESOURCE"
    assert "Password User" in op(refused, 403)["result"]["message"]
    # and audited (off the event loop, after the answer)
    deadline = time.monotonic() + 10
    rows: list[AuditRow] = []
    while not rows and time.monotonic() < deadline:
        rows = [
            r
            for r in audit_rows(world.services, "refused")
            if (r.username, r.target) == ("app-user", "POST /restapi/json/v1/resources")
        ]
        time.sleep(0.05)
    assert len(rows) == 1
    assert "Password User" in rows[0].detail and rows[0].result == "failure"
    # an auditor may look a user up (to pass on a Full share), not manage one
    looked_up = world.api("app-auditor").get("/user/getUserId", query={"USERNAME": "admin"})
    assert op(looked_up)["Details"]["USERID"].isdigit()
    assert world.api("app-admin").get("/resources/resourcename/not-allowed").status == 404


def test_every_fetch_writes_one_audit_row_and_stores_nothing_secret(world: World) -> None:
    api = world.api("app-padmin")
    rid, aid = one_account(api, "aud-1", "Aud-secret-1")
    before = len(audit_rows(world.services, "view password"))
    for _ in range(3):
        op(api.get(f"/resources/{rid}/accounts/{aid}/password"))
    assert len(audit_rows(world.services, "view password")) == before + 3
    with world.services.store.sessions() as s:
        stored = s.scalars(select(Account.password_ct).where(Account.id == int(aid))).one()
    assert stored is not None and b"Aud-secret-1" not in stored


def test_get_password_fails_closed_when_the_audit_cannot_be_written(world: World) -> None:
    api = world.api("app-padmin")
    rid, aid = one_account(api, "fc-1", "Fc-secret-1")
    before = len(audit_rows(world.services, "view password"))
    with world.services.store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_head RENAME TO audit_head_away"))
    try:
        resp = api.get(f"/resources/{rid}/accounts/{aid}/password")
        failed = op(resp, expect=500)
        assert "audit trail could not be written" in failed["result"]["message"]
        assert b"Fc-secret-1" not in resp.body
    finally:
        with world.services.store.engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_head_away RENAME TO audit_head"))
    assert len(audit_rows(world.services, "view password")) == before
    assert op(api.get(f"/resources/{rid}/accounts/{aid}/password"))["Details"] == {
        "PASSWORD": "Fc-secret-1"
    }


def test_get_password_fails_closed_when_the_audit_row_insert_fails(world: World) -> None:
    """The batch insert of the audit rows runs on the DB-API cursor: its failure (here a
    trigger that refuses it, as a full disk would) still fails the fetch closed."""
    api = world.api("app-padmin")
    rid, aid = one_account(api, "fc-2", "Fc-secret-2")
    before = len(audit_rows(world.services, "view password"))
    with world.services.store.engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log "
                "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
            )
        )
    try:
        resp = api.get(f"/resources/{rid}/accounts/{aid}/password")
        failed = op(resp, expect=500)
        assert "audit trail could not be written" in failed["result"]["message"]
        assert b"Fc-secret-2" not in resp.body and b"disk is full" not in resp.body
    finally:
        with world.services.store.engine.begin() as conn:
            conn.execute(text("DROP TRIGGER refuse_audit"))
    assert len(audit_rows(world.services, "view password")) == before
    detail = op(api.get(f"/resources/{rid}/accounts/{aid}"))["Details"]
    assert detail["LAST ACCESSED TIME"] == "N/A"  # the batch rolled back as a whole
    assert op(api.get(f"/resources/{rid}/accounts/{aid}/password"))["Details"] == {
        "PASSWORD": "Fc-secret-2"
    }


def test_add_accounts_stops_at_a_failed_write_and_says_which_were_added(world: World) -> None:
    """ADD ACCOUNTS adds each account in its own transaction. When a write fails after
    some were added (here the audit row's insert, refused as by a full disk), the reply
    says which were added and which were not, instead of a bare failure; with none added,
    the call fails as a whole."""
    api = world.api("app-padmin")
    rid, _aid = one_account(api, "aa-stop", "Aa-secret-1")
    with world.services.store.engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log "
                "WHEN NEW.target LIKE '%stop-here%' "
                "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
            )
        )
    try:
        names = ["kept-1", "stop-here", "after-stop"]
        resp = api.post(
            f"/resources/{rid}/accounts", {"ACCOUNTLIST": [{"ACCOUNTNAME": n} for n in names]}
        )
        o = op(resp)
        assert o["result"]["message"] == "1 of 3 account(s) added"
        [kept, stopped, after] = o["Details"]
        assert kept == {"kept-1": {"STATUS": "Account added successfully"}}
        assert stopped["stop-here"]["STATUS"].startswith("Not added: ")
        assert after["after-stop"]["STATUS"] == stopped["stop-here"]["STATUS"]
        assert "disk is full" not in resp.text
        alone = api.post(
            f"/resources/{rid}/accounts", {"ACCOUNTLIST": [{"ACCOUNTNAME": "stop-here-2"}]}
        )
        assert op(alone, 500)["result"]["status"] == "Failed"
    finally:
        with world.services.store.engine.begin() as conn:
            conn.execute(text("DROP TRIGGER refuse_audit"))
    listed = op(api.get(f"/resources/{rid}/accounts"))["Details"]["ACCOUNT LIST"]
    assert sorted(a["ACCOUNT NAME"] for a in listed) == ["a", "kept-1"]


def test_concurrent_fetches_each_get_their_password_and_audit_row(world: World) -> None:
    """Fetches that arrive together share a commit of their audit rows; each still gets
    its own account's password, and the audit chain verifies."""
    api = world.api("app-padmin")
    ids = [one_account(api, f"cc-{n}", f"Cc-secret-{n}") for n in range(4)]
    before = len(audit_rows(world.services, "view password"))
    wrong: list[str] = []

    def client(k: int) -> None:
        mine = world.api("app-padmin")
        for i in range(8):
            n = (k + i) % 4
            rid, aid = ids[n]
            got = op(mine.get(f"/resources/{rid}/accounts/{aid}/password"))["Details"]
            if got != {"PASSWORD": f"Cc-secret-{n}"}:
                wrong.append(f"{n}: {got}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not wrong
    assert len(audit_rows(world.services, "view password")) == before + 12 * 8
    with world.services.store.sessions() as s:
        report = verify_chain(s, world.services.keyring.audit_hmac_key)
    assert report.ok, report.sentence()


def test_create_into_a_resource_group_and_for_another_owner(world: World) -> None:
    padmin = world.api("app-padmin")
    owner = world.services.api_tokens.authenticate(world.tokens["app-padmin"])
    assert owner is not None
    gid = world.services.resource_groups.create_group(owner, "127.0.0.1", "Web farm")
    op(padmin.post("/resources", {"RESOURCENAME": "grp-web1", "RESOURCEGROUPNAME": "Web farm"}))
    detail = world.services.resource_groups.get_group(owner, gid)
    assert [name for _id, name in detail.resources] == ["grp-web1"]
    # a group the caller cannot see gets the same answer as one that does not exist
    other = world.api("app-padmin2")
    hidden = other.post("/resources", {"RESOURCENAME": "grp-x", "RESOURCEGROUPNAME": "Web farm"})
    nothing = other.post("/resources", {"RESOURCENAME": "grp-x", "RESOURCEGROUPNAME": "No farm"})
    assert op(hidden, 400)["result"]["message"].replace("Web farm", "G") == (
        op(nothing, 400)["result"]["message"].replace("No farm", "G")
    )
    assert other.get("/resources/resourcename/grp-x").status == 404

    admin = world.api("app-admin")
    op(
        admin.post(
            "/resources",
            {"RESOURCENAME": "own-db", "ACCOUNTNAME": "sa", "OWNERNAME": "app-padmin2"},
        )
    )
    # the new owner sees it; the creating administrator gained no access
    listed = op(other.get("/resources", {"SEARCHVALUE": "own-db"}))
    [row] = listed["Details"]
    rid = row["RESOURCE ID"]
    assert op(other.get(f"/resources/{rid}/accounts"))["Details"]["RESOURCE OWNER"] == "app-padmin2"
    assert admin.get(f"/resources/{rid}/accounts").status == 404
    # only a role that may transfer ownership may name another owner, and only an administrator
    refused = padmin.post("/resources", {"RESOURCENAME": "own-2", "OWNERNAME": "app-padmin2"})
    op(refused, 403)
    not_admin = admin.post("/resources", {"RESOURCENAME": "own-3", "OWNERNAME": "app-user"})
    assert "Administrator" in op(not_admin, 400)["result"]["message"]
    nobody = admin.post("/resources", {"RESOURCENAME": "own-4", "OWNERNAME": "nobody"})
    assert "OWNERNAME" in op(nobody, 400)["result"]["message"]
    everything = {
        r.name for r in world.services.vault.list_resources(world.admin, limit=1000).items
    }
    assert "own-db" in everything and not {"own-2", "own-3", "own-4"} & everything


def test_create_into_a_group_is_one_step_that_fails_whole(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resource and its group membership are written together: when the group step
    is refused (here the caller's Modify share on the group is cut to View after the
    group was looked up by name, as a concurrent change would), no resource is left."""
    groups = world.services.resource_groups
    gid = groups.create_group(world.admin, "127.0.0.1", "Shared farm")
    padmin2 = world.services.api_tokens.authenticate(world.tokens["app-padmin2"])
    assert padmin2 is not None
    world.services.sharing.share_group(world.admin, "127.0.0.1", gid, "modify", user_id=padmin2.id)
    api = world.api("app-padmin2")
    op(api.post("/resources", {"RESOURCENAME": "farm-1", "RESOURCEGROUPNAME": "Shared farm"}))
    real_list = groups.list_groups

    def list_then_cut_to_view(actor: Any) -> Any:
        found = real_list(actor)
        world.services.sharing.share_group(
            world.admin, "127.0.0.1", gid, "view", user_id=padmin2.id
        )
        return found

    monkeypatch.setattr(groups, "list_groups", list_then_cut_to_view)
    refused = api.post("/resources", {"RESOURCENAME": "farm-2", "RESOURCEGROUPNAME": "Shared farm"})
    message = op(refused, 403)["result"]["message"]
    assert message == "your access (View) does not allow changing this group (needs Modify)"
    assert api.get("/resources/resourcename/farm-2").status == 404
    everything = {
        r.name for r in world.services.vault.list_resources(world.admin, limit=1000).items
    }
    assert "farm-1" in everything and "farm-2" not in everything
    assert not [r for r in audit_rows(world.services, "add resource") if r.target == "farm-2"]
    assert [n for _i, n in groups.get_group(world.admin, gid).resources] == ["farm-1"]


def test_account_details_report_policy_compliance_without_the_password(world: World) -> None:
    api = world.api("app-padmin")
    op(
        api.post(
            "/resources", {"RESOURCENAME": "cmp-1", "ACCOUNTNAME": "a", "PASSWORD": "weakpass"}
        )
    )
    rid, aid = api.ids("cmp-1", "a")
    assert op(api.get(f"/resources/{rid}/accounts/{aid}"))["Details"]["COMPLIANT STATUS"] == (
        "Compliant"
    )
    owner = world.services.api_tokens.authenticate(world.tokens["app-padmin"])
    assert owner is not None
    strong = next(p for p in world.services.policies.list_policies(owner) if p.name == "Strong")
    world.services.vault.edit_account(
        owner, "127.0.0.1", int(aid), AccountChanges(password_policy_id=strong.id)
    )
    resp = api.get(f"/resources/{rid}/accounts/{aid}")
    d = op(resp)["Details"]
    assert d["PASSWORD POLICY"] == "Strong" and d["COMPLIANT STATUS"] == "Non-Compliant"
    assert "12 characters" in d["COMPLIANT REASON"]
    assert "weakpass" not in resp.text
    views = [r for r in audit_rows(world.services, "view password") if r.account_id == int(aid)]
    assert views == []  # checking compliance is not a view of the password


def test_requests_arriving_together_share_one_licence_check(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The REST API's licence check runs when its last pass is older than LICENCE_RECHECK:
    requests that arrive while it runs wait for that one check (and share its refusal)
    rather than each running their own."""
    licence = world.services.licence
    real = licence.require
    calls: list[Feature] = []
    refuse = threading.Event()

    def slow_require(feature: Feature) -> None:
        calls.append(feature)
        time.sleep(0.5)  # long enough for every request below to arrive meanwhile
        if refuse.is_set():
            raise LicenceError("The licence does not include the REST API (test)")
        real(feature)

    monkeypatch.setattr(licence, "require", slow_require)

    def together(count: int) -> list[tuple[int, dict[str, Any]]]:
        api_base._licence_checks.pop(id(world.services), None)  # the last pass expired
        apis = [world.api("app-user") for _ in range(count)]
        with ThreadPoolExecutor(count) as pool:
            replies = list(pool.map(lambda api: api.get("/resources"), apis))
        return [(r.status, r.json()["operation"]["result"]) for r in replies]

    answers = together(12)
    assert [status for status, _ in answers] == [200] * 12
    assert calls == [Feature.REST_API]
    refuse.set()
    answers = together(12)
    assert len(calls) == 2
    assert all(status == 403 for status, _ in answers), answers
    assert all("does not include the REST API" in result["message"] for _, result in answers)
    refuse.clear()
    assert together(1)[0][0] == 200  # a refused check is not trusted: the next one runs
    assert len(calls) == 3
