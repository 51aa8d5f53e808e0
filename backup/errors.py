"""Errors of the backup package, all under one root.

Every message names the problem for the person who reads it (usually a DR operator at a
terminal) and never contains a secret.
"""

from __future__ import annotations

from node.errors import StrongroomError


class BackupError(StrongroomError):
    """Base of every error the backup package raises on purpose."""


class ArchiveError(BackupError):
    """The archive cannot be trusted: damaged, truncated, altered, unsafe or unknown format.
    Raised before anything is written, so the restore target is untouched."""


class WrongKeyError(ArchiveError):
    """The master key or recovery passphrase does not open this archive."""


class TargetNotEmptyError(BackupError):
    """The restore target already holds a vault and ``--force`` was not given."""


class TargetError(BackupError):
    """A storage target (directory or bucket) failed; the message names the target."""


class BackupBusyError(BackupError):
    """A backup is already running on this node."""
