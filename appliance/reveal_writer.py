"""The audit writer process of ``strongroom serve`` (node/reveal_writer.py):
``python -m appliance.reveal_writer IN_FD OUT_FD``, started by the node, never by hand.

Its first frame is its configuration: the database URL, the audit key and where to log.
It stops when the node closes its pipe (or exits), after writing what it holds; SIGINT and
SIGTERM are ignored, so that a Ctrl-C or a service stop reaching the whole process group
does not cut a batch short: the node decides when it ends.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

from appliance.logs import setup_logging
from node.reveal_writer import read_frames, serve_writes

log = logging.getLogger("strongroom.reveals")


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    in_fd, out_fd = int(argv[0]), int(argv[1])
    frames = read_frames(in_fd)
    config = next(frames, None)
    if not isinstance(config, dict):
        return 2  # the node went away before saying anything
    log_file = config.get("log_file")
    setup_logging(str(config.get("log_level", "INFO")), Path(log_file) if log_file else None)
    try:
        serve_writes(frames, out_fd, config)
    except Exception:  # noqa: BLE001 - logged; the node fails what was not answered
        log.exception("the audit writer process failed")
        return 1
    finally:
        os.close(out_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
