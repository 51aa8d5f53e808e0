"""A browser-like session through the VIP, run inside the client namespace.

    python session_client.py login URL OTP NEW_PASSWORD COOKIE_FILE
    python session_client.py check URL COOKIE_FILE

``login`` logs in as admin with the one-time password, sets a new one and keeps the session
cookie; ``check`` opens the home page with that cookie and prints the HTTP status (200: still
logged in; a redirect to /login: the session was lost).
"""

from __future__ import annotations

import json
import sys
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
    else:
        client.cookies = json.loads(Path(sys.argv[3]).read_text())
        home = client.get("/")
        print(home.status, home.headers.get("location", ""))


if __name__ == "__main__":
    main()
