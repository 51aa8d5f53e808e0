"""A browser-like session through the VIP, run inside the client namespace.

    python session_client.py login URL OTP NEW_PASSWORD COOKIE_FILE
    python session_client.py check URL COOKIE_FILE
    python session_client.py write URL COOKIE_FILE OUT_FILE STOP_FILE PREFIX

``login`` logs in as admin with the one-time password, sets a new one and keeps the session
cookie; ``check`` opens the home page with that cookie and prints the HTTP status (200: still
logged in; a redirect to /login: the session was lost). ``write`` adds resources through the
console's form (session cookie and XSRF token, as a browser does) until STOP_FILE exists,
one JSON line per attempt: name, start, end, status, whether it was added (a redirect to the
new resource's page), the answering node and the relaying one.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.helpers import Client  # noqa: E402


def main() -> None:
    verb, url = sys.argv[1], sys.argv[2]
    u = urllib.parse.urlsplit(url)
    client = Client(u.hostname or "", u.port or 7272)
    if verb == "login":
        otp, new, cookie_file = sys.argv[3:6]
        assert client.login("admin", otp).status == 302
        fields = {"current": otp, "new": new, "confirm": new}
        assert client.post_form("/change-password", fields).status == 302
        home = client.get("/")
        Path(cookie_file).write_text(json.dumps(client.cookies))
        print(home.status)
    elif verb == "write":
        client.cookies = json.loads(Path(sys.argv[3]).read_text())
        out, stop, prefix = Path(sys.argv[4]), Path(sys.argv[5]), sys.argv[6]
        n = 0
        with out.open("a") as sink:
            while not stop.exists():
                n += 1
                name = f"{prefix}-{n:06d}"
                record: dict[str, object] = {"name": name, "start": time.monotonic()}
                try:
                    fields = {"name": name, "resource_type": "Generic"}
                    resp = client.post_form("/resources/new", fields)
                    location = resp.headers.get("location", "")
                    record["status"] = resp.status
                    record["acked"] = resp.status == 302 and location.startswith("/resources/")
                    record["node"] = resp.headers.get("x-strongroom-node", "")
                    record["via"] = resp.headers.get("x-strongroom-forwarded-by", "")
                except OSError as exc:
                    record["acked"] = False
                    record["error"] = type(exc).__name__
                record["end"] = time.monotonic()
                sink.write(json.dumps(record) + "\n")
                sink.flush()
    else:
        client.cookies = json.loads(Path(sys.argv[3]).read_text())
        home = client.get("/")
        print(home.status, home.headers.get("location", ""))


if __name__ == "__main__":
    main()
