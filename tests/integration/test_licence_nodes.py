"""Licences on running nodes: two node processes sharing one PostgreSQL database (as two data
nodes of a cluster share the replicated vault), a licence installed on one enforced on the
other without a restart, through the CLI, the REST API and the Admin > License page; and the
vendor's keygen / issue / offline install from the command line."""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.cli import main
from node.licence import Edition
from tests.helpers import Client, NodeProcess, Response, free_port, run_cli
from tests.licence_support import Vendor, run_launcher, run_trusting_cli, trusting_node

API = "/restapi/json/v1"


def api(client: Client, method: str, path: str, token: str, details: dict[str, str]) -> Response:
    form = {"INPUT_DATA": json.dumps({"operation": {"Details": details}})}
    body = urllib.parse.urlencode(form).encode()
    headers = {"AUTHTOKEN": token, "Content-Type": "application/x-www-form-urlencoded"}
    if method == "GET":
        return client.request("GET", f"{API}{path}", headers={"AUTHTOKEN": token})
    return client.request(method, f"{API}{path}", body=body, headers=headers)


def message(resp: Response) -> str:
    assert resp.headers.get("content-type", "").startswith("application/json"), (
        resp.status,
        resp.text[:500],
    )
    return str(resp.json()["operation"]["result"]["message"])


def upload(client: Client, path: str, filename: str, content: str) -> Response:
    boundary = "----sr" + secrets.token_hex(8)
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="_xsrf"\r\n\r\n{client.xsrf()}',
        f'--{boundary}\r\nContent-Disposition: form-data; name="licence_file"; '
        f'filename="{filename}"\r\nContent-Type: application/json\r\n\r\n{content}',
        f'--{boundary}\r\nContent-Disposition: form-data; name="licence_text"\r\n\r\n',
    ]
    body = ("\r\n".join(parts) + f"\r\n--{boundary}--\r\n").encode()
    return client.request(
        "POST",
        path,
        body=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )


def log_in_as_admin(client: Client, otp: str) -> None:
    assert client.login("admin", otp).status == 302
    new = "Licence-Admin-" + secrets.token_hex(6)
    resp = client.post_form("/change-password", {"current": otp, "new": new, "confirm": new})
    assert resp.status == 302, resp.text


@pytest.fixture
def vendor() -> Vendor:
    return Vendor()


@pytest.fixture
def two_nodes(
    tmp_path: Path, pg_url: str, vendor: Vendor
) -> Iterator[tuple[NodeProcess, NodeProcess]]:
    env = {
        "STRONGROOM_DATABASE_URL": pg_url,
        "STRONGROOM_MASTER_KEY_PATH": str(tmp_path / "keys" / "master.key"),
    }
    a = trusting_node(vendor, tmp_path / "a", free_port(), env)
    b = trusting_node(vendor, tmp_path / "b", free_port(), env)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        b.stop()
        a.stop()


def test_a_licence_installed_on_one_node_holds_on_the_other(
    two_nodes: tuple[NodeProcess, NodeProcess], vendor: Vendor, tmp_path: Path
) -> None:
    a, b = two_nodes
    added = run_trusting_cli(
        vendor, "apiuser", "add", "bot", "--role", "password_administrator", "--data-dir",
        str(b.data_dir),
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip().splitlines()[-1].strip()
    # The evaluation includes the REST API (asked of node A: node B has not passed a REST
    # API licence check yet, so it keeps none it may trust for a moment).
    assert api(a.client(), "GET", "/resources", token, {}).status == 200

    soon = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=5)
    standard = tmp_path / "standard.lic"
    standard.write_text(vendor.issue(edition=Edition.STANDARD, admins=1, expires=soon))
    done = run_trusting_cli(
        vendor, "licence", "install", str(standard), "--data-dir", str(a.data_dir)
    )
    assert done.returncode == 0, done.stderr
    assert "licence SR-TEST-1 installed for ACME Ltd" in done.stdout

    shown = run_trusting_cli(vendor, "licence", "show", "--json", "--data-dir", str(b.data_dir))
    assert shown.returncode == 0, (shown.stderr, b.stderr()[-3000:])
    status = json.loads(shown.stdout)
    assert (status["edition"], status["licensee"], status["admins_allowed"]) == (
        "standard", "ACME Ltd", 1,
    )  # fmt: skip
    assert status["warnings"][0]["level"] == "warn"
    text = run_trusting_cli(vendor, "licence", "show", "--data-dir", str(b.data_dir)).stdout
    assert "Edition:        Standard" in text and "WARN: " in text
    assert re.search(r"expires in [45] days", text)  # 4 if midnight UTC has just passed

    refused = api(b.client(), "GET", "/resources", token, {})
    assert refused.status == 403
    assert message(refused).startswith("The licence does not include the REST API")

    # On node B, the administrator sees the warning banner and installs Enterprise by upload.
    browser = b.client()
    log_in_as_admin(browser, a.initial_password())
    home = browser.get("/")
    assert re.search(r"expires in [45] days", home.text)
    assert 'class="banner licence warn"' in home.text
    page = browser.get("/admin/license")
    assert page.status == 200 and "Standard" in page.text and "ACME Ltd" in page.text
    # The console refuses a 2nd administrator, naming the licence; other users are fine.
    form = {"username": "admin2", "full_name": "", "email": "", "role": "administrator"}
    refused_admin = browser.post_form("/users/new", form)
    assert refused_admin.status == 403
    assert "The licence does not allow a 2nd administrator" in refused_admin.text
    form.update(username="user2", role="password_user")
    assert browser.post_form("/users/new", form).status == 200
    tampered = vendor.issue(edition=Edition.ENTERPRISE, admins=5, resources=2).replace(
        '"resources": 2', '"resources": 200'
    )
    bad = upload(browser, "/admin/license", "enterprise.lic", tampered)
    assert bad.status == 400 and "signature does not match" in bad.text
    good = upload(
        browser,
        "/admin/license",
        "enterprise.lic",
        vendor.issue(edition=Edition.ENTERPRISE, admins=5, resources=2, licence_id="SR-TEST-2"),
    )
    assert good.status == 302 and good.headers["location"] == "/admin/license?installed=1"

    # Node A enforces it at once: the API is back, and the third resource is refused.
    for name in ("r1", "r2"):
        resp = api(a.client(), "POST", "/resources", token, {"RESOURCENAME": name})
        assert resp.status == 200, resp.text
    third = api(a.client(), "POST", "/resources", token, {"RESOURCENAME": "r3"})
    assert third.status == 403
    assert message(third).startswith("The licence does not allow a 3rd resource")
    page = browser.get("/admin/license")
    assert re.search(r'id="licence-resources">2 of 2<', page.text), page.text
    assert "SR-TEST-2" in page.text and "Enterprise" in page.text


def test_a_new_node_runs_the_evaluation_and_says_so(node: NodeProcess) -> None:
    c = node.client()
    assert c.get("/admin/license").status == 302  # to the login page
    log_in_as_admin(c, node.initial_password())
    page = c.get("/admin/license")
    assert page.status == 200
    assert re.search(r'id="licence-edition">Enterprise \(30-day evaluation\)<', page.text)
    assert re.search(r'id="licence-admins">1 of 5 allowed<', page.text)
    home = c.get("/")
    assert 'class="banner licence notice"' in home.text
    assert re.search(r"evaluation ends in (30|29) days", home.text)  # 29 past midnight UTC
    assert re.search(r"Licence: The 30-day evaluation ends in (30|29) days", node.stdout())
    pasted = c.post_form("/admin/license", {"licence_text": "my-licence <garbled>"})
    assert pasted.status == 400 and "not a Strongroom licence (not JSON)" in pasted.text
    assert ">\nmy-licence &lt;garbled&gt;</textarea>" in pasted.text  # kept, escaped
    assert c.post_form("/admin/license", {"licence_text": ""}).status == 400


def test_vendor_keygen_issue_and_offline_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "vendor.pem"
    assert main(["licence", "keygen", "--output", str(key)]) == 0
    made = capsys.readouterr()
    assert key.stat().st_mode & 0o777 == 0o600
    public = re.search(r"public key: ([0-9a-f]{64})", made.out)
    assert public
    assert main(["licence", "keygen", "--output", str(key)]) == 1
    assert "exists already" in capsys.readouterr().err

    lic_file = tmp_path / "globex.lic"
    issue = [
        "licence", "issue", "--private-key", str(key), "--licensee", "Globex", "--edition",
        "premium", "--admins", "12", "--resources", "300", "--type", "subscription",
        "--expires", "2099-06-30", "--output", str(lic_file),
    ]  # fmt: skip
    assert main(issue) == 0
    assert "not one of the vendor keys built into this release" in capsys.readouterr().err
    assert json.loads(lic_file.read_text())["payload"]["licensee"] == "Globex"
    assert main(issue[:-2]) == 0  # without --output: to stdout
    assert json.loads(capsys.readouterr().out)["payload"]["edition"] == "premium"
    gold = ["gold" if a == "premium" else a for a in issue]
    assert main([*gold[:-1], str(tmp_path / "gold.lic")]) == 1
    assert "unknown edition 'gold'" in capsys.readouterr().err
    no_expiry = [a for a in issue if a not in ("--expires", "2099-06-30")]
    assert main([*no_expiry[:-1], str(tmp_path / "x.lic")]) == 1
    assert "needs an expiry date" in capsys.readouterr().err

    # A release that lists the new key (here: the test launcher) accepts it; no node runs,
    # so install and show open the data directory offline.
    data = str(tmp_path / "data")
    NodeProcess(tmp_path / "data", free_port()).start().stop()  # a vault that exists
    done = run_launcher(public.group(1), "licence", "install", str(lic_file), "--data-dir", data)
    assert done.returncode == 0, done.stderr
    assert "Edition:        Premium" in done.stdout and "Resources:      0 of 300" in done.stdout
    # This release does not trust that key: the stored licence is not used, and it says so.
    untrusted = run_cli("licence", "show", "--data-dir", data)
    assert "The installed licence cannot be used" in untrusted.stdout
    assert "Edition:        Enterprise (30-day evaluation)" in untrusted.stdout
