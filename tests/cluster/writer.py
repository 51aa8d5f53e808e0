"""A client that writes without pause through the VIP (run inside the client namespace).

Each write creates a resource with a unique name through the REST API. Every attempt is
one JSON line: name, start and end (monotonic seconds), whether it was acknowledged, the
node that answered (X-Strongroom-Node) and the node that relayed the answer, if one did
(X-Strongroom-Forwarded-By, during a switchover). Two threads write at once, so a split brain
would show as two nodes acknowledging at overlapping times. Stops when STOP_FILE exists.

    python writer.py URL CA_FILE TOKEN OUT_FILE STOP_FILE PREFIX [EXTRA_HEADERS_JSON]
"""

from __future__ import annotations

import http.client
import json
import ssl
import sys
import threading
import time
import urllib.parse
from pathlib import Path


def main() -> None:
    url, ca_file, token, out, stop, prefix = sys.argv[1:7]
    extra = json.loads(sys.argv[7]) if len(sys.argv) > 7 else {}
    host = urllib.parse.urlsplit(url).hostname or ""
    ctx = ssl.create_default_context(cafile=ca_file)
    lock = threading.Lock()
    sink = Path(out).open("a")
    stop_path = Path(stop)

    def write_one(name: str) -> dict[str, object]:
        details = {"RESOURCENAME": name, "RESOURCETYPE": "Linux"}
        body = urllib.parse.urlencode(
            {"INPUT_DATA": json.dumps({"operation": {"Details": details}})}
        )
        started = time.monotonic()
        record: dict[str, object] = {"name": name, "start": started, "acked": False}
        # A client that gives up on a silent server after 2 s and tries again.
        conn = http.client.HTTPSConnection(host, 7272, context=ctx, timeout=2)
        try:
            conn.request(
                "POST",
                "/restapi/json/v1/resources",
                body=body,
                headers={
                    **extra,
                    "AUTHTOKEN": token,
                    "Content-Type": "application/x-www-form-urlencoded",
                },
            )
            resp = conn.getresponse()
            data = resp.read()
            record["status"] = resp.status
            record["node"] = resp.getheader("X-Strongroom-Node") or ""
            record["via"] = resp.getheader("X-Strongroom-Forwarded-By") or ""
            if resp.status == 200:
                result = json.loads(data)["operation"]["result"]["status"]
                record["acked"] = result == "Success"
        except (OSError, ValueError, http.client.HTTPException) as exc:
            record["error"] = type(exc).__name__
        finally:
            conn.close()
        record["end"] = time.monotonic()
        return record

    def worker(tid: int) -> None:
        n = 0
        while not stop_path.exists():
            n += 1
            rec = write_one(f"{prefix}-{tid}-{n:06d}")
            with lock:
                sink.write(json.dumps(rec) + "\n")
                sink.flush()
            if not rec["acked"]:
                time.sleep(0.05)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
