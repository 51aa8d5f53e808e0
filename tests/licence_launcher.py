"""Test-only launcher: runs the ``strongroom`` CLI in a process that trusts a test vendor key.

    python tests/licence_launcher.py PUBLIC_KEY_HEX <strongroom arguments...>

It replaces the built-in tuple of vendor public keys in this process only, then calls the
CLI's own ``main``. This file lives under tests/, which is not part of the installed
product (pyproject's package list holds only node, cluster, backup, web and appliance), and
the product has no setting, environment variable or file that changes the trusted keys: a
production node can only trust the keys compiled into node/licence.py. A test that needs a
node to accept licences it signed starts that node through this launcher.
"""

from __future__ import annotations

import re
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not re.fullmatch(r"[0-9a-f]{64}", argv[0]):
        print("usage: licence_launcher.py PUBLIC_KEY_HEX ARGS...", file=sys.stderr)
        return 2
    from node import licence

    licence.VENDOR_PUBLIC_KEYS = (argv[0],)
    from appliance.cli import main as cli_main

    return cli_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
