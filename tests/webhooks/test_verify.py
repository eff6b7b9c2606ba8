from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook
from svix.webhooks import Webhook as SvixWebhook

import webhooks
from subscriptions.keys import generate_ed25519_keypair, generate_webhook_secret
from webhooks import WebhookVerificationError, verify
from webhooks.signing import sign

SECRET = generate_webhook_secret()
MSG_ID = "evt_01HZX3C9Q7W8E6R5T4Y3U2I1O0"
NOW = 1_700_000_000
EVENT = {"id": MSG_ID, "type": "calendar.sync.completed", "data": {"job_id": "cal_sync_1", "error": None}}
BODY = json.dumps(EVENT).encode()


def valid_headers(secret: str = SECRET, *, timestamp: int = NOW, body: bytes = BODY) -> dict[str, str]:
    return {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(msg_id=MSG_ID, timestamp=timestamp, body=body, secrets=[secret]),
    }


def test_package_exports_verify() -> None:
    assert webhooks.__all__ == ["WebhookVerificationError", "verify"]


def test_valid_payload_verifies_and_parses() -> None:
    assert verify(BODY, valid_headers(), SECRET, now=NOW) == EVENT


def test_str_payload_is_accepted() -> None:
    assert verify(BODY.decode(), valid_headers(), SECRET, now=NOW) == EVENT


def test_header_names_are_case_insensitive() -> None:
    headers = {k.title(): v for k, v in valid_headers().items()}
    assert verify(BODY, headers, SECRET, now=NOW) == EVENT


def test_svix_header_aliases_are_accepted() -> None:
    headers = {k.replace("webhook-", "svix-"): v for k, v in valid_headers().items()}
    assert verify(BODY, headers, SECRET, now=NOW) == EVENT


def test_tampered_body_fails() -> None:
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(BODY.replace(b"cal_sync_1", b"cal_sync_2"), valid_headers(), SECRET, now=NOW)


def test_tampered_id_fails() -> None:
    headers = valid_headers() | {"webhook-id": "evt_other"}
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(BODY, headers, SECRET, now=NOW)


def test_tampered_timestamp_fails() -> None:
    headers = valid_headers() | {"webhook-timestamp": str(NOW + 1)}
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(BODY, headers, SECRET, now=NOW)


def test_tampered_signature_fails() -> None:
    headers = valid_headers()
    version, encoded = headers["webhook-signature"].split(",")
    flipped = ("A" if encoded[0] != "A" else "B") + encoded[1:]
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(BODY, headers | {"webhook-signature": f"{version},{flipped}"}, SECRET, now=NOW)


def test_wrong_secret_fails() -> None:
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(BODY, valid_headers(), generate_webhook_secret(), now=NOW)


def test_timestamp_too_old_fails() -> None:
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(BODY, valid_headers(timestamp=NOW - 301), SECRET, now=NOW)


def test_timestamp_too_new_fails() -> None:
    with pytest.raises(WebhookVerificationError, match="too new"):
        verify(BODY, valid_headers(timestamp=NOW + 301), SECRET, now=NOW)


def test_timestamp_within_tolerance_passes() -> None:
    assert verify(BODY, valid_headers(timestamp=NOW - 300), SECRET, now=NOW) == EVENT


def test_custom_tolerance() -> None:
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(BODY, valid_headers(timestamp=NOW - 61), SECRET, tolerance=60, now=NOW)


def test_default_now_is_the_clock() -> None:
    ts = int(datetime.now(tz=UTC).timestamp())
    assert verify(BODY, valid_headers(timestamp=ts), SECRET) == EVENT


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_fails(missing: str) -> None:
    headers = valid_headers()
    del headers[missing]
    with pytest.raises(WebhookVerificationError, match=f"missing required header {missing}"):
        verify(BODY, headers, SECRET, now=NOW)


@pytest.mark.parametrize("value", ["abc", "1700000000.5", "-1", "\uff11\uff17"])
def test_non_integer_timestamp_fails(value: str) -> None:
    with pytest.raises(WebhookVerificationError, match="invalid webhook-timestamp"):
        verify(BODY, valid_headers() | {"webhook-timestamp": value}, SECRET, now=NOW)


def test_garbage_signature_entries_are_skipped_not_crashing() -> None:
    good = valid_headers()["webhook-signature"]
    headers = valid_headers() | {"webhook-signature": f"nocomma v1,!!! v2,abc {good}"}
    assert verify(BODY, headers, SECRET, now=NOW) == EVENT


def test_too_many_signatures_fails() -> None:
    headers = valid_headers() | {"webhook-signature": " ".join(["v1,AAAA"] * 17)}
    with pytest.raises(WebhookVerificationError, match="too many"):
        verify(BODY, headers, SECRET, now=NOW)


def test_rotation_either_secret_verifies() -> None:
    other = generate_webhook_secret()
    headers = valid_headers() | {
        "webhook-signature": sign(msg_id=MSG_ID, timestamp=NOW, body=BODY, secrets=[SECRET, other])
    }
    assert verify(BODY, headers, SECRET, now=NOW) == EVENT
    assert verify(BODY, headers, other, now=NOW) == EVENT


def test_accepts_signatures_made_by_standardwebhooks() -> None:
    ts = datetime.now(tz=UTC)
    signature = StandardWebhook(SECRET).sign(MSG_ID, ts, BODY.decode())
    headers = {"webhook-id": MSG_ID, "webhook-timestamp": str(int(ts.timestamp())), "webhook-signature": signature}
    assert verify(BODY, headers, SECRET) == EVENT


def test_accepts_signatures_made_by_svix() -> None:
    ts = datetime.now(tz=UTC)
    signature = SvixWebhook(SECRET).sign(MSG_ID, ts, BODY.decode())
    headers = {"svix-id": MSG_ID, "svix-timestamp": str(int(ts.timestamp())), "svix-signature": signature}
    assert verify(BODY, headers, SECRET) == EVENT


def test_accepts_secret_without_prefix_like_standardwebhooks() -> None:
    assert verify(BODY, valid_headers(), SECRET.removeprefix("whsec_"), now=NOW) == EVENT


def test_ed25519_public_key_verifies_v1a() -> None:
    whsk, whpk = generate_ed25519_keypair()
    headers = valid_headers() | {
        "webhook-signature": sign(msg_id=MSG_ID, timestamp=NOW, body=BODY, secrets=[], signing_keys=[whsk])
    }
    assert verify(BODY, headers, whpk, now=NOW) == EVENT


def test_ed25519_wrong_public_key_fails() -> None:
    whsk, _ = generate_ed25519_keypair()
    _, other_whpk = generate_ed25519_keypair()
    headers = valid_headers() | {
        "webhook-signature": sign(msg_id=MSG_ID, timestamp=NOW, body=BODY, secrets=[], signing_keys=[whsk])
    }
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(BODY, headers, other_whpk, now=NOW)


def test_ed25519_tampered_body_fails() -> None:
    whsk, whpk = generate_ed25519_keypair()
    headers = valid_headers() | {
        "webhook-signature": sign(msg_id=MSG_ID, timestamp=NOW, body=BODY, secrets=[], signing_keys=[whsk])
    }
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(BODY + b" ", headers, whpk, now=NOW)


def test_hmac_signature_does_not_satisfy_a_public_key() -> None:
    _, whpk = generate_ed25519_keypair()
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(BODY, valid_headers(), whpk, now=NOW)


def test_private_signing_key_is_refused_without_echoing_it() -> None:
    whsk, _ = generate_ed25519_keypair()
    with pytest.raises(WebhookVerificationError) as excinfo:
        verify(BODY, valid_headers(), whsk, now=NOW)
    assert whsk.removeprefix("whsk_") not in str(excinfo.value)


def test_bad_secret_is_reported_without_echoing_it() -> None:
    secret = "whsec_%%%TOPSECRET%%%"
    with pytest.raises(WebhookVerificationError) as excinfo:
        verify(BODY, valid_headers(), secret, now=NOW)
    assert "TOPSECRET" not in str(excinfo.value)


def test_non_json_payload_fails_after_signature_check() -> None:
    body = b"not json"
    with pytest.raises(WebhookVerificationError, match="not valid JSON"):
        verify(body, valid_headers(body=body), SECRET, now=NOW)


def test_json_array_payload_fails() -> None:
    body = b"[1, 2]"
    with pytest.raises(WebhookVerificationError, match="not a JSON object"):
        verify(body, valid_headers(body=body), SECRET, now=NOW)
