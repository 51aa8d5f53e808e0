"""The ``strongroom`` command.

Each verb lives in a module listed in ``COMMAND_MODULES``; a module's ``register(sub,
common)`` adds its sub-parsers and sets ``func`` (``args -> exit code``). Every verb that
acts on a node takes the common ``--config`` and ``--data-dir`` options. Verbs that change a
running node's state go through its control socket; when no node runs there, they open the
data directory themselves under the node's lock.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from node import __version__
from node.errors import StrongroomError

COMMAND_MODULES = [
    "appliance.cmd_audit",
    "appliance.cmd_node",
    "appliance.cmd_api",
    "appliance.cmd_licence",
    "appliance.cmd_backup",
    "appliance.cmd_cluster",
]

EXIT_USAGE = 2
EXIT_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    from appliance.context import common_parser

    parser = argparse.ArgumentParser(
        prog="strongroom", description="Strongroom privileged password vault"
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    common = common_parser()
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except StrongroomError as exc:
        from node.errors import ConfigError

        print(f"strongroom: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def version_text() -> str:
    return f"strongroom {__version__}"


if __name__ == "__main__":
    sys.exit(main())
