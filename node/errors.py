"""One root error for the vault core, and a small tree below it.

Messages are written for the person who reads them: they name the problem and never
contain a secret. Handlers turn these into HTTP statuses; the CLI prints them on one line.
"""

from __future__ import annotations


class StrongroomError(Exception):
    """Base of every error the vault core raises on purpose."""


class FatalError(StrongroomError):
    """The only kind allowed to stop a node: it cannot run safely as configured."""


class ConfigError(FatalError):
    """A setting is unknown, ill-typed or out of range."""


class KeyFileError(FatalError):
    """The master key file is missing, unreadable, too open or does not fit the data."""


class StoreError(FatalError):
    """The database cannot be opened or migrated."""


class DecryptionError(StrongroomError):
    """A ciphertext could not be decrypted. Deliberately says nothing about why."""

    def __init__(self) -> None:
        super().__init__("stored secret could not be decrypted")


class ValidationError(StrongroomError):
    """Input that breaks a rule; the message names the rule."""


class NotFoundError(StrongroomError):
    """The object does not exist, or the caller may not know that it does."""


class PermissionDeniedError(StrongroomError):
    """The caller is not allowed to do this."""


class AuthenticationError(StrongroomError):
    """Login failed. The message is the same for an unknown user and a wrong password."""

    def __init__(self, message: str = "Invalid username or password.") -> None:
        super().__init__(message)


class AccountLockedError(AuthenticationError):
    """Too many failed logins; the account is locked for a while."""


class ConflictError(StrongroomError):
    """The object already exists, or the change conflicts with the current state."""


AUDIT_NOT_WRITTEN = "the audit trail could not be written, so the operation was not carried out"


class AuditWriteError(StrongroomError):
    """The audit row could not be written, so the audited operation did not happen."""


class NotPrimaryError(StrongroomError):
    """This node does not accept writes now (a standby, or a primary without quorum)."""

    def __init__(self, message: str, primary: str | None = None) -> None:
        super().__init__(message)
        self.primary = primary


class LicenceError(StrongroomError):
    """The licence does not allow this; the message names the licence as the reason."""
