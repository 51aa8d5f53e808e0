"""Licence files and the rules of editions, evaluation, expiry and clock rollback (pure)."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest

from node import licence
from node.errors import LicenceError, ValidationError
from node.licence import (
    EDITIONS,
    GATES,
    SIGNING_CONTEXT,
    Edition,
    Feature,
    InvalidLicenceError,
    LicenceType,
    admin_refusal,
    canonical_payload,
    compute_entitlement,
    feature_refusal,
    parse_licence_file,
    resource_refusal,
)
from tests.licence_support import Vendor, trust

INSTALLED = dt.datetime(2026, 11, 1, 9, 0)


@pytest.fixture
def vendor(monkeypatch: pytest.MonkeyPatch) -> Vendor:
    v = Vendor()
    trust(monkeypatch, v)
    return v


def test_a_signed_licence_reads_back(vendor: Vendor) -> None:
    text = vendor.issue(admins=7, resources=500)
    lic = parse_licence_file(text)
    assert lic == vendor.licence(admins=7, resources=500)
    assert lic.terms.admins == 7 and lic.terms.resources == 500


def test_every_single_byte_change_is_rejected_or_changes_nothing(vendor: Vendor) -> None:
    original = vendor.licence()
    data = vendor.issue().encode()
    rejected = 0
    for i in range(len(data)):
        tampered = bytearray(data)
        tampered[i] ^= 0x01
        try:
            got = parse_licence_file(bytes(tampered))
        except InvalidLicenceError:
            rejected += 1
            continue
        assert got == original, f"byte {i} changed the licence without breaking the signature"
    assert rejected > len(data) // 2


def test_tampered_payload_value_and_signature_are_rejected(vendor: Vendor) -> None:
    text = vendor.issue(admins=3)
    more_admins = text.replace('"admins": 3', '"admins": 9')
    assert more_admins != text
    with pytest.raises(InvalidLicenceError, match="signature does not match"):
        parse_licence_file(more_admins)
    doc = json.loads(text)
    sig = bytearray(base64.b64decode(doc["signature"]))
    sig[10] ^= 0x80
    doc["signature"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(InvalidLicenceError, match="signature does not match"):
        parse_licence_file(json.dumps(doc))


def test_a_licence_signed_by_an_unknown_key_is_rejected(vendor: Vendor) -> None:
    stranger = Vendor()
    with pytest.raises(InvalidLicenceError, match="not issued by the vendor"):
        parse_licence_file(stranger.issue())


def test_only_built_in_keys_are_trusted_by_default() -> None:
    # No fixture here: the built-in vendor keys are the only trust root.
    assert isinstance(licence.VENDOR_PUBLIC_KEYS, tuple) and licence.VENDOR_PUBLIC_KEYS
    for key in licence.VENDOR_PUBLIC_KEYS:
        assert len(bytes.fromhex(key)) == 32
    with pytest.raises(InvalidLicenceError):
        parse_licence_file(Vendor().issue())


def test_rotated_keys_both_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = Vendor(), Vendor()
    monkeypatch.setattr(licence, "VENDOR_PUBLIC_KEYS", (old.public_hex, new.public_hex))
    assert parse_licence_file(old.issue(licence_id="A")).id == "A"
    assert parse_licence_file(new.issue(licence_id="B")).id == "B"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ('{"format": "something else"}', "not a Strongroom licence"),
        ('{"format": "strongroom-licence/1", "payload": {}}', "missing fields"),
        ("\xff\xfe", "not JSON"),
    ],
)
def test_malformed_files_get_a_clear_error(vendor: Vendor, text: str, message: str) -> None:
    with pytest.raises(InvalidLicenceError, match=message):
        parse_licence_file(text)


def test_signed_but_ill_formed_payloads_are_rejected(vendor: Vendor) -> None:
    payload = vendor.licence().payload()
    payload["admins"] = "lots"
    doc = {
        "format": licence.FORMAT,
        "payload": payload,
        "signature": base64.b64encode(
            vendor.key.sign(SIGNING_CONTEXT + canonical_payload(payload))
        ).decode(),
    }
    with pytest.raises(InvalidLicenceError, match="admins must be a whole number"):
        parse_licence_file(json.dumps(doc))
    duplicated = json.dumps(doc).replace('"format":', '"format": "x", "format":', 1)
    with pytest.raises(InvalidLicenceError, match="appears twice"):
        parse_licence_file(duplicated)


def test_licence_terms_are_checked_at_issue(vendor: Vendor) -> None:
    with pytest.raises(ValidationError, match="needs an expiry date"):
        vendor.licence(kind=LicenceType.SUBSCRIPTION, expires=None)
    with pytest.raises(ValidationError, match="admins"):
        vendor.licence(admins=0)


# --- editions and gates --------------------------------------------------------------------


def test_editions_and_gates() -> None:
    assert EDITIONS[Edition.FREE].admins == 2 and EDITIONS[Edition.FREE].resources == 10
    assert EDITIONS[Edition.STANDARD].resources is None
    expected = {
        Edition.FREE: set(),
        Edition.STANDARD: set(),
        Edition.PREMIUM: {Feature.HIGH_AVAILABILITY, Feature.REMOTE_PASSWORD_RESET},
        Edition.ENTERPRISE: set(Feature),
    }
    for edition, features in expected.items():
        have = {f for f in Feature if licence.edition_includes(edition, f)}
        assert have == features, edition
    assert set(GATES) == set(Feature)


def test_free_licence_keeps_free_limits(vendor: Vendor) -> None:
    lic = vendor.licence(edition=Edition.FREE, admins=50, resources=500)
    ent = compute_entitlement(lic, INSTALLED, INSTALLED)
    assert (ent.admins, ent.resources) == (2, 10)


# --- evaluation, expiry, warnings, clock -----------------------------------------------------


def test_evaluation_is_enterprise_for_30_days_then_free() -> None:
    day29 = compute_entitlement(None, INSTALLED, INSTALLED + dt.timedelta(days=29, hours=23))
    assert (day29.edition, day29.admins, day29.resources) == (Edition.ENTERPRISE, 5, None)
    assert day29.includes(Feature.REST_API)
    day30 = compute_entitlement(None, INSTALLED, INSTALLED + dt.timedelta(days=30))
    assert (day30.edition, day30.admins, day30.resources) == (Edition.FREE, 2, 10)
    assert day30.state == "evaluation ended"
    assert not day30.includes(Feature.REST_API)
    message = str(feature_refusal(day30, Feature.REST_API))
    assert "licence" in message and "evaluation ended on 2026-12-01" in message


def test_warnings_30_7_and_1_days_before_the_end() -> None:
    def level(days_before: float) -> list[str]:
        now = INSTALLED + dt.timedelta(days=30) - dt.timedelta(days=days_before)
        return [w.level for w in compute_entitlement(None, INSTALLED, now).warnings]

    assert level(30.5) == []
    assert level(30) == ["notice"]
    assert level(8) == ["notice"]
    assert level(7) == ["warn"]
    assert level(1.5) == ["warn"]
    assert level(1) == ["urgent"]
    ent = compute_entitlement(None, INSTALLED, INSTALLED + dt.timedelta(days=23))
    assert "ends in 7 days" in ent.warnings[0].text


def test_expired_licence_falls_to_free_limits_and_says_why(vendor: Vendor) -> None:
    lic = vendor.licence(edition=Edition.PREMIUM, admins=20, expires=dt.date(2026, 12, 31))
    last_day = compute_entitlement(lic, INSTALLED, dt.datetime(2026, 12, 31, 23, 59))
    assert last_day.edition is Edition.PREMIUM and last_day.admins == 20
    assert last_day.warnings[0].level == "urgent" and "expires today" in last_day.warnings[0].text
    after = compute_entitlement(lic, INSTALLED, dt.datetime(2027, 1, 1, 0, 0))
    assert after.state == "licence expired"
    assert (after.edition, after.admins, after.resources) == (Edition.FREE, 2, 10)
    for error in (
        admin_refusal(after, 5),
        resource_refusal(after, 10),
        feature_refusal(after, Feature.HIGH_AVAILABILITY),
    ):
        assert isinstance(error, LicenceError)
        assert "licence" in str(error) and "expired on 2026-12-31" in str(error)
    assert "6th administrator" in str(admin_refusal(after, 5))
    assert "allows 2 administrators and 5 are in use" in str(admin_refusal(after, 5))
    one = compute_entitlement(vendor.licence(admins=1, resources=1), INSTALLED, INSTALLED)
    assert "allows 1 administrator and 1 is in use" in str(admin_refusal(one, 1))
    assert "allows 1 resource and 1 is in use" in str(resource_refusal(one, 1))
    assert "11th resource" in str(resource_refusal(after, 10))


def test_perpetual_licence_never_expires_and_warns_about_support(vendor: Vendor) -> None:
    lic = vendor.licence(kind=LicenceType.PERPETUAL, support_until=dt.date(2027, 1, 31))
    ent = compute_entitlement(lic, INSTALLED, dt.datetime(2035, 1, 1))
    assert ent.edition is Edition.STANDARD and ent.ends_at is None
    assert "Support" in ent.warnings[0].text and "does not expire" in ent.warnings[0].text


def test_a_clock_turned_back_extends_nothing() -> None:
    seen = INSTALLED + dt.timedelta(days=40)
    back = INSTALLED + dt.timedelta(days=5)
    ent = compute_entitlement(None, INSTALLED, back, latest_seen=seen)
    assert ent.clock_rollback and ent.edition is Edition.FREE and ent.now == seen
    assert "clock is 35 days behind" in ent.warnings[0].text
    # Less than a day back is ordinary drift: no warning, but still no extension.
    drift = compute_entitlement(None, INSTALLED, seen - dt.timedelta(hours=20), latest_seen=seen)
    assert not drift.clock_rollback and drift.now == seen


def test_a_licence_term_is_not_extended_by_a_clock_turned_back(vendor: Vendor) -> None:
    lic = vendor.licence(expires=dt.date(2026, 11, 20))
    seen = dt.datetime(2026, 11, 25)
    ent = compute_entitlement(lic, INSTALLED, dt.datetime(2026, 11, 10), latest_seen=seen)
    assert ent.state == "licence expired" and ent.clock_rollback
