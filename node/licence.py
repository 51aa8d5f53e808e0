"""Licences: the editions table, the feature gate table, signed licence files, and what a
vault may do at a given moment (its *entitlement*).

A licence file is a small JSON document::

    {"format": "strongroom-licence/1",
     "key": "<id of the signing key>",
     "payload": {"id": ..., "licensee": ..., "edition": ..., "type": ..., "admins": N,
                 "resources": N | null, "issued": "YYYY-MM-DD",
                 "expires": "YYYY-MM-DD" | null, "support_until": "YYYY-MM-DD" | null},
     "signature": "<base64 Ed25519 signature>"}

The signature covers ``SIGNING_CONTEXT`` followed by the canonical JSON of the payload
(sorted keys, no spaces, ASCII), so the payload stays readable for the people who receive
it while any change to its content breaks the signature. It is checked against the vendor
public keys in :data:`VENDOR_PUBLIC_KEYS`, which are part of the code: no setting or
environment variable can add a key. The vendor rotates keys by adding the new key to the
tuple in a release, signing new licences with it, and dropping the old key once no licence
signed by it is in use.

Everything here is pure: times are passed in (naive UTC), nothing reads a clock or a
database. :mod:`node.licence_service` applies it to a vault.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from node.errors import LicenceError, ValidationError
from node.inputs import unique_keys

# The trust root: raw Ed25519 public keys of the vendor, hex. A tuple, so a release can
# carry the old and the new key while licences move to the new one. Never read from a
# setting, a file or the environment.
VENDOR_PUBLIC_KEYS: tuple[str, ...] = (
    "f364dc962c0626fc8ae9f5942d16cc6179acb9a8f19c12b86eb689e161542caa",  # vendor key 2026-11
)

FORMAT = "strongroom-licence/1"
SIGNING_CONTEXT = b"strongroom-licence/1\n"
MAX_FILE_BYTES = 64 * 1024
MAX_TEXT = 200

EVALUATION_DAYS = 30
EVALUATION_ADMINS = 5
WARNING_DAYS = (30, 7, 1)  # warn this many days before an end; the level rises at each
CLOCK_ROLLBACK_TOLERANCE = dt.timedelta(days=1)


class InvalidLicenceError(ValidationError):
    """A licence file that cannot be installed: malformed, altered, unsigned by the vendor,
    or already expired. The message says which."""


# --- editions and the feature gates (the one place that says what each edition allows) ----


class Edition(StrEnum):
    FREE = "free"
    STANDARD = "standard"
    PREMIUM = "premium"
    ENTERPRISE = "enterprise"

    @property
    def label(self) -> str:
        return self.value.title()

    @property
    def rank(self) -> int:
        return list(Edition).index(self)


class Feature(StrEnum):
    HIGH_AVAILABILITY = "high availability (a second node)"
    REMOTE_PASSWORD_RESET = "remote password reset"
    REST_API = "the REST API"
    QUERY_REPORTS = "query reports"


@dataclass(frozen=True)
class EditionTerms:
    """Limits of an edition. ``admins`` None means "as many as the licence names";
    ``resources`` None means unlimited (a licence may still name a limit)."""

    admins: int | None
    resources: int | None


EDITIONS: dict[Edition, EditionTerms] = {
    Edition.FREE: EditionTerms(admins=2, resources=10),
    Edition.STANDARD: EditionTerms(admins=None, resources=None),
    Edition.PREMIUM: EditionTerms(admins=None, resources=None),
    Edition.ENTERPRISE: EditionTerms(admins=None, resources=None),
}

# feature -> the lowest edition that includes it. A new gated feature is added to
# :class:`Feature` and here (Enterprise unless the editions above name it); services check
# it with ``LicenceService.require(Feature.X)``.
GATES: dict[Feature, Edition] = {
    Feature.HIGH_AVAILABILITY: Edition.PREMIUM,
    Feature.REMOTE_PASSWORD_RESET: Edition.PREMIUM,
    Feature.REST_API: Edition.ENTERPRISE,
    Feature.QUERY_REPORTS: Edition.ENTERPRISE,
}


def edition_includes(edition: Edition, feature: Feature) -> bool:
    return edition.rank >= GATES[feature].rank


def parse_edition(text: str) -> Edition:
    try:
        return Edition(text.strip().lower())
    except ValueError:
        names = ", ".join(e.value for e in Edition)
        raise ValidationError(f"unknown edition '{text}' (one of: {names})") from None


# --- the licence file ----------------------------------------------------------------------


class LicenceType(StrEnum):
    EVALUATION = "evaluation"
    SUBSCRIPTION = "subscription"
    PERPETUAL = "perpetual"


def parse_licence_type(text: str) -> LicenceType:
    try:
        return LicenceType(text.strip().lower())
    except ValueError:
        names = ", ".join(t.value for t in LicenceType)
        raise ValidationError(f"unknown licence type '{text}' (one of: {names})") from None


@dataclass(frozen=True)
class Licence:
    """The signed content of a licence file."""

    id: str
    licensee: str
    edition: Edition
    type: LicenceType
    admins: int
    resources: int | None
    issued: dt.date
    expires: dt.date | None = None
    support_until: dt.date | None = None

    def __post_init__(self) -> None:
        for name, value in (("id", self.id), ("licensee", self.licensee)):
            if not value.strip() or len(value) > MAX_TEXT or not value.isprintable():
                raise ValidationError(
                    f"licence {name} must be 1 to {MAX_TEXT} printable characters"
                )
        if not 1 <= self.admins <= 1_000_000:
            raise ValidationError("licence admins must be between 1 and 1000000")
        if self.resources is not None and not 1 <= self.resources <= 100_000_000:
            raise ValidationError("licence resources must be between 1 and 100000000")
        if self.type is LicenceType.PERPETUAL:
            if self.expires is not None:
                raise ValidationError("a perpetual licence has no expiry (use support-until)")
        else:
            if self.expires is None:
                raise ValidationError(f"a {self.type.value} licence needs an expiry date")
            if self.support_until is not None:
                raise ValidationError("support-until is only for perpetual licences")
        if self.expires is not None and self.expires < self.issued:
            raise ValidationError("licence expiry date is before its issue date")

    @property
    def expires_at(self) -> dt.datetime | None:
        """The first moment (naive UTC) the licence no longer holds: it is valid through
        its whole expiry day."""
        if self.expires is None:
            return None
        return dt.datetime.combine(self.expires + dt.timedelta(days=1), dt.time())

    @property
    def terms(self) -> EditionTerms:
        base = EDITIONS[self.edition]
        admins = base.admins if base.admins is not None else self.admins
        resources = base.resources
        if resources is None:
            resources = self.resources
        elif self.resources is not None:
            resources = min(resources, self.resources)
        return EditionTerms(admins=admins, resources=resources)

    def describe(self) -> str:
        """How messages name this licence."""
        return f"{self.edition.label} {self.type.value} licence {self.id} for {self.licensee}"

    def payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "licensee": self.licensee,
            "edition": self.edition.value,
            "type": self.type.value,
            "admins": self.admins,
            "resources": self.resources,
            "issued": self.issued.isoformat(),
            "expires": self.expires.isoformat() if self.expires else None,
            "support_until": self.support_until.isoformat() if self.support_until else None,
        }


_PAYLOAD_KEYS = frozenset(
    {"id", "licensee", "edition", "type", "admins", "resources", "issued", "expires",
     "support_until"}
)  # fmt: skip
_DOC_KEYS = frozenset({"format", "key", "payload", "signature"})
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def canonical_payload(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    return hashlib.sha256(public_raw(public_key)).hexdigest()[:16]


def public_raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign_licence(licence: Licence, private_key: Ed25519PrivateKey) -> str:
    """The text of a licence file for ``licence``, signed with ``private_key``."""
    payload = licence.payload()
    signature = private_key.sign(SIGNING_CONTEXT + canonical_payload(payload))
    doc = {
        "format": FORMAT,
        "key": key_id(private_key.public_key()),
        "payload": payload,
        "signature": base64.b64encode(signature).decode(),
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def _twice(key: str) -> InvalidLicenceError:
    return InvalidLicenceError(f"the licence file is not valid: key '{key}' appears twice")


def _reject_constant(name: str) -> Any:
    raise InvalidLicenceError(f"the licence file is not valid: {name} is not allowed")


def _reject_float(text: str) -> Any:
    raise InvalidLicenceError("the licence file is not valid: numbers must be whole")


def _trusted_keys(trusted: Sequence[str] | None) -> list[Ed25519PublicKey]:
    keys = []
    for text in VENDOR_PUBLIC_KEYS if trusted is None else trusted:
        keys.append(Ed25519PublicKey.from_public_bytes(bytes.fromhex(text)))
    return keys


def parse_licence_file(data: str | bytes, trusted: Sequence[str] | None = None) -> Licence:
    """Check a licence file and return its licence. ``trusted`` defaults to the built-in
    vendor keys, read at call time. Raises :class:`InvalidLicenceError` naming the problem.
    The signature is checked before the payload's content is trusted."""
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_FILE_BYTES:
        raise InvalidLicenceError("the licence file is too large (at most 64 KiB)")
    try:
        doc = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=functools.partial(unique_keys, refuse=_twice),
            parse_constant=_reject_constant,
            parse_float=_reject_float,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, InvalidLicenceError):
            raise
        raise InvalidLicenceError("the file is not a Strongroom licence (not JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InvalidLicenceError(f"the file is not a Strongroom licence (format {FORMAT})")
    if set(doc) - _DOC_KEYS or not {"payload", "signature"} <= set(doc):
        raise InvalidLicenceError("the licence file is not valid: unexpected or missing fields")
    payload, sig_text = doc["payload"], doc["signature"]
    if not isinstance(payload, dict) or not isinstance(sig_text, str):
        raise InvalidLicenceError("the licence file is not valid: payload or signature malformed")
    try:
        signature = base64.b64decode(sig_text, validate=True)
    except (binascii.Error, ValueError):
        signature = b""
    message = SIGNING_CONTEXT + canonical_payload(payload)
    verified = False
    for key in _trusted_keys(trusted):
        try:
            key.verify(signature, message)
        except InvalidSignature:
            continue
        verified = True
        break
    if not verified:
        raise InvalidLicenceError(
            "the licence signature does not match any Strongroom vendor key: the file was "
            "altered, or it was not issued by the vendor"
        )
    return licence_from_payload(payload)


def _date(payload: dict[str, Any], name: str, required: bool) -> dt.date | None:
    value = payload.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise InvalidLicenceError(f"the licence's {name} must be a date (YYYY-MM-DD)")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidLicenceError(f"the licence's {name} is not a real date") from None


def licence_from_payload(payload: dict[str, Any]) -> Licence:
    if set(payload) != _PAYLOAD_KEYS:
        raise InvalidLicenceError("the licence payload has unexpected or missing fields")
    for name in ("id", "licensee", "edition", "type"):
        if not isinstance(payload[name], str):
            raise InvalidLicenceError(f"the licence's {name} must be text")
    for name in ("admins", "resources"):
        value = payload[name]
        if name == "resources" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidLicenceError(f"the licence's {name} must be a whole number")
    issued = _date(payload, "issued", True)
    assert issued is not None
    try:
        return Licence(
            id=payload["id"],
            licensee=payload["licensee"],
            edition=parse_edition(payload["edition"]),
            type=parse_licence_type(payload["type"]),
            admins=payload["admins"],
            resources=payload["resources"],
            issued=issued,
            expires=_date(payload, "expires", False),
            support_until=_date(payload, "support_until", False),
        )
    except InvalidLicenceError:
        raise
    except ValidationError as exc:
        raise InvalidLicenceError(f"the licence is not valid: {exc}") from None


# --- what the vault may do now -------------------------------------------------------------


@dataclass(frozen=True)
class LicenceWarning:
    level: str  # notice | warn | urgent
    text: str


@dataclass(frozen=True)
class Entitlement:
    """The edition and limits in force at ``now`` (the effective time: never earlier than
    the latest time the vault has seen), and the warnings to show."""

    edition: Edition
    admins: int
    resources: int | None
    state: str  # evaluation | licensed | evaluation ended | licence expired
    licence: Licence | None
    ends_at: dt.datetime | None  # when the current terms end (evaluation or expiry)
    now: dt.datetime
    reason: str  # names the licence, for the messages of refusals
    warnings: tuple[LicenceWarning, ...]
    clock_rollback: bool
    ended_on: dt.date | None = None  # the last day of terms that have ended (Free now)

    def includes(self, feature: Feature) -> bool:
        return edition_includes(self.edition, feature)

    @property
    def ends_on(self) -> dt.date | None:
        """The last day the current terms hold."""
        return None if self.ends_at is None else last_day(self.ends_at)

    @property
    def days_left(self) -> int | None:
        if self.ends_at is None:
            return None
        return max(0, days_until(self.ends_at, self.now))


def last_day(ends_at: dt.datetime) -> dt.date:
    """The last day on which terms ending at ``ends_at`` still hold."""
    if ends_at.time() == dt.time():
        return (ends_at - dt.timedelta(days=1)).date()
    return ends_at.date()


def days_until(ends_at: dt.datetime, now: dt.datetime) -> int:
    """Calendar days from ``now`` to the last day of terms ending at ``ends_at``: 0 on the
    last day itself, negative once the terms have ended."""
    return (last_day(ends_at) - now.date()).days


def _level(days_left: int) -> str | None:
    low, mid, high = sorted(WARNING_DAYS)
    if days_left <= low:
        return "urgent"
    if days_left <= mid:
        return "warn"
    if days_left <= high:
        return "notice"
    return None


def _in_days(days: int) -> str:
    if days <= 0:
        return "today"
    return "in 1 day" if days == 1 else f"in {days} days"


def _free_limits() -> str:
    free = EDITIONS[Edition.FREE]
    return f"{free.admins} administrators, {free.resources} resources"


def compute_entitlement(
    licence: Licence | None,
    installed_at: dt.datetime,
    now: dt.datetime,
    latest_seen: dt.datetime | None = None,
    problem: str | None = None,
) -> Entitlement:
    """What the vault may do at ``now``. ``installed_at`` starts the evaluation;
    ``latest_seen`` is the latest time the vault has seen: if the clock went back, terms are
    counted from it (so turning the clock back extends nothing) and a warning says so.
    ``problem`` is why a stored licence could not be used (then ``licence`` is None)."""
    warnings: list[LicenceWarning] = []
    rollback = latest_seen is not None and latest_seen - now > CLOCK_ROLLBACK_TOLERANCE
    effective = max(now, latest_seen) if latest_seen is not None else now
    if rollback:
        assert latest_seen is not None
        behind = (latest_seen - now) / dt.timedelta(days=1)
        warnings.append(
            LicenceWarning(
                "urgent",
                f"The system clock is {behind:.0f} days behind the latest time this vault has "
                f"seen ({latest_seen:%Y-%m-%d %H:%M} UTC). Licence terms are counted from that "
                "time; correct the clock.",
            )
        )
    if problem:
        warnings.append(
            LicenceWarning(
                "urgent",
                f"The installed licence cannot be used ({problem}); the vault runs as if no "
                "licence were installed.",
            )
        )
    free = EDITIONS[Edition.FREE]
    assert free.admins is not None
    if licence is None:
        ends = installed_at + dt.timedelta(days=EVALUATION_DAYS)
        ended_on = last_day(ends)
        if effective < ends:
            days = days_until(ends, effective)
            level = _level(days)
            if level:
                warnings.append(
                    LicenceWarning(
                        level,
                        f"The {EVALUATION_DAYS}-day evaluation ends {_in_days(days)} "
                        f"({ends:%Y-%m-%d %H:%M} UTC); then the vault falls to the Free edition "
                        f"({_free_limits()}). Passwords stay readable. Install a licence on "
                        "Admin > License.",
                    )
                )
            return Entitlement(
                edition=Edition.ENTERPRISE,
                admins=EVALUATION_ADMINS,
                resources=None,
                state="evaluation",
                licence=None,
                ends_at=ends,
                now=effective,
                reason=f"the {EVALUATION_DAYS}-day evaluation (Enterprise edition, "
                f"{EVALUATION_ADMINS} administrators, ends {ends:%Y-%m-%d})",
                warnings=tuple(warnings),
                clock_rollback=rollback,
            )
        warnings.append(
            LicenceWarning(
                "warn",
                f"The {EVALUATION_DAYS}-day evaluation ended on {ended_on:%Y-%m-%d}; the vault "
                f"runs the Free edition ({_free_limits()}). Passwords stay readable. Install a "
                "licence on Admin > License.",
            )
        )
        return Entitlement(
            edition=Edition.FREE,
            admins=free.admins,
            resources=free.resources,
            state="evaluation ended",
            licence=None,
            ends_at=None,
            now=effective,
            reason=f"the Free edition (the {EVALUATION_DAYS}-day evaluation ended on "
            f"{ended_on:%Y-%m-%d})",
            warnings=tuple(warnings),
            clock_rollback=rollback,
            ended_on=ended_on,
        )
    ends_at = licence.expires_at
    if ends_at is not None and effective >= ends_at:
        warnings.append(
            LicenceWarning(
                "urgent",
                f"The {licence.describe()} expired on {licence.expires:%Y-%m-%d}; the vault runs "
                f"with the Free edition's limits ({_free_limits()}). Passwords stay readable. "
                "Install a new licence on Admin > License.",
            )
        )
        return Entitlement(
            edition=Edition.FREE,
            admins=free.admins,
            resources=free.resources,
            state="licence expired",
            licence=licence,
            ends_at=None,
            now=effective,
            reason=f"the Free edition's limits (the {licence.describe()} expired on "
            f"{licence.expires:%Y-%m-%d})",
            warnings=tuple(warnings),
            clock_rollback=rollback,
            ended_on=licence.expires,
        )
    if ends_at is not None:
        days = days_until(ends_at, effective)
        level = _level(days)
        if level:
            warnings.append(
                LicenceWarning(
                    level,
                    f"The {licence.describe()} expires "
                    f"{_in_days(days)} (last day "
                    f"{licence.expires:%Y-%m-%d}); then the vault runs with the Free edition's "
                    f"limits ({_free_limits()}). Passwords stay readable.",
                )
            )
    if licence.support_until is not None:
        support_end = dt.datetime.combine(licence.support_until + dt.timedelta(days=1), dt.time())
        days = days_until(support_end, effective)
        if days < 0:
            warnings.append(
                LicenceWarning(
                    "notice",
                    f"Support for the {licence.describe()} ended on "
                    f"{licence.support_until:%Y-%m-%d}; the licence itself does not expire.",
                )
            )
        elif _level(days):
            warnings.append(
                LicenceWarning(
                    "notice",
                    f"Support for the {licence.describe()} ends {_in_days(days)} "
                    f"({licence.support_until:%Y-%m-%d}); the licence itself does not expire.",
                )
            )
    terms = licence.terms
    assert terms.admins is not None
    return Entitlement(
        edition=licence.edition,
        admins=terms.admins,
        resources=terms.resources,
        state="licensed",
        licence=licence,
        ends_at=ends_at,
        now=effective,
        reason=f"the {licence.describe()}",
        warnings=tuple(warnings),
        clock_rollback=rollback,
    )


# --- refusals (each names the licence as the reason) ---------------------------------------


def _nth(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _allows(limit: int, noun: str, in_use: int) -> str:
    return (
        f"allows {limit} {noun}{'' if limit == 1 else 's'} and {in_use} "
        f"{'is' if in_use == 1 else 'are'} in use"
    )


def admin_refusal(ent: Entitlement, in_use: int) -> LicenceError:
    return LicenceError(
        f"The licence does not allow a {_nth(in_use + 1)} administrator: {ent.reason} "
        f"{_allows(ent.admins, 'administrator', in_use)}. Install a licence for more "
        "administrators (Admin > License)."
    )


def resource_refusal(ent: Entitlement, in_use: int, adding: int = 1) -> LicenceError:
    what = f"a {_nth(in_use + 1)} resource" if adding == 1 else f"{adding} more resources"
    return LicenceError(
        f"The licence does not allow {what}: {ent.reason} "
        f"{_allows(ent.resources or 0, 'resource', in_use)}. Install a licence for more "
        "resources (Admin > License)."
    )


def feature_refusal(ent: Entitlement, feature: Feature) -> LicenceError:
    need = GATES[feature]
    return LicenceError(
        f"The licence does not include {feature.value}: it needs the {need.label} edition or "
        f"higher, and this vault runs {ent.reason}. Install a licence on Admin > License."
    )


__all__ = [
    "EDITIONS",
    "GATES",
    "VENDOR_PUBLIC_KEYS",
    "Edition",
    "Entitlement",
    "Feature",
    "InvalidLicenceError",
    "Licence",
    "LicenceType",
    "compute_entitlement",
    "parse_licence_file",
    "sign_licence",
]
