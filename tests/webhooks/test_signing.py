from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks.webhooks import Webhook as StandardWebhook
from svix.webhooks import Webhook as SvixWebhook

from subscriptions.keys import generate_ed25519_keypair, generate_webhook_secret, public_key_bytes
from webhooks.signing import Signer, build_headers, sign, signer_for

MSG_ID = "evt_01HZX3C9Q7W8E6R5T4Y3U2I1O0"
BODY = json.dumps({"id": MSG_ID, "type": "calendar.sync.completed", "data": {"job_id": "cal_sync_1"}}).encode()


def now() -> int:
    return int(datetime.now(tz=UTC).timestamp())


def headers_for(signature: str, timestamp: int) -> dict[str, str]:
    return {"webhook-id": MSG_ID, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def test_known_vector_from_the_standard_webhooks_spec() -> None:
    # Test vector published with the standardwebhooks libraries.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    signature = sign(
        msg_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
        timestamp=1614265330,
        body=b'{"test": 2432232314}',
        secrets=[secret],
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_is_hmac_sha256_of_id_timestamp_body() -> None:
    secret = generate_webhook_secret()
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = hmac.new(key, f"{MSG_ID}.1700000000.".encode() + BODY, hashlib.sha256).digest()
    assert sign(msg_id=MSG_ID, timestamp=1700000000, body=BODY, secrets=[secret]) == (
        "v1," + base64.b64encode(expected).decode()
    )


def test_standardwebhooks_package_verifies_our_signature() -> None:
    secret = generate_webhook_secret()
    ts = now()
    signature = sign(msg_id=MSG_ID, timestamp=ts, body=BODY, secrets=[secret])
    assert StandardWebhook(secret).verify(BODY, headers_for(signature, ts)) == json.loads(BODY)


def test_svix_package_verifies_our_signature_under_svix_headers() -> None:
    secret = generate_webhook_secret()
    ts = now()
    signature = sign(msg_id=MSG_ID, timestamp=ts, body=BODY, secrets=[secret])
    headers = {"svix-id": MSG_ID, "svix-timestamp": str(ts), "svix-signature": signature}
    SvixWebhook(secret).verify(BODY, headers)  # raises on failure


def test_svix_package_verifies_our_headers_from_build_headers() -> None:
    secret = generate_webhook_secret()
    headers = build_headers(MSG_ID, now(), BODY, Signer([secret]), "synchook/0.1.0")
    SvixWebhook(secret).verify(BODY, headers)


def test_rotation_signs_with_each_secret_and_each_verifies_alone() -> None:
    old, new = generate_webhook_secret(), generate_webhook_secret()
    ts = now()
    signature = sign(msg_id=MSG_ID, timestamp=ts, body=BODY, secrets=[new, old])
    entries = signature.split(" ")
    assert len(entries) == 2 and all(e.startswith("v1,") for e in entries)
    for secret in (old, new):
        StandardWebhook(secret).verify(BODY, headers_for(signature, ts))
        SvixWebhook(secret).verify(BODY, headers_for(signature, ts))


def test_ed25519_v1a_signature_verifies_with_cryptography() -> None:
    whsk, whpk = generate_ed25519_keypair()
    signature = sign(msg_id=MSG_ID, timestamp=1700000000, body=BODY, secrets=[], signing_keys=[whsk])
    version, encoded = signature.split(",")
    assert version == "v1a"
    raw = base64.b64decode(encoded)
    assert len(raw) == 64
    Ed25519PublicKey.from_public_bytes(public_key_bytes(whpk)).verify(raw, f"{MSG_ID}.1700000000.".encode() + BODY)


def test_hmac_and_ed25519_together_and_standardwebhooks_skips_v1a() -> None:
    secret = generate_webhook_secret()
    whsk, _ = generate_ed25519_keypair()
    ts = now()
    signature = sign(msg_id=MSG_ID, timestamp=ts, body=BODY, secrets=[secret], signing_keys=[whsk])
    assert [e.split(",")[0] for e in signature.split(" ")] == ["v1", "v1a"]
    StandardWebhook(secret).verify(BODY, headers_for(signature, ts))


def test_build_headers_has_exactly_the_standard_headers() -> None:
    secret = generate_webhook_secret()
    headers = build_headers(MSG_ID, 1700000000, BODY, Signer([secret]), "synchook/0.1.0")
    assert headers == {
        "webhook-id": MSG_ID,
        "webhook-timestamp": "1700000000",
        "webhook-signature": sign(msg_id=MSG_ID, timestamp=1700000000, body=BODY, secrets=[secret]),
        "content-type": "application/json",
        "user-agent": "synchook/0.1.0",
    }


def test_signer_is_deterministic_and_reusable() -> None:
    signer = Signer([generate_webhook_secret()])
    assert signer.sign(MSG_ID, 1, BODY) == signer.sign(MSG_ID, 1, BODY)
    assert signer.sign(MSG_ID, 1, BODY) != signer.sign(MSG_ID, 2, BODY)


def test_signer_for_is_cached() -> None:
    secret = generate_webhook_secret()
    assert signer_for((secret,)) is signer_for((secret,))


def test_repr_never_shows_key_material() -> None:
    secret = generate_webhook_secret()
    whsk, _ = generate_ed25519_keypair()
    text = repr(Signer([secret], [whsk]))
    assert secret.removeprefix("whsec_") not in text and whsk.removeprefix("whsk_") not in text
    assert text == "Signer(hmac_secrets=1, ed25519_keys=1)"


def test_signer_needs_a_key() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Signer([])


def test_a_bare_string_is_not_a_list_of_secrets() -> None:
    with pytest.raises(TypeError):
        sign(msg_id=MSG_ID, timestamp=1, body=BODY, secrets=generate_webhook_secret())


@pytest.mark.parametrize("msg_id", ["", "evt.1", "evt 1", "evt\r\n1", "a,b"])
def test_msg_id_that_could_forge_signed_content_is_refused(msg_id: str) -> None:
    with pytest.raises(ValueError, match="msg_id"):
        Signer([generate_webhook_secret()]).sign(msg_id, 1, BODY)


@pytest.mark.parametrize("timestamp", [-1, 1.5, True])
def test_timestamp_must_be_unix_seconds(timestamp: object) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        Signer([generate_webhook_secret()]).sign(MSG_ID, timestamp, BODY)  # type: ignore[arg-type]


def test_malformed_secret_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError) as excinfo:
        Signer(["whsec_c2hvcnQ="])
    assert "c2hvcnQ" not in str(excinfo.value)
